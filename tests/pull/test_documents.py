"""Folders, files and linked files (text ids), the records' links to them, and a missing
documents endpoint, against the emulator over loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from alembic import command
from conftest import with_quirks

from clevertim_sync import resources, shapes
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.backup import asof as export_asof
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import db, schema, store, versions
from clevertim_sync.pull.pipeline import plan_pull, pull
from clevertim_sync.reporting import reports

# a document's read is retried once
pytestmark = pytest.mark.api_client(read_retries=1)

TOKEN = "test-token"
OWNERS = ("contact", "company", "case", "opportunity", "note")
DOCUMENTS = ("folder", "file", "linkedfile")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def served(emulator: EmulatorServer) -> dict[str, list[dict[str, Any]]]:
    return emulator.control.state(as_token=TOKEN)


def rows(engine: sa.Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]


@with_quirks  # ids and lists as strings, 0/1 booleans, shuffled lists, "" for null
def test_documents_are_mirrored_with_text_ids_and_joinable_from_their_records(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    report = pull(mirror_engine, api_client)
    assert report.ok, report.failed
    state = served(emulator)
    # Text ids, as served ("f1001"), or an integer's text ("7"); a folder's parent is text too.
    folders = {r["id"]: r for r in rows(mirror_engine, "SELECT id, name, parent_id, is_dir FROM folders")}
    assert set(folders) == {f["id"] for f in state["folder"]} and all(k.startswith("f") for k in folders)
    roots = [f for f in folders.values() if f["parent_id"] is None]
    assert len(roots) == 1 and all(bool(f["is_dir"]) for f in folders.values())
    nested = [f for f in folders.values() if f["parent_id"] is not None and f["parent_id"] != roots[0]["id"]]
    assert nested or len(folders) < 3 or any(f["parent_id"] == roots[0]["id"] for f in folders.values())
    in_folders = rows(
        mirror_engine,
        "SELECT f.id, f.name, d.name AS folder FROM files f JOIN folders d ON d.id = f.parent_id",
    )
    assert len(in_folders) == len(state["file"]) > 0  # every file's parent_id joins folders.id
    assert {r["id"] for r in in_folders} == {str(f["id"]) for f in state["file"]}
    linked = {r["id"]: r for r in rows(mirror_engine, "SELECT id, system, size, link FROM linked_files")}
    assert linked == {
        str(lf["id"]): {"id": str(lf["id"]), "system": lf["sys"], "size": lf["size"], "link": lf["link"]}
        for lf in state["linkedfile"]
    }
    # Every record's files and lfiles: one child row per id, joinable to the documents' tables.
    for owner in OWNERS:
        res = resources.get(owner)
        for api, child, column, target in (
            ("files", f"{owner}_files", "file_id", "files"),
            ("lfiles", f"{owner}_linked_files", "linked_file_id", "linked_files"),
        ):
            expected = sorted((r["id"], str(i)) for r in state[owner] for i in r.get(api) or [])
            join = f"{child} x LEFT JOIN {target} d ON d.id = x.{column}"
            got = rows(mirror_engine, f"SELECT x.owner_id, x.{column} AS doc, d.id FROM {join}")
            assert sorted((r["owner_id"], r["doc"]) for r in got) == expected, (res.name, api)
            assert all(r["id"] is not None for r in got)  # the document is mirrored: the join finds it
    assert sum(1 for r in state["contact"] if r.get("files")) > 0


def test_text_ids_through_history_versions_as_of_export_and_restore(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient,
    tmp_path: Path, cli_runner: Any, migrated_database_url: str,
) -> None:  # fmt: skip
    assert pull(mirror_engine, api_client).ok
    t0 = datetime.now(UTC)
    ctl = emulator.control
    folder = served(emulator)["folder"][-1]["id"]
    made = ctl.create("folder", {"name": "Neue Verträge", "parentId": folder, "is_dir": True})
    ctl.update("folder", folder, {"name": "Renamed"})
    ctl.delete("file", served(emulator)["file"][0]["id"])
    report = pull(mirror_engine, api_client)
    assert (report.resources["folder"].inserted, report.resources["folder"].updated) == (1, 1)
    assert report.resources["file"].deleted == 1
    assert isinstance(made["id"], str) and made["id"].startswith("f")
    h = rows(
        mirror_engine,
        "SELECT record_id, record_key, op FROM history WHERE resource = 'folder' AND run_id = :r",
        r=report.run_id,
    )
    assert sorted((r["record_key"], r["op"]) for r in h) == sorted(
        [(made["id"], "insert"), (folder, "update")]
    )
    assert all(r["record_id"] is None for r in h)

    with mirror_engine.connect() as conn:
        found = versions.record_versions(conn, "folder", folder)
    assert [v.op for v in found] == ["insert", "update"]
    assert (found[1].raw or {})["name"] == "Renamed"
    run = cli_runner(migrated_database_url)
    out = run("history", "folder", folder, code=0).output
    assert f"folder {folder}: 2 version(s)" in out and "revert" not in out  # read-only: nothing to revert
    assert "is not an id of a contact" in run("history", "contact", "f1001", code=2).output

    # As of t0: the folder had its old name, the new one did not exist, the deleted file did.
    export_asof.export_as_of(mirror_engine, tmp_path / "t0", t0)
    old = [orjson.loads(line) for line in (tmp_path / "t0" / "folder.jsonl").read_bytes().splitlines()]
    assert (
        made["id"] not in {r["id"] for r in old}
        and next(r for r in old if r["id"] == folder)["name"] != "Renamed"
    )
    files_then = (tmp_path / "t0" / "file.jsonl").read_bytes().splitlines()
    assert len(files_then) == len(served(emulator)["file"]) + 1
    ids = [orjson.loads(line)["id"] for line in files_then]
    # in the order of their text ids; each as the server spelled it (the emulator: integers)
    assert [str(i) for i in ids] == sorted(str(i) for i in ids) and all(isinstance(i, int) for i in ids)

    # Loaded back as a mirror, the export gives the same files; an older export (no document
    # files at all) still loads.
    target = f"sqlite:///{tmp_path / 'back.sqlite3'}"
    counts = export_asof.restore_from_export(tmp_path / "t0", target)
    assert counts["folder"] == len(old)
    back = db.make_engine(target)
    with back.connect() as conn:
        store.export_jsonl(conn, tmp_path / "again")
    back.dispose()
    for name in DOCUMENTS:
        assert (tmp_path / "again" / f"{name}.jsonl").read_bytes() == (
            tmp_path / "t0" / f"{name}.jsonl"
        ).read_bytes()
    for name in DOCUMENTS:
        (tmp_path / "t0" / f"{name}.jsonl").unlink()
    older = export_asof.restore_from_export(tmp_path / "t0", f"sqlite:///{tmp_path / 'older.sqlite3'}")
    assert older["folder"] == 0 and older["contact"] == counts["contact"]


def test_the_documents_report_counts_what_the_emulator_holds(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    # One file the token cannot see: referenced by a contact, not in the mirror.
    state = served(emulator)
    contact = next(c for c in state["contact"] if c.get("files"))
    hidden = contact["files"][0]
    emulator.control.add_fault(kind="hide", path="^/file$", hide_ids=[hidden])
    assert pull(mirror_engine, api_client).ok
    state = served(emulator)

    expected: dict[tuple[str, int], dict[str, Any]] = {}
    listed = {("file", str(f["id"])) for f in state["file"]} - {("file", str(hidden))}
    listed |= {("linked_file", str(lf["id"])) for lf in state["linkedfile"]}

    def add(kind: str, cid: Any, doc: str, ids: list[Any] | None, direct: bool) -> None:
        if cid is None:
            return
        row = expected.setdefault((kind, cid), {"direct": {"file": set(), "linked_file": set()}, "on": set()})
        for i in ids or []:
            (row["direct"][doc].add if direct else row["on"].add)((doc, str(i)) if not direct else str(i))

    customers = {c["id"]: "contact" for c in state["contact"]} | {
        c["id"]: "company" for c in state["company"]
    }
    for name in ("contact", "company"):
        for c in state[name]:
            add(name, c["id"], "file", c.get("files"), True)
            add(name, c["id"], "linked_file", c.get("lfiles"), True)
    for name in ("note", "case", "opportunity"):
        for r in state[name]:
            for cid in shapes.as_ids(r.get("cust")):
                if cid in customers:
                    add(customers[cid], cid, "file", r.get("files"), False)
                    add(customers[cid], cid, "linked_file", r.get("lfiles"), False)
    want = {}
    for key, e in expected.items():
        direct = {("file", i) for i in e["direct"]["file"]} | {
            ("linked_file", i) for i in e["direct"]["linked_file"]
        }
        everything = direct | e["on"]
        if everything:
            want[key] = (len(e["direct"]["file"]), len(e["direct"]["linked_file"]), len(e["on"]),
                         len(everything), len(everything - listed))  # fmt: skip
    columns, got_rows = reports.run_report(mirror_engine, "documents")
    counted = ("files", "linked_files", "on_records", "documents", "not_mirrored")
    got = {
        (r["kind"], r["customer_id"]): tuple(r[c] for c in counted)
        for r in (dict(zip(columns, row, strict=True)) for row in got_rows)
    }
    assert got == want and len(want) > 5
    assert got[("contact", contact["id"])][4] >= 1  # the hidden file is counted as not mirrored
    assert any(v[2] for v in want.values())  # documents on notes, cases or opportunities count too


MISSING = [
    pytest.param(404, id="404"),
    pytest.param(400, id="400"),
    pytest.param(501, id="501"),
]


@pytest.mark.parametrize("status", MISSING)
def test_an_account_without_the_documents_endpoints_syncs_everything_else(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient,
    status: int, cli_runner: Any, migrated_database_url: str,
) -> None:  # fmt: skip
    assert pull(mirror_engine, api_client).ok
    folders_before = rows(mirror_engine, "SELECT id, raw FROM folders ORDER BY id")
    emulator.control.add_fault(kind="status", status=status, path="^/(folder|file|linkedfile)$")
    emulator.control.update("contact", served(emulator)["contact"][0]["id"], {"title": "Still synced"})

    report = pull(mirror_engine, api_client)
    assert report.ok and report.status == "ok"  # not failed, not partial
    for name in DOCUMENTS:
        c = report.resources[name]
        assert c.error is None and c.unavailable is not None and f"HTTP {status}" in c.unavailable
    assert report.resources["contact"].updated == 1
    assert rows(mirror_engine, "SELECT id, raw FROM folders ORDER BY id") == folders_before  # kept as it was
    with mirror_engine.connect() as conn:
        st = store.resource_statuses(conn)
    assert st["folder"]["unavailable"] and st["folder"]["consecutive_failures"] == 0
    assert st["contact"]["unavailable"] is None

    run = cli_runner(migrated_database_url)
    status_out = run("status", code=0).output
    assert "unavailable" in status_out and f"HTTP {status}" in status_out
    assert orjson.loads(run("status", "--json", code=0).output)[-1]["unavailable"]
    dry = plan_pull(mirror_engine, api_client, resources=["folder"])
    assert dry[0].unavailable and dry[0].error is None

    # Once the endpoints answer again, the mark goes and the documents catch up.
    emulator.control.clear_faults()
    emulator.control.update("folder", served(emulator)["folder"][0]["id"], {"name": "Back"})
    report = pull(mirror_engine, api_client)
    assert (
        report.ok
        and report.resources["folder"].updated == 1
        and report.resources["folder"].unavailable is None
    )
    with mirror_engine.connect() as conn:
        assert store.resource_statuses(conn)["folder"]["unavailable"] is None


def test_a_server_error_on_a_documents_endpoint_is_still_a_failure(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    emulator.control.add_fault(kind="status", status=503, path="^/folder$")
    report = pull(mirror_engine, api_client)
    assert report.failed == ["folder"] and report.resources["folder"].unavailable is None
    assert report.resources["file"].error is None and report.resources["contact"].error is None


def test_migration_0009_fills_the_links_from_what_is_mirrored(database_url: str) -> None:
    """A mirror at 0008 with records whose raw lists files (ints, numeric and word strings, junk)
    gets its child tables on upgrade, and history keeps every row; downgrade and upgrade again."""
    engine = db.make_engine(database_url)
    try:
        db.upgrade(engine, "0008_alerts")
        with engine.begin() as conn:
            contacts = sa.table("contacts", sa.column("id"), sa.column("raw"), sa.column("content_hash"))
            notes = sa.table("notes", sa.column("id"), sa.column("raw"), sa.column("content_hash"))
            history = sa.table(
                "history", sa.column("resource"), sa.column("record_id"), sa.column("origin"),
                sa.column("op"), sa.column("at"),
            )  # fmt: skip
            conn.execute(contacts.insert(), [
                {"id": 1, "raw": '{"id":1,"files":[12,"3"," f9 ",1.5,"",null],"lfiles":[2]}',
                 "content_hash": "a"},
                {"id": 2, "raw": '{"id":2,"files":"junk"}', "content_hash": "b"},
                {"id": 3, "raw": '{"id":3}', "content_hash": "c"},
            ])  # fmt: skip
            conn.execute(
                notes.insert(),
                [{"id": 7, "raw": '{"id":7,"files":[5],"lfiles":["L1","L0"]}', "content_hash": "n"}],
            )
            conn.execute(history.insert(), [
                {"resource": "contact", "record_id": i, "origin": "pull", "op": "insert", "at": T0}
                for i in (1, 2, 3)
            ])  # fmt: skip
        db.upgrade(engine)
        # The same rows the row builder writes: ids as text, sorted, junk left out.
        assert rows(
            engine, "SELECT owner_id, position, file_id FROM contact_files ORDER BY owner_id, position"
        ) == [
            {"owner_id": 1, "position": 0, "file_id": "12"},
            {"owner_id": 1, "position": 1, "file_id": "3"},
            {"owner_id": 1, "position": 2, "file_id": "f9"},
        ]
        from clevertim_sync.mirror.columns import child_rows  # noqa: PLC0415

        prop = resources.get("contact").by_api["files"]
        assert child_rows(prop, 1, [12, "3", " f9 ", 1.5, "", None]) == [
            (1, 0, "12"),
            (1, 1, "3"),
            (1, 2, "f9"),
        ]
        assert rows(engine, "SELECT linked_file_id FROM note_linked_files ORDER BY position") == [
            {"linked_file_id": "L0"}, {"linked_file_id": "L1"},
        ]  # fmt: skip
        assert rows(engine, "SELECT count(*) AS n FROM history WHERE record_id IS NOT NULL")[0]["n"] == 3
        assert rows(engine, "SELECT count(*) AS n FROM report_changes")[0]["n"] == 3
        assert rows(engine, "SELECT count(*) AS n FROM report_documents")[0]["n"] == 1  # contact 1
        cfg = db.alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0008_alerts")
        assert "folders" not in sa.inspect(engine).get_table_names()
        assert rows(engine, "SELECT count(*) AS n FROM report_changes")[0]["n"] == 3
        db.upgrade(engine)
        assert len(rows(engine, "SELECT * FROM contact_files")) == 3
    finally:
        engine.dispose()


def test_the_schema_holds_text_ids_where_the_api_gives_them() -> None:
    for name in DOCUMENTS:
        assert isinstance(schema.CURRENT[name].c.id.type, sa.Text)
    assert isinstance(schema.CURRENT["file"].c.parent_id.type, sa.Text)
    assert isinstance(schema.CHILDREN[("contact", "files")].c.file_id.type, sa.Text)
    assert resources.PULL_ORDER.index("file") > resources.PULL_ORDER.index("folder")
