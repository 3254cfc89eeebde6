"""Shared fixtures: real databases (a SQLite file, and a fresh database on the throwaway
PostgreSQL that scripts/with-postgres starts) and a real emulator over loopback (`emulator`)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from support import mirror_data
from support.webhook import Receiver

from clevertim_sync import resources, shapes
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.cli import cli
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.emulator.quirks import DATA_QUIRKS
from clevertim_sync.mirror.db import make_engine, upgrade
from clevertim_sync.pull.diff import UNORDERED_LISTS
from clevertim_sync.pull.pipeline import pull

PG_URL_ENV = "CLEVERTIM_SYNC_TEST_PG_URL"

# In CI the property tests replay the same examples each run; elsewhere they keep exploring.
hypothesis.settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")


def _pg_server_url() -> str | None:
    url = os.environ.get(PG_URL_ENV)
    if not url and os.environ.get("CLEVERTIM_SYNC_REQUIRE_POSTGRES"):
        pytest.fail(f"{PG_URL_ENV} is not set but PostgreSQL tests are required")
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mirror.sqlite3'}"


@contextlib.contextmanager
def _pg_database(server: str, *, template: str | None = None, prefix: str = "t") -> Iterator[str]:
    """A new database on the throwaway server (empty, or a copy of `template`), dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    source = f' TEMPLATE "{template}"' if template else ""
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"{source}'))
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _required_pg_server() -> str:
    server = _pg_server_url()
    if not server:
        pytest.skip(f"no PostgreSQL: run through `make test` (or set {PG_URL_ENV})")
    return server


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A brand-new empty database on the throwaway server, dropped after the test."""
    with _pg_database(_required_pg_server()) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_kind(request: pytest.FixtureRequest) -> str:
    """The one parameter behind every database fixture, so a test that uses several of them runs
    once on SQLite and once on PostgreSQL (not on every mix of the two)."""
    return str(request.param)


@pytest.fixture
def database_url(db_kind: str, request: pytest.FixtureRequest) -> str:
    """An empty database: a SQLite file, or a fresh PostgreSQL database."""
    return str(request.getfixturevalue("sqlite_url" if db_kind == "sqlite" else "postgres_url"))


class _MigratedTemplates:
    """Databases migrated to head once per session, copied per test: a copy of a SQLite file or
    `CREATE DATABASE ... TEMPLATE` on PostgreSQL costs a fraction of running every migration."""

    def __init__(self, directory: Path, cleanup: contextlib.ExitStack) -> None:
        self.directory = directory
        self.cleanup = cleanup
        self.sqlite_file: Path | None = None
        self.pg_name: str | None = None

    def sqlite(self) -> Path:
        if self.sqlite_file is None:
            path = self.directory / "template.sqlite3"
            engine = make_engine(f"sqlite:///{path}")
            upgrade(engine)
            engine.dispose()  # the last connection checkpoints the WAL into the file
            self.sqlite_file = path
        return self.sqlite_file

    def sqlite_copy(self, target: Path) -> str:
        """The URL of a fresh copy of the SQLite template at `target`."""
        shutil.copyfile(self.sqlite(), target)
        return f"sqlite:///{target}"

    def postgres(self, server: str) -> str:
        if self.pg_name is None:
            url = self.cleanup.enter_context(_pg_database(server, prefix="tmpl"))
            engine = make_engine(url)
            upgrade(engine)
            engine.dispose()  # a template must have no connections when it is copied
            self.pg_name = url.rsplit("/", 1)[1]
        return self.pg_name


@pytest.fixture(scope="session")
def _migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_MigratedTemplates]:
    with contextlib.ExitStack() as cleanup:
        yield _MigratedTemplates(tmp_path_factory.mktemp("templates"), cleanup)


@pytest.fixture
def migrated_database_url(
    db_kind: str, tmp_path: Path, _migrated_templates: _MigratedTemplates
) -> Iterator[str]:
    """Like `database_url`, but already migrated to head (upgrade() on it is then a quick no-op)."""
    if db_kind == "sqlite":
        yield _migrated_templates.sqlite_copy(tmp_path / "mirror.sqlite3")
        return
    server = _required_pg_server()
    with _pg_database(server, template=_migrated_templates.postgres(server)) as url:
        yield url


# The engines: `mirror_engine` (migrated, SQLite and PostgreSQL) is the one a test takes; with
# `migrated_database_url` beside it for the command line or a second engine on the same database.
# Its variants: `pulled_engine` (after one pull of the emulator's account) and
# `sqlite_mirror_engine` (SQLite only). A test of the migrations themselves starts from
# `database_url` (empty) and makes its own engine.


@pytest.fixture
def mirror_engine(migrated_database_url: str) -> Iterator[sa.Engine]:
    """An engine on a database already migrated to head, SQLite and PostgreSQL."""
    engine = make_engine(migrated_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_mirror_engine(tmp_path: Path, _migrated_templates: _MigratedTemplates) -> Iterator[sa.Engine]:
    """`mirror_engine` on SQLite only, for the many cases of what does not depend on the database
    (validation, retention), which would double for nothing on both."""
    engine = make_engine(_migrated_templates.sqlite_copy(tmp_path / "sqlite-mirror.sqlite3"))
    yield engine
    engine.dispose()


@pytest.fixture
def mirror(mirror_engine: sa.Engine) -> sa.Engine:
    """`mirror_engine` holding `support.mirror_data.seed`'s rows, every awkward type among them:
    what the backups' tests back up, restore and compare (`mirror_data.dump`)."""
    mirror_data.seed(mirror_engine)
    return mirror_engine


@pytest.fixture
def empty_database(db_kind: str, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Makes more empty databases of the test's kind (for example where a restore goes); the
    PostgreSQL ones are dropped after the test."""
    with contextlib.ExitStack() as stack:
        made = itertools.count(1)

        def make() -> str:
            if db_kind == "sqlite":
                return f"sqlite:///{tmp_path / f'empty-{next(made)}.sqlite3'}"
            return stack.enter_context(_pg_database(_required_pg_server(), prefix="e"))

        yield make


# --- waiting ----------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], what: str = "condition", timeout: float = 60.0) -> Any:
    """`predicate()`'s first truthy value, asked every 50 ms (a daemon, a thread or a server
    getting somewhere); fails the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


# --- the emulator ---------------------------------------------------------------------------

EMULATOR_TOKEN = "test-token"
EMULATOR_RO_TOKEN = "ro-token"
EMULATOR_CONTACTS = 30  # with companies, tasks, notes...: ~100 records, every seed variant
EMULATOR_SEED = 1


@pytest.fixture(scope="session")
def _emulator_server() -> Iterator[EmulatorServer]:
    """One running emulator per test session (so per xdist worker)."""
    server = EmulatorServer(
        token=EMULATOR_TOKEN,
        read_only_token=EMULATOR_RO_TOKEN,
        contacts=EMULATOR_CONTACTS,
        seed=EMULATOR_SEED,
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def emulator_quirks(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The quirks the `emulator` fixture serves with: none, unless a test asks through
    `with_quirks` (or its own indirect parametrisation)."""
    return tuple(getattr(request, "param", ()))


# Run a test twice: against the plain emulator, and with every data quirk on (emulator/quirks.py).
with_quirks = pytest.mark.parametrize(
    "emulator_quirks",
    [pytest.param((), id="plain"), pytest.param(DATA_QUIRKS, id="quirks")],
    indirect=True,
)


def as_served(
    emulator: EmulatorServer, state: dict[str, list[dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """Records as the control surface holds them -> as the API served them under the emulator's
    active quirks, which is what the mirror keeps (raw is what was served: ids in the server's
    spelling), in the mirror's order (by the id's meaning: "445" is 445, the documents' 7 is "7"),
    the server-computed lists sorted (a quirky server reshuffles them on each read). Apply
    `sorted_lists` to the mirror's side. Without quirks: the records unchanged but for the sorted
    lists."""
    on = emulator.quirks.active - {"shuffled_lists"}
    out: dict[str, list[dict[str, Any]]] = {}
    for name, records in state.items():
        rendered = []
        for record in records:
            rec = dict(record)
            emulator.quirks.render_record(name, rec, on)
            rendered.append(rec)
        out[name] = sorted(rendered, key=lambda r, n=name: _mirror_order(n, r))  # type: ignore[misc]
    return sorted_lists(out)


def _mirror_order(resource: str, record: dict[str, Any]) -> Any:
    """Where the mirror's export puts `record`: by its id column (text for the documents)."""
    if resource in resources.TEXT_ID_RESOURCES:
        return shapes.as_text_id(record["id"])
    return shapes.record_id(record)[0]


def as_mirrored(state: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """A plain (unquirked) state by resource, in pull order, each listing as the mirror's export
    holds it: as served, sorted by id (the documents' ids as text: "7", in text order)."""
    return {
        name: sorted(state.get(name, []), key=lambda r, n=name: _mirror_order(n, r))  # type: ignore[misc]
        for name in resources.PULL_ORDER
    }


def sorted_lists(state: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Every server-computed list (diff.UNORDERED_LISTS) sorted: their order means nothing."""
    return {
        name: [
            {
                k: sorted(v, key=str) if k in UNORDERED_LISTS and isinstance(v, list) else v
                for k, v in r.items()
            }
            for r in records
        ]
        for name, records in state.items()
    }


@pytest.fixture
def emulator(_emulator_server: EmulatorServer, emulator_quirks: tuple[str, ...]) -> EmulatorServer:
    """A running emulator with a freshly seeded small account, no faults and an empty request log.

    Token "test-token" (the owner, user 1), read-only token "ro-token" (user 2). Use
    `emulator.base_url` for a client and `emulator.control` to act as the web UI or add faults.
    """
    _emulator_server.reset(contacts=EMULATOR_CONTACTS, seed=EMULATOR_SEED)
    _emulator_server.set_quirks(emulator_quirks)
    return _emulator_server


class Sleeps(list[float]):
    """An injected sleep: records each wait instead of sleeping, so fault tests stay fast and can
    check the waits."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    """The waits `api_client` was told to sleep (a test's own clients may share it: `sleep=sleeps`)."""
    return Sleeps()


@pytest.fixture
def api_client(
    emulator: EmulatorServer, sleeps: Sleeps, request: pytest.FixtureRequest
) -> Iterator[ClevertimClient]:
    """The API client of the emulator's owner ("test-token"): it records its waits in `sleeps`
    instead of sleeping, and by default does not retry a read, so a fault reaches the code under
    test at once. A module or a test that wants the client's own retries, or another option of
    `ClevertimClient`, says so with a marker: `pytestmark = pytest.mark.api_client(read_retries=2)`
    (a marker, not a parameter, so the tests' ids stay as they are)."""
    marker = request.node.get_closest_marker("api_client")
    options: dict[str, Any] = {"read_retries": 0} | (marker.kwargs if marker else {})
    with ClevertimClient(emulator.base_url, EMULATOR_TOKEN, sleep=sleeps, **options) as client:
        yield client


def _emulator_http(emulator: EmulatorServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=emulator.base_url, auth=(token, "X"), timeout=10, verify=False)


@pytest.fixture
def emulator_http(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    """Plain HTTP to the emulator as its owner, for the emulator's own tests (what goes over the
    wire, without the client's reading of it)."""
    with _emulator_http(emulator, EMULATOR_TOKEN) as client:
        yield client


@pytest.fixture
def emulator_http_ro(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    """`emulator_http` with the read-only token (user 2)."""
    with _emulator_http(emulator, EMULATOR_RO_TOKEN) as client:
        yield client


@pytest.fixture
def pulled_engine(
    mirror_engine: sa.Engine, api_client: ClevertimClient, emulator: EmulatorServer
) -> sa.Engine:
    """`mirror_engine` after one pull of the emulator's account by `api_client`; the emulator's
    request log is then cleared, so a test sees only its own requests."""
    assert pull(mirror_engine, api_client).ok
    emulator.control.clear_requests()
    return mirror_engine


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook on loopback taking the alerts (`receiver.url`, `receiver.messages`)."""
    r = Receiver().up()
    yield r
    r.down()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1.5 MB tmpfs: a real file system that runs out of space (mounting needs root: skipped
    without it)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(mount)], check=False, capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


# --- the command line against the emulator ----------------------------------------------------

CliInvoke = Callable[..., Result]


def _cli_env(emulator: EmulatorServer, database_url: str, token: str) -> dict[str, str]:
    return {
        "CLEVERTIM_URL": emulator.base_url,
        "CLEVERTIM_TOKEN": token,
        "CLEVERTIM_SYNC_DATABASE_URL": database_url,
    }


@pytest.fixture
def cli_runner(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., CliInvoke]:
    """`run = cli_runner(database_url, **env)`; `run("sync", code=0)` runs `clevertim-sync sync`
    in this process (click's CliRunner) against the emulator, from tmp_path (no stray config
    file), with warning-level JSON logs; `code` asserts the exit status."""
    monkeypatch.chdir(tmp_path)

    def bind(database_url: str, token: str = EMULATOR_TOKEN, **extra_env: str) -> CliInvoke:
        env = _cli_env(emulator, database_url, token) | {
            "CLEVERTIM_SYNC_LOG_LEVEL": "warning",
            "CLEVERTIM_SYNC_LOG_FORMAT": "json",
            "CLEVERTIM_SYNC_CONFIG": "",
            **extra_env,
        }

        def invoke(*args: str, code: int | None = None) -> Result:
            result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
            assert code is None or result.exit_code == code, result.output
            return result

        return invoke

    return bind


@pytest.fixture
def cli_process(emulator: EmulatorServer) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`cli_process(database_url, *args, token=...)`: `python -m clevertim_sync ARGS` in a child
    process against the emulator, with no other CLEVERTIM* variable of ours leaking in."""

    def run(database_url: str, *args: str, token: str = EMULATOR_TOKEN) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLEVERTIM")}
        env |= _cli_env(emulator, database_url, token)
        cmd = [sys.executable, "-m", "clevertim_sync", *args]
        return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=120)

    return run
