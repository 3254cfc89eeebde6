"""`clevertim-sync datasette`: the metadata against a real migrated mirror, the canned queries
against the reports, the refusals, and a real Datasette server (`--serve`) reading a live WAL
mirror that the daemon keeps writing to, through Datasette's JSON API."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import wait_for as _wait

from clevertim_sync import resources
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.cli import cli
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror.db import make_engine, upgrade
from clevertim_sync.pull.pipeline import pull
from clevertim_sync.reporting import datasette_meta, reports
from clevertim_sync.writeback import queue

TOKEN = "test-token"


def _objects(path: Path) -> set[str]:
    """Tables and views of a SQLite file, without FTS5's shadow tables."""
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    fts = {n for n in names if n.endswith("_fts")}
    return {n for n in names if not any(n.startswith(f + "_") for f in fts)}


def _columns(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}


def test_metadata_describes_every_table_and_view_and_names_only_what_exists(tmp_path: Path) -> None:
    path = tmp_path / "mirror.sqlite3"
    upgrade(f"sqlite:///{path}")
    objects = _objects(path)
    meta = datasette_meta.build_metadata("mirror")  # without `existing`: everything the code knows
    database = meta["databases"]["mirror"]
    tables = database["tables"]
    # Every table and view of the schema is described; the FTS tables are Datasette's to hide.
    fts = {t for t in objects if t.endswith("_fts")}
    assert set(tables) == objects - fts
    for name, table in tables.items():
        assert table.get("description"), name
        columns = _columns(path, name)
        assert set(table.get("columns", {})) <= columns, name
        for facet in table.get("facets", []):
            assert facet in columns, (name, facet)
        for key in ("label_column", "sort_desc"):
            assert key not in table or table[key] in columns, (name, key)
        if "fts_table" in table:
            assert table["fts_table"] in fts
            assert table["fts_pk"] in columns
            assert table["searchmode"] == "escaped"
    # Every scalar column of every resource table is described, from the registry.
    for res in resources.RESOURCES:
        assert set(tables[res.table]["columns"]) == _columns(path, res.table), res.table
    assert tables["contacts"]["label_column"] == "last_name"
    assert tables["companies"]["label_column"] == "name"
    assert {"status", "currency", "lead_user_id"} <= set(tables["opportunities"]["facets"])
    assert "customer_type" in tables["contacts"]["facets"]
    assert tables["alembic_version"]["hidden"] is True
    # The searchable tables are the ones mirror/search.py keeps.
    searchable = {name: t["fts_table"] for name, t in tables.items() if "fts_table" in t}
    assert searchable == {
        "notes": "notes_fts",
        "contacts": "contacts_fts",
        "companies": "companies_fts",
        "report_contacts": "contacts_fts",
    }
    # Every report is a canned query, never shadowing a table of the same name; and search.
    assert set(database["queries"]) == {f"report-{n}" for n in reports.REPORTS} | {"search"}
    assert not set(database["queries"]) & objects
    # A database at an older schema gets metadata only for what it has.
    some = datasette_meta.build_metadata("m", {"contacts", "history"})["databases"]["m"]["tables"]
    assert set(some) == {"contacts", "history"}
    assert "fts_table" not in some["contacts"]


@pytest.fixture
def pulled(emulator: EmulatorServer, tmp_path: Path) -> Iterator[tuple[Path, sa.Engine]]:
    path = tmp_path / "mirror.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with ClevertimClient(emulator.base_url, TOKEN) as client:
        assert pull(engine, client).ok
    yield path, engine
    engine.dispose()


def _same_rows(raw: list[tuple[Any, ...]], typed: list[tuple[Any, ...]]) -> bool:
    """Equal rows in the same order, compared on the columns whose values read the same from
    sqlite3 and through the report's types (ints and text; not timestamps, decimals, booleans)."""
    width = len(typed[0]) if typed else 0
    plain = [
        i for i in range(width) if all(isinstance(r[i], int | str | None) and r[i] is not True for r in typed)
    ]
    assert plain, "no column to compare"
    return [[r[i] for i in plain] for r in raw] == [[r[i] for i in plain] for r in typed]


def test_each_reports_canned_query_gives_the_reports_rows_in_its_order(
    pulled: tuple[Path, sa.Engine],
) -> None:
    path, engine = pulled
    queries = datasette_meta.build_metadata("mirror")["databases"]["mirror"]["queries"]
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for report in reports.REPORTS.values():
            query = queries[f"report-{report.name}"]
            takes_since = report.since_column is not None
            assert query.get("params", []) == (["since"] if takes_since else [])
            got = conn.execute(query["sql"], {"since": ""} if takes_since else {}).fetchall()
            columns, rows = reports.run_report(engine, report.name)
            assert len(got) == len(rows) > 0, report.name
            assert _same_rows(got, rows), report.name
            if takes_since:  # from the middle of the report's times: some rows, not all
                times = sorted({r[columns.index(report.since_column)] for r in rows})
                moment = times[len(times) // 2]
                # The canned query reads `since` to the millisecond (SQLite's date functions).
                moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
                since = moment.isoformat().replace("+00:00", "Z")
                got = conn.execute(query["sql"], {"since": since}).fetchall()
                _, rows = reports.run_report(engine, report.name, since=moment)
                assert 0 < len(got) == len(rows), report.name
                assert _same_rows(got, rows), report.name
                assert len(got) < len(conn.execute(query["sql"], {"since": ""}).fetchall())
    finally:
        conn.close()


def test_command_writes_metadata_for_the_file_and_refuses_without_datasette(
    cli_runner: Callable[..., Any], sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = cli_runner(sqlite_url)
    out = tmp_path / "meta.json"
    result = run("datasette", "--metadata", str(out), code=0)
    assert "datasette serve" in result.output
    meta = json.loads(out.read_text())
    assert list(meta["databases"]) == ["mirror"]  # Datasette's name for mirror.sqlite3
    assert "report-pipeline" in meta["databases"]["mirror"]["queries"]
    # --serve without Datasette installed: the install hint, exit 2, nothing started.
    monkeypatch.setitem(sys.modules, "datasette", None)
    result = run("datasette", "--serve", "--metadata", str(out), code=2)
    assert "Datasette is not installed" in result.output
    assert datasette_meta.INSTALL_HINT in result.output


def test_serve_refuses_an_address_beyond_loopback_unless_asked_and_says_how_to_protect_it(
    cli_runner: Callable[..., Any], sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = cli_runner(sqlite_url)
    out = tmp_path / "meta.json"
    monkeypatch.setitem(sys.modules, "datasette", None)  # nothing may start, whatever happens
    for host in ("0.0.0.0", "::", "192.168.1.20", "crm.example.org"):
        result = run("datasette", "--serve", "--host", host, "--metadata", str(out), code=2)
        assert f"refusing to serve the mirror on {host}" in result.output
        assert "reverse proxy with authentication" in result.output and "--allow-remote" in result.output
    assert not out.exists()  # refused before anything was written
    # Loopback needs no flag, and --allow-remote lets another address through (to the next check:
    # Datasette is hidden here, so nothing starts).
    for args in (
        ("--host", "127.0.0.1"),
        ("--host", "::1"),
        ("--host", "localhost"),
        ("--host", "0.0.0.0", "--allow-remote"),
    ):
        result = run("datasette", "--serve", *args, "--metadata", str(out), code=2)
        assert "Datasette is not installed" in result.output, args


def test_command_picks_the_account_whose_mirror_to_browse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(
        f'state_dir = "{tmp_path}"\n'
        + "".join(f'[[accounts]]\nname = "{n}"\ntoken = "t-{n}"\n' for n in ("north", "south"))
    )
    env = {"CLEVERTIM_SYNC_CONFIG": "", "CLEVERTIM_SYNC_DATABASE_URL": "", "CLEVERTIM_TOKEN": ""}

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, ["--config", str(config), "datasette", *args], env=env)

    result = run()
    assert result.exit_code == 2
    assert "--account: one of north, south" in result.output
    result = run("--account", "south", "--metadata", "south.json")
    assert result.exit_code == 0, result.output
    assert list(json.loads((tmp_path / "south.json").read_text())["databases"]) == ["south"]
    assert (tmp_path / "south.sqlite3").exists() and not (tmp_path / "north.sqlite3").exists()
    assert run("--account", "west").exit_code == 2


@pytest.mark.postgres
def test_command_refuses_a_postgresql_mirror(cli_runner: Callable[..., Any], postgres_url: str) -> None:
    run = cli_runner(postgres_url)
    for args in (("datasette",), ("datasette", "--serve")):
        result = run(*args, code=2)
        assert "Datasette reads SQLite files only" in result.output
        assert "restore --from-export" in result.output
    assert not Path("datasette-metadata.json").exists()


# --- a real Datasette on a mirror the daemon writes to ---------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Process:
    def __init__(self, args: list[str], log: Path, cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLEVERTIM")}
        self.log = log
        self._out = log.open("wb")
        cmd = [sys.executable, "-m", "clevertim_sync", *args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._out, stderr=subprocess.STDOUT, cwd=cwd)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()


@pytest.fixture
def processes() -> Iterator[Callable[..., _Process]]:
    started: list[_Process] = []

    def start(args: list[str], log: Path, cwd: Path) -> _Process:
        p = _Process(args, log, cwd)
        started.append(p)
        return p

    yield start
    for p in reversed(started):
        p.stop()


def test_datasette_serves_a_live_mirror_the_daemon_writes_to(
    emulator: EmulatorServer, tmp_path: Path, processes: Callable[..., _Process]
) -> None:
    db_path = tmp_path / "live.sqlite3"
    config = tmp_path / "config.toml"
    config.write_text(
        f'log_format = "json"\n[clevertim]\nurl = "{emulator.base_url}"\ntoken = "{TOKEN}"\n'
        f'[database]\nurl = "sqlite:///{db_path}"\n[pull]\ninterval = 1\njitter = 0\n'
        "[push]\ninterval = 1\n"
    )
    remote = emulator.control.state(as_token=TOKEN)
    daemon = processes(["--config", str(config), "run"], tmp_path / "daemon.log", tmp_path)
    engine = make_engine(f"sqlite:///{db_path}")

    def mirrored(table: str) -> int:
        if not db_path.exists():
            return 0
        try:
            with engine.connect() as conn:
                return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
        except sa.exc.OperationalError:  # not yet migrated
            return 0

    _wait(lambda: mirrored("comments") == len(remote["comment"]) or not daemon.alive(), "the first pull")
    assert daemon.alive(), daemon.output()
    assert db_path.with_name("live.sqlite3-wal").exists()  # WAL: Datasette reads beside the writer

    port = _free_port()
    metadata = tmp_path / "meta.json"
    server = processes(
        ["--config", str(config), "datasette", "--serve", "--port", str(port), "--metadata", str(metadata)],
        tmp_path / "datasette.log",
        tmp_path,
    )
    base = f"http://127.0.0.1:{port}/live"
    http = httpx.Client(timeout=10)

    def get(path: str, **params: str) -> Any:
        response = http.get(base + path, params={"_shape": "array", **params})
        assert response.status_code == 200, (path, response.text[:500])
        return response.json()

    def up() -> bool:
        assert server.alive(), server.output()
        try:
            return http.get(f"http://127.0.0.1:{port}/-/versions.json").status_code == 200
        except httpx.TransportError:
            return False

    try:
        _wait(up, "Datasette to listen")
        versions = http.get(f"http://127.0.0.1:{port}/-/versions.json").json()
        assert versions["datasette"]["version"].startswith("0.65.")
        # Our metadata is the one it serves, under the file's name.
        served = http.get(f"http://127.0.0.1:{port}/-/metadata.json").json()
        assert served["databases"]["live"]["tables"]["contacts"]["fts_table"] == "contacts_fts"

        # A table: every contact the token sees.
        rows = get("/contacts.json", _size="max", _col="last_name")
        assert sorted(r["id"] for r in rows) == sorted(c["id"] for c in remote["contact"])
        # A canned query: the pipeline report, against what the emulator holds.
        pipeline = Counter((o.get("status"), o.get("currency")) for o in remote["opportunity"])
        got = get("/report-pipeline.json")
        assert {(r["status"], r["currency"]): r["opportunities"] for r in got} == dict(pipeline)
        # A search through the search box's ?_search= and the search canned query.
        assert get("/contacts.json", _search="Quokkafield") == []

        # Data changes underneath: a contact and a note added in Clevertim, pulled by the daemon,
        # show up through the same Datasette, not restarted.
        now = datetime.now(UTC)
        before = now.replace(microsecond=now.microsecond // 1000 * 1000).isoformat().replace("+00:00", "Z")
        contact = emulator.control.create("contact", {"fn": "Ada", "ln": "Quokkafield", "title": "CFO"})
        note = emulator.control.create("note", {"desc": "walrus budget review", "cust": contact["id"]})
        found = _wait(lambda: get("/contacts.json", _search="quokkafield"), "the new contact in Datasette")
        assert [r["id"] for r in found] == [contact["id"]]
        in_report = get("/report_contacts.json", _search="Quokkafield")
        assert [r["contact_id"] for r in in_report] == [contact["id"]]
        hits = _wait(lambda: get("/search.json", q="walrus budget"), "the new note in the search query")
        assert [(h["kind"], h["record_id"]) for h in hits] == [("note", note["id"])]
        assert get("/search.json", q="") == []  # the empty form: no rows, no FTS5 syntax error
        # The changes report with its `since` parameter lists exactly the two inserts.
        changes = get("/report-changes.json", since=before)
        assert {(c["resource"], c["record_id"], c["op"]) for c in changes} >= {
            ("contact", contact["id"], "insert"),
            ("note", note["id"], "insert"),
        }
        assert all(c["at"] >= before.replace("T", " ").rstrip("Z") for c in changes)
        assert len(get("/report-changes.json")) > len(changes)
        # A local edit, pushed by the daemon and folded into the mirror, shows up too.
        queue.enqueue_update(engine, "contact", contact["id"], {"title": "Chief Walrus"})
        _wait(
            lambda: get(f"/contacts/{contact['id']}.json")[0]["title"] == "Chief Walrus",
            "the pushed edit in Datasette",
        )
        assert emulator.control.record("contact", contact["id"])["title"] == "Chief Walrus"
        assert daemon.alive() and server.alive()
    finally:
        http.close()
        engine.dispose()
