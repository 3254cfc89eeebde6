"""A record's versions: the <table>_versions views (migration 0007) and `clevertim-sync history`
and `revert --to vN | TIME | history id`, on SQLite and PostgreSQL.

One opportunity lives a whole life through the emulator's web UI and real pulls: inserted,
updated twice, touched (only lm moves: no version), deleted, re-inserted with the same id. The
view's `valid_from <= t AND (valid_to IS NULL OR valid_to > t)` must give back, at every instant,
exactly the record the mirror held then."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from clevertim_sync.mirror import schema
from clevertim_sync.mirror.store import load_record
from clevertim_sync.mirror.types import UtcDateTime

OPP = 9001
_TS = UtcDateTime()


def _life(run: Any, emulator: Any, engine: sa.Engine) -> list[dict[str, Any] | None]:
    """The opportunity's life; returns what the mirror held after each pull."""
    ui = emulator.control
    held: list[dict[str, Any] | None] = []

    def pulled() -> None:
        run("sync", "-r", "opportunity", code=0)
        with engine.connect() as conn:
            held.append(load_record(conn, "opportunity", OPP))
        time.sleep(0.002)  # each pull's instant strictly later than the last

    ui.create("opportunity", {"id": OPP, "name": "Big deal", "value": "100", "currency": "EUR"})
    pulled()
    ui.update("opportunity", OPP, {"name": "Bigger deal"})
    pulled()
    ui.update("opportunity", OPP, {"value": "250", "status": "Won"})
    pulled()
    ui.update("opportunity", OPP, {})  # a touch: only lm moves
    pulled()
    ui.delete("opportunity", OPP)
    pulled()
    ui.create("opportunity", {"id": OPP, "name": "Back again", "value": "5", "currency": "EUR"})
    pulled()
    return held


def _history_times(engine: sa.Engine) -> list[datetime]:
    h = schema.history
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(h.c.at).where(h.c.resource == "opportunity", h.c.record_id == OPP).order_by(h.c.id)
            ).scalars()
        )


def _as_of(engine: sa.Engine, at: datetime) -> list[Any]:
    query = sa.text(
        "SELECT version, op, raw FROM opportunities_versions WHERE record_id = :rid "
        "AND valid_from <= :t AND (valid_to IS NULL OR valid_to > :t)"
    ).bindparams(sa.bindparam("t", type_=_TS))
    with engine.connect() as conn:
        return list(conn.execute(query, {"rid": OPP, "t": at}))


def test_the_versions_view_gives_the_record_as_it_was_at_any_instant(
    cli_runner: Any, migrated_database_url: str, emulator: Any, mirror_engine: sa.Engine
) -> None:
    run = cli_runner(migrated_database_url)
    run("sync", code=0)
    held = _life(run, emulator, mirror_engine)
    # The touch (4th pull) wrote no version: 5 versions for 6 pulls.
    times = _history_times(mirror_engine)
    assert len(times) == 5
    with mirror_engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT record_id, version, valid_from, valid_to, op, origin, run_id, queue_item_id, raw "
                "FROM opportunities_versions WHERE record_id = :rid ORDER BY version"
            ).columns(valid_from=_TS, valid_to=_TS),
            {"rid": OPP},
        ).all()
        runs = conn.execute(sa.select(schema.runs.c.id).order_by(schema.runs.c.id)).scalars().all()
    assert [r.version for r in rows] == [1, 2, 3, 4, 5]
    assert [r.op for r in rows] == ["insert", "update", "update", "delete", "insert"]
    assert {r.origin for r in rows} == {"pull"} and {r.queue_item_id for r in rows} == {None}
    assert [r.run_id for r in rows] == [runs[1], runs[2], runs[3], runs[5], runs[6]]
    assert [r.valid_from for r in rows] == times
    assert [r.valid_to for r in rows] == [*times[1:], None]
    # At every version's start, and between versions, the view gives exactly that version.
    expected = [held[0], held[1], held[2], held[4], held[5]]  # held[3]: after the touch
    for i, (at, record) in enumerate(zip(times, expected, strict=True)):
        later = at + (times[i + 1] - at) / 2 if i + 1 < len(times) else at + (at - times[0])
        for probe in (at, later):
            (row,) = _as_of(mirror_engine, probe)
            assert row.version == i + 1
            if row.op == "delete":
                assert record is None and orjson.loads(row.raw)["name"] == "Bigger deal"
            else:
                got = orjson.loads(row.raw)
                assert record is not None
                assert {k: got.get(k) for k in ("name", "value", "status")} == {
                    k: record.get(k) for k in ("name", "value", "status")
                }
    assert _as_of(mirror_engine, times[0] - (times[1] - times[0])) == []
    # Every resource has its view, on both databases.
    with mirror_engine.connect() as conn:
        for table in ("contacts", "companies", "notes", "tasks", "cases", "comments", "users"):
            conn.execute(sa.text(f"SELECT * FROM {table}_versions LIMIT 1")).all()


def test_a_local_write_is_a_version_with_its_queue_item(
    cli_runner: Any, migrated_database_url: str, emulator: Any, mirror_engine: sa.Engine
) -> None:
    run = cli_runner(migrated_database_url)
    run("sync", code=0)
    cid = min(r["id"] for r in emulator.control.state(as_token="test-token")["contact"])
    run("edit", "update", "contact", str(cid), "--set", "title=Local title", code=0)
    run("push", code=0)
    with mirror_engine.connect() as conn:
        last = conn.execute(
            sa.text(
                "SELECT version, origin, queue_item_id, run_id, changed FROM contacts_versions "
                "WHERE record_id = :rid ORDER BY version DESC"
            ),
            {"rid": cid},
        ).first()
    assert last is not None
    assert (last.version, last.origin, last.queue_item_id, last.run_id) == (2, "local", 1, None)
    assert orjson.loads(last.changed)["title"][1] == "Local title"


def test_history_lists_versions_and_revert_takes_a_number_a_time_or_a_history_id(
    cli_runner: Any, migrated_database_url: str, emulator: Any, mirror_engine: sa.Engine
) -> None:
    run = cli_runner(migrated_database_url)
    run("sync", code=0)
    _life(run, emulator, mirror_engine)
    times = _history_times(mirror_engine)
    out = run("history", "opportunity", str(OPP), code=0).output
    lines = out.splitlines()
    assert lines[0] == f"opportunity {OPP}: 5 version(s)"
    assert lines[1].split()[0] == "v1" and lines[1].endswith("created")
    assert "pull (run " in lines[1]
    assert lines[2].split()[0] == "v2" and 'name: "Big deal" -> "Bigger deal"' in lines[2]
    assert lines[3].split()[0] == "v3" and 'value: "100" -> "250"' in lines[3]
    assert lines[4].split()[0] == "v4" and lines[4].endswith("deleted")
    assert lines[5].split()[0] == "v5" and lines[5].endswith("created again")
    assert f"clevertim-sync revert opportunity {OPP} --to v4" in lines[-1]
    as_json = orjson.loads(run("history", "opportunity", str(OPP), "--json", code=0).output)
    assert [v["version"] for v in as_json] == [1, 2, 3, 4, 5]
    assert as_json[1]["changed"] == {"name": ["Big deal", "Bigger deal"]}
    assert as_json[1]["raw"]["name"] == "Bigger deal" and as_json[4]["valid_to"] is None
    assert "never held it" in run("history", "opportunity", "424242", code=0).output
    assert run("history", "nonsense", "1", code=2).exit_code == 2

    # --to v2: the second version, by number.
    queued = run("revert", "opportunity", str(OPP), "--to", "v2", code=0).output
    assert '"name":"Bigger deal"' in queued and '"value":"100"' in queued
    run("queue", "cancel", queued.split()[2].rstrip(":"), code=0)
    # --to a time between v3 and v4: as it was then (v3), so nothing but the name differs.
    between = times[2] + (times[3] - times[2]) / 2
    queued = run("revert", "opportunity", str(OPP), "--to", between.isoformat(), code=0).output
    assert '"name":"Bigger deal"' in queued and '"value":"250"' in queued and '"status":"Won"' in queued
    run("queue", "cancel", queued.split()[2].rstrip(":"), code=0)
    # --to a time while it was deleted: a delete.
    gone = times[3] + (times[4] - times[3]) / 2
    queued = run("revert", "opportunity", str(OPP), "--to", gone.isoformat().replace("+00:00", "Z"), code=0)
    assert f"delete opportunity {OPP}" in queued.output
    run("queue", "cancel", queued.output.split()[2].rstrip(":"), code=0)
    # --to N is the history id, as before: v1's history id means v1.
    history_id = as_json[0]["history_id"]
    queued = run("revert", "opportunity", str(OPP), "--to", str(history_id), code=0).output
    assert '"name":"Big deal"' in queued
    # Refusals: no such number, a time before the first version, neither.
    assert (
        "has no version v9; it has v1 to v5"
        in run("revert", "opportunity", str(OPP), "--to", "v9", code=2).output
    )
    early = (times[0] - (times[1] - times[0])).isoformat()
    assert "was not in the mirror yet" in run("revert", "opportunity", str(OPP), "--to", early, code=2).output
    assert (
        "neither a history id" in run("revert", "opportunity", str(OPP), "--to", "yesterday", code=2).output
    )
