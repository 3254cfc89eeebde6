# The two commands of the README: `make demo` and `make test`.
# Each sets up its own virtual environment; `make test` also starts a throwaway PostgreSQL.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit bench clean

# The demo needs only the package; the tests also need the test tools (a minute more to install).
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/clevertim-sync demo

lint: $(BIN)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(BIN)/.installed-test
	$(BIN)/mypy

# The whole suite: lint, types, then every test against SQLite and a real PostgreSQL.
test: lint typecheck
	scripts/ensure-system-packages
	scripts/with-postgres $(BIN)/pytest -n 2 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
