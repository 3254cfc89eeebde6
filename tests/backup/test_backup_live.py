"""Backups, as-of exports, reports and search against the emulator over loopback, on SQLite and
PostgreSQL: every expectation is computed from the emulator's own data, not from the mirror."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from conftest import as_mirrored

from clevertim_sync import resources
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.backup import archive as bk
from clevertim_sync.backup import asof as export_asof
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import store
from clevertim_sync.mirror.db import make_engine, upgrade
from clevertim_sync.pull.pipeline import pull
from clevertim_sync.reporting import reports

TOKEN = "test-token"
Export = dict[str, list[dict[str, Any]]]


def pull_ok(engine: sa.Engine, emulator: EmulatorServer) -> None:
    with ClevertimClient(emulator.base_url, TOKEN) as client:
        report = pull(engine, client)
    assert report.ok, report


def remote(emulator: EmulatorServer) -> Export:
    """What the token sees on the server, by resource, as the mirror's export holds it."""
    return as_mirrored(emulator.control.state(as_token=TOKEN))


def read_export(directory: Path) -> Export:
    return {
        name: [orjson.loads(line) for line in (directory / f"{name}.jsonl").read_bytes().splitlines()]
        for name in resources.PULL_ORDER
    }


def export_now(url_or_engine: str | sa.Engine, directory: Path) -> Export:
    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    with engine.connect() as conn:
        store.export_jsonl(conn, directory)
    if isinstance(url_or_engine, str):
        engine.dispose()
    return read_export(directory)


def sans_lm(export: Export) -> Export:
    """History keeps content changes; an `lm` bump alone is not one (see export_asof)."""
    return {name: [{k: v for k, v in r.items() if k != "lm"} for r in recs] for name, recs in export.items()}


def tick() -> datetime:
    """A moment strictly between what happened before and what happens after."""
    time.sleep(0.01)
    moment = datetime.now(UTC)
    time.sleep(0.01)
    return moment


def change_every_resource(emulator: EmulatorServer, state: Export, suffix: str) -> None:
    ctl = emulator.control
    fields = {
        "customfield": "name",
        "user": "user",
        "group": "name",
        "company": "cn",
        "contact": "title",
        "opportunity": "name",
        "case": "name",
        "task": "name",
        "note": "desc",
        "comment": "comment",
        "folder": "name",
        "file": "name",
        "linkedfile": "name",
    }
    for name, field in fields.items():
        record = state[name][0]
        ctl.update(name, record["id"], {field: f"{record.get(field) or ''} {suffix}"})


# --- point in time ----------------------------------------------------------------------------


def test_as_of_export_equals_the_server_state_at_that_moment(
    mirror_engine: sa.Engine, emulator: EmulatorServer, tmp_path: Path
) -> None:
    before_anything = tick()
    pull_ok(mirror_engine, emulator)
    s0, t0 = remote(emulator), tick()

    ctl = emulator.control
    ctl.update("contact", s0["contact"][0]["id"], {"title": "Head of Everything"})
    ctl.delete("note", s0["note"][0]["id"])
    ctl.create("company", {"cn": "Brand New Ltd"})
    ctl.update("folder", s0["folder"][0]["id"], {"name": "Archiv 2026"})  # text ids, too
    ctl.create("folder", {"name": "Neu", "parentId": s0["folder"][0]["id"], "is_dir": True})
    ctl.delete("file", int(s0["file"][0]["id"]))
    pull_ok(mirror_engine, emulator)
    s1, t1 = remote(emulator), tick()

    ctl.update("opportunity", s0["opportunity"][0]["id"], {"status": "Won", "value": "777.25"})
    ctl.delete("task", s0["task"][-1]["id"])
    pull_ok(mirror_engine, emulator)
    s2 = remote(emulator)
    assert s0 != s1 != s2

    for label, moment, expected in (("t0", t0, s0), ("t1", t1, s1), ("now", tick(), s2)):
        got = read_export_as_of(mirror_engine, tmp_path / label, moment)
        assert sans_lm(got) == sans_lm(expected), label
    assert all(
        recs == [] for recs in read_export_as_of(mirror_engine, tmp_path / "empty", before_anything).values()
    )

    # The export is also a backup: loaded into an empty mirror, it exports the same files.
    target = f"sqlite:///{tmp_path / 'from-export.sqlite3'}"
    counts = export_asof.restore_from_export(tmp_path / "t0", target)
    assert counts == {name: len(recs) for name, recs in s0.items()}
    export_now(target, tmp_path / "again")
    for name in resources.PULL_ORDER:
        assert (tmp_path / "again" / f"{name}.jsonl").read_bytes() == (
            tmp_path / "t0" / f"{name}.jsonl"
        ).read_bytes()
    with pytest.raises(bk.BackupError, match="already holds data"):
        export_asof.restore_from_export(tmp_path / "t0", target)


def read_export_as_of(engine: sa.Engine, directory: Path, moment: datetime) -> Export:
    export_asof.export_as_of(engine, directory, moment)
    return read_export(directory)


def test_restore_from_export_rejects_a_damaged_export(tmp_path: Path, emulator: EmulatorServer) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'src.sqlite3'}")
    upgrade(engine)
    pull_ok(engine, emulator)
    export_now(engine, tmp_path / "x")
    engine.dispose()
    target = f"sqlite:///{tmp_path / 'new' / 'dst.sqlite3'}"  # a directory that does not exist yet
    assert export_asof.restore_from_export(tmp_path / "x", target)["note"] > 0
    before = export_now(target, tmp_path / "before")

    # Bad files are refused before the target is touched, even with --force.
    (tmp_path / "x" / "note.jsonl").write_text('{"id": 1}\n{"id": 1}\n')
    with pytest.raises(bk.BackupError, match=r"id 1 appears more than once.*nothing was restored"):
        export_asof.restore_from_export(tmp_path / "x", target, force=True)
    (tmp_path / "x" / "note.jsonl").write_text('{"id": 1}\n{not json\n')
    with pytest.raises(bk.BackupError, match=r"note\.jsonl:2 is not JSON"):
        export_asof.restore_from_export(tmp_path / "x", target, force=True)
    assert export_now(target, tmp_path / "after") == before
    (tmp_path / "x" / "note.jsonl").unlink()
    with pytest.raises(bk.BackupError, match=r"note\.jsonl is missing"):
        export_asof.restore_from_export(tmp_path / "x", target)


# --- a backup while a pull writes ---------------------------------------------------------------


def test_backup_during_a_pull_restores_one_committed_state(
    mirror_engine: sa.Engine,
    emulator: EmulatorServer,
    tmp_path: Path,
    empty_database: Callable[[], str],
) -> None:
    """Each resource is pulled in its own transaction, parents first. A backup taken mid-pull must
    restore to exactly the source's export before the pull for some resources and after it for
    the others, with the 'after' ones a prefix of the pull order: one committed state."""
    pull_ok(mirror_engine, emulator)
    before = export_now(mirror_engine, tmp_path / "before")
    change_every_resource(emulator, remote(emulator), "v2")
    emulator.control.add_fault(method="GET", path=".*", kind="latency", latency_ms=150)

    puller = threading.Thread(target=pull_ok, args=(mirror_engine, emulator))
    puller.start()
    taken = []
    while puller.is_alive():
        taken.append(bk.backup(mirror_engine, tmp_path / "backups"))
        time.sleep(0.15)
    puller.join()
    emulator.control.clear_faults()
    after = export_now(mirror_engine, tmp_path / "after")
    order = list(resources.PULL_ORDER)
    assert all(before[n] != after[n] for n in order)  # every resource changed: phases are unambiguous

    # Restoring is the slow part: check at most five backups, spread over the pull.
    step = max(1, len(taken) // 4)
    cuts = []
    for i, backup in list(enumerate(taken))[::step]:
        target = empty_database()
        bk.restore(backup.path, target)
        got = export_now(target, tmp_path / f"restored-{i}")
        cut = next(
            (
                k
                for k in range(len(order) + 1)
                if all(got[n] == after[n] for n in order[:k]) and all(got[n] == before[n] for n in order[k:])
            ),
            None,
        )
        assert cut is not None, f"backup {i} is no committed state of the source"
        cuts.append(cut)
    assert cuts == sorted(cuts)
    assert any(0 < c < len(order) for c in cuts), f"no backup landed inside the pull: {cuts}"


# --- reports against a direct computation from the emulator's data ---------------------------


def _name(contact: dict[str, Any]) -> str:
    return f"{contact.get('fn') or ''} {contact.get('ln') or ''}".strip()


def _ref(value: Any) -> Any:
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _parts(value: Any) -> datetime | None:
    if not isinstance(value, dict):
        return None
    return datetime(
        value["y"], value["mo"], value["d"], value.get("h") or 0, value.get("mi") or 0, tzinfo=UTC
    )


def _ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def rows_of(engine: sa.Engine, name: str, **kw: Any) -> list[dict[str, Any]]:
    columns, rows = reports.run_report(engine, name, **kw)
    return [dict(zip(columns, row, strict=True)) for row in rows]


def test_every_report_matches_the_emulator_data(mirror_engine: sa.Engine, emulator: EmulatorServer) -> None:
    for value in ("0.1", "0.2", "1234567.0501"):  # whose float sum is not exact
        emulator.control.create(
            "opportunity", {"name": "odd cents", "status": "Open", "currency": "XTS", "value": value}
        )
    pull_ok(mirror_engine, emulator)
    s = remote(emulator)
    companies = {c["id"]: c for c in s["company"]}

    contacts = {r["contact_id"]: r for r in rows_of(mirror_engine, "contacts")}
    assert set(contacts) == {c["id"] for c in s["contact"]}
    for c in s["contact"]:
        row = contacts[c["id"]]
        assert row["name"] == _name(c)
        assert row["company"] == (companies.get(c["companyId"]) or {}).get("cn")
        assert row["email"] == (c["email"][0] if c["email"] else None)
        assert row["phone"] == (c["phones"][0]["no"] if c["phones"] else None)

    pipeline: dict[tuple[Any, Any], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for o in s["opportunity"]:
        pipeline[(o["status"], o["currency"])][0] += 1
        pipeline[(o["status"], o["currency"])][1] += Decimal(o["value"] or 0)
    got = {
        (r["status"], r["currency"]): [r["opportunities"], r["total_value"]]
        for r in rows_of(mirror_engine, "pipeline")
    }
    assert got.keys() == pipeline.keys()
    for key, (count, total) in pipeline.items():
        assert got[key] == [count, total], key  # exact, on SQLite too

    now = datetime.now(UTC)
    open_tasks = [t for t in s["task"] if not t["is_completed"] and not t["is_deleted"]]
    rows = rows_of(mirror_engine, "open-tasks")
    assert {r["task_id"] for r in rows} == {t["id"] for t in open_tasks}
    for t in open_tasks:
        row = next(r for r in rows if r["task_id"] == t["id"])
        due = _parts(t.get("endDate")) or _parts(t.get("startDate"))
        assert row["assigned_user_id"] == t["aUserId"] and row["due_at"] == due
        assert row["overdue"] == (due is not None and due < now)
    for user in {r["assigned_user"] for r in rows}:
        flags = [r["overdue"] for r in rows if r["assigned_user"] == user]
        assert flags == sorted(flags, reverse=True)  # overdue first

    activity = {(r["kind"], r["customer_id"]): r for r in rows_of(mirror_engine, "customer-activity")}
    customers = [("contact", c) for c in s["contact"]] + [("company", c) for c in s["company"]]
    assert set(activity) == {(kind, c["id"]) for kind, c in customers}
    for kind, c in customers:
        notes = [n for n in s["note"] if _ref(n["cust"]) == c["id"]]
        tasks = [t for t in s["task"] if _ref(t["cust"]) == c["id"] and not t["is_deleted"]]
        row = activity[(kind, c["id"])]
        assert row["notes"] == len(notes) and row["tasks"] == len(tasks)
        assert row["open_tasks"] == sum(1 for t in tasks if not t["is_completed"])
        assert row["last_note_at"] == max((_ts(n["ao"]) for n in notes), default=None)
        assert row["last_contacted_at"] == _ts(c.get("lc"))

    field_names = {f["id"]: f["name"] for f in s["customfield"]}
    expected = set()
    for name in ("contact", "company", "opportunity", "case"):
        for rec in s[name]:
            for key, value in (rec.get("cf") or {}).items():
                values = value if isinstance(value, list) else [value]
                if values:
                    text = (
                        ", ".join(v for v in values if v is not None)
                        if any(v is not None for v in values)
                        else None
                    )
                    expected.add((name, rec["id"], int(key), field_names.get(int(key)), text))
    got_cf = {
        (r["resource"], r["record_id"], r["custom_field_id"], r["field_name"], r["value"])
        for r in rows_of(mirror_engine, "custom-values")
    }
    assert got_cf == expected and len(expected) > 10

    since = tick()
    contact = s["contact"][3]
    emulator.control.update("contact", contact["id"], {"title": "Chief Tester"})
    pull_ok(mirror_engine, emulator)
    changes = rows_of(mirror_engine, "changes", since=since)
    assert [(r["resource"], r["record_id"], r["op"]) for r in changes] == [
        ("contact", contact["id"], "update")
    ]
    assert orjson.loads(changes[0]["changed"])["title"][1] == "Chief Tester"
    assert len(rows_of(mirror_engine, "changes")) > len(changes)


# --- full-text search ------------------------------------------------------------------------


def test_search_follows_the_pull(mirror_engine: sa.Engine, emulator: EmulatorServer) -> None:
    pull_ok(mirror_engine, emulator)
    customer = remote(emulator)["contact"][0]
    note = emulator.control.create(
        "note",
        {"desc": "Quarterly review: the Zanzibar account wants pricing", "type": "N", "cust": customer["id"]},
    )
    assert [h for h in reports.search(mirror_engine, "zanzibar") if h.kind == "note"] == []
    pull_ok(mirror_engine, emulator)
    hits = reports.search(mirror_engine, "ZANZIBAR pricing")
    assert [(h.kind, h.record_id) for h in hits] == [("note", note["id"])]
    assert "[Zanzibar]" in hits[0].snippet
    assert reports.search(mirror_engine, "zanzibar nonexistentword") == []  # every word must match
    assert any(
        h.kind == "contact" and h.record_id == customer["id"]
        for h in reports.search(mirror_engine, _name(customer))
    )

    emulator.control.update("note", note["id"], {"desc": "Quarterly review: the Mombasa account"})
    pull_ok(mirror_engine, emulator)
    assert reports.search(mirror_engine, "zanzibar") == []
    assert [(h.kind, h.record_id) for h in reports.search(mirror_engine, "mombasa")] == [("note", note["id"])]

    emulator.control.delete("note", note["id"])
    pull_ok(mirror_engine, emulator)
    assert reports.search(mirror_engine, "mombasa") == []
    assert reports.search(mirror_engine, '"AND OR * (') == []  # query syntax in user text is harmless
