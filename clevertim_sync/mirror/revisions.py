"""Where the database migrations are, and the newest one's revision: what `--version` names.

Kept apart from mirror/db.py so that knowing the schema this version expects imports neither
SQLAlchemy nor alembic (`clevertim-sync --version` stays as fast as `--help`).
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

from clevertim_sync.errors import MirrorError

# A source tree (editable install, a developer's `alembic upgrade head`) has the top-level
# migrations/ and alembic.ini; an installed wheel carries migrations/ as the package
# clevertim_sync._migrations (pyproject.toml's package-dir mapping) and no alembic.ini.
SOURCE_MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def migrations_dir() -> Path:
    """Where the alembic environment (env.py, versions/) is: the source tree's, else the wheel's."""
    if (SOURCE_MIGRATIONS / "env.py").is_file():
        return SOURCE_MIGRATIONS
    # A directory without __init__.py (a namespace package): ask for a file in it.
    env = resources.files("clevertim_sync._migrations").joinpath("env.py")
    return Path(str(env)).parent


MIGRATIONS_DIR = migrations_dir()


@functools.cache
def head_revision() -> str:
    """The newest migration's revision, read from the migration files themselves (the one no
    other names as its down_revision): knowing it needs no alembic (~0.15 s of every command's
    start-up). tests/mirror/test_schema.py checks it is alembic's head."""
    found: dict[str, str | None] = {}
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        rev = re.search(r"^revision\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
        down = re.search(r"^down_revision\s*=\s*(?:['\"]([^'\"]+)['\"]|None)", text, re.MULTILINE)
        if rev is not None and down is not None:
            found[rev.group(1)] = down.group(1)
    heads = set(found) - set(found.values())
    if len(heads) != 1:
        raise MirrorError(f"the migrations in {MIGRATIONS_DIR} have {len(heads)} heads, not one")
    return heads.pop()
