"""Shared fixtures: real databases (a SQLite file, and a fresh database on the throwaway
PostgreSQL that scripts/with-postgres starts) and a real emulator over loopback (`emulator`)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror.db import make_engine, upgrade

PG_URL_ENV = "CLEVERTIM_SYNC_TEST_PG_URL"


def _pg_server_url() -> str | None:
    url = os.environ.get(PG_URL_ENV)
    if not url and os.environ.get("CLEVERTIM_SYNC_REQUIRE_POSTGRES"):
        pytest.fail(f"{PG_URL_ENV} is not set but PostgreSQL tests are required")
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mirror.sqlite3'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A brand-new empty database on the throwaway server, dropped after the test."""
    server = _pg_server_url()
    if not server:
        pytest.skip(f"no PostgreSQL: run through `make test` (or set {PG_URL_ENV})")
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = server.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Run the test once on a SQLite file and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


class _MigratedTemplates:
    """Databases migrated to head once per session, copied per test: a copy of a SQLite file or
    `CREATE DATABASE ... TEMPLATE` on PostgreSQL costs a fraction of running every migration."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
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

    def postgres(self, server: str) -> str:
        if self.pg_name is None:
            name = f"tmpl_{uuid.uuid4().hex[:16]}"
            admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            engine = make_engine(server.rsplit("/", 1)[0] + f"/{name}")
            upgrade(engine)
            engine.dispose()  # a template must have no connections when it is copied
            self.pg_name = name
        return self.pg_name


@pytest.fixture(scope="session")
def _migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_MigratedTemplates]:
    templates = _MigratedTemplates(tmp_path_factory.mktemp("templates"))
    yield templates
    server = _pg_server_url()
    if templates.pg_name and server:
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{templates.pg_name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def migrated_database_url(
    request: pytest.FixtureRequest, tmp_path: Path, _migrated_templates: _MigratedTemplates
) -> Iterator[str]:
    """Like `database_url`, but already migrated to head (upgrade() on it is then a quick no-op)."""
    if request.param == "sqlite":
        target = tmp_path / "mirror.sqlite3"
        shutil.copyfile(_migrated_templates.sqlite(), target)
        yield f"sqlite:///{target}"
        return
    server = _pg_server_url()
    if not server:
        pytest.skip(f"no PostgreSQL: run through `make test` (or set {PG_URL_ENV})")
    template = _migrated_templates.postgres(server)
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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
def emulator(_emulator_server: EmulatorServer) -> EmulatorServer:
    """A running emulator with a freshly seeded small account, no faults and an empty request log.

    Token "test-token" (the owner, user 1), read-only token "ro-token" (user 2). Use
    `emulator.base_url` for a client and `emulator.control` to act as the web UI or add faults.
    """
    _emulator_server.reset(contacts=EMULATOR_CONTACTS, seed=EMULATOR_SEED)
    return _emulator_server
