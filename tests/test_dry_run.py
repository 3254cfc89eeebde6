"""Dry runs against the emulator, on SQLite and PostgreSQL.

`push --dry-run` prints exactly the requests the push then sends (method, path, body after the
merge), sends only GETs, and leaves the queue and the mirror byte for byte as they were.
`sync --dry-run` prints what a pull would insert, update and delete (and a mass deletion the
guard would hold), and writes nothing, not even a run row."""

from __future__ import annotations

import ast
import inspect
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from clevertim_sync import resources
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.errors import DatabaseFailure
from clevertim_sync.health import Pause
from clevertim_sync.mirror import pause as server_pause
from clevertim_sync.mirror import schema
from clevertim_sync.mirror.db import make_engine
from clevertim_sync.pull import pipeline
from clevertim_sync.pull.pipeline import plan_pull, pull
from clevertim_sync.settings import PushSettings, Settings
from clevertim_sync.writeback import dryrun, queue, worker  # (and so the queue's tables on the metadata)


def snapshot(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the mirror and the queue, in primary-key order."""
    out = {}
    with engine.connect() as conn:
        for table in schema.metadata.sorted_tables:
            order = list(table.primary_key.columns) or list(table.columns)
            out[table.name] = [tuple(r) for r in conn.execute(sa.select(table).order_by(*order))]
    return out


def _writes(emulator: Any) -> list[tuple[str, str, Any]]:
    return [(r["method"], r["path"], r["body"]) for r in emulator.control.requests() if r["method"] != "GET"]


def test_push_dry_run_prints_what_the_push_then_sends_and_changes_nothing(
    cli_runner: Any, migrated_database_url: str, emulator: Any, mirror_engine: sa.Engine
) -> None:
    run = cli_runner(migrated_database_url)
    run("sync", code=0)
    state = emulator.control.state(as_token="test-token")
    a, b = sorted(state["contact"], key=lambda r: r["id"])[:2]
    note = min(state["note"], key=lambda r: r["id"])
    # a: title and city here, city also in the web UI (conflict on city; title still goes out),
    # then a second edit coalesced into the same PUT.
    run("edit", "update", "contact", str(a["id"]), "--set", "title=Dry", "--set", "city=Here", code=0)
    run("edit", "update", "contact", str(a["id"]), "--set", "description=two edits, one PUT", code=0)
    emulator.control.update("contact", a["id"], {"city": "There"})
    # b: a value Clevertim already has: nothing to send.
    run("edit", "update", "contact", str(b["id"]), "--set", f"fn={b['fn']}", code=0)
    made = run("edit", "create", "company", "--set", "cn=Dry Run Ltd", code=0).output
    ref = made.split("local reference: ")[1].strip()
    run("edit", "create", "contact", "--set", "fn=Child", "--set", f"companyId={ref}", code=0)
    run("edit", "delete", "note", str(note["id"]), code=0)

    before = snapshot(mirror_engine)
    emulator.control.clear_requests()
    planned = orjson.loads(run("push", "--dry-run", "--json", code=0).output)
    text = run("push", "--dry-run", code=0).output
    assert snapshot(mirror_engine) == before  # queue and mirror untouched
    assert {r["method"] for r in emulator.control.requests()} == {"GET"}

    requests = [(r["method"], r["path"], r["body"]) for r in planned["requests"]]
    assert requests == [
        ("PUT", f"/api/contact/{a['id']}", {"title": "Dry", "description": "two edits, one PUT"}),
        ("POST", "/api/company", {"cn": "Dry Run Ltd"}),
        ("DELETE", f"/api/note/{note['id']}", None),
    ]
    assert planned["requests"][0]["items"] == [1, 2]
    assert "conflict on city" in planned["requests"][0]["note"]
    why = {n["item"]: n["why"] for n in planned["not_sent"]}
    assert why[3].startswith("nothing to send")
    assert why[5].startswith("waiting: ") and ref in why[5]
    assert "push --dry-run: a push now would send 3 request(s); nothing was sent or changed" in text
    assert f"  PUT /api/contact/{a['id']}  (queue items 1, 2)" in text
    assert '    {"title":"Dry","description":"two edits, one PUT"}' in text

    emulator.control.clear_requests()
    run("push", code=0)
    sent = _writes(emulator)
    company_id = orjson.loads(run("queue", "show", "4", "--json").output)["remote_id"]
    # The real push sends exactly the planned requests, plus the child whose parent it created.
    assert sorted(sent, key=repr) == sorted(
        [*requests, ("POST", "/api/contact", {"fn": "Child", "companyId": company_id})], key=repr
    )


def test_push_dry_run_sends_nothing_while_paused(
    cli_runner: Any, migrated_database_url: str, emulator: Any, mirror_engine: sa.Engine
) -> None:
    run = cli_runner(migrated_database_url)
    run("sync", code=0)
    cid = min(r["id"] for r in emulator.control.state(as_token="test-token")["contact"])
    run("edit", "update", "contact", str(cid), "--set", "title=Later", code=0)
    emulator.control.add_fault(method="PUT", kind="status", status=503, retry_after=3600)
    run("push", code=0)  # the server asks to wait an hour
    emulator.control.clear_requests()
    out = run("push", "--dry-run", code=0).output
    assert "a push now would send nothing: paused until" in out
    assert emulator.control.requests() == []


def test_push_dry_run_compares_values_by_meaning_as_the_push_does(
    cli_runner: Any, migrated_database_url: str, emulator: Any, mirror_engine: sa.Engine
) -> None:
    # Clevertim spells a note's customer as a list ([33]); the edit names it as one id (33): the
    # same value, so neither the push nor its dry run sends anything (the dry run used to merge
    # without the resource's properties and planned a PUT the push never sent).
    run = cli_runner(migrated_database_url)
    note = min(
        (r for r in emulator.control.state(as_token="test-token")["note"] if isinstance(r.get("cust"), int)),
        key=lambda r: r["id"],
    )
    emulator.control.update("note", note["id"], {"cust": [note["cust"]]})
    run("sync", code=0)
    run("edit", "update", "note", str(note["id"]), "--set", f"cust={note['cust']}", code=0)
    planned = orjson.loads(run("push", "--dry-run", "--json", code=0).output)
    assert planned["requests"] == []
    assert planned["not_sent"][0]["why"].startswith("nothing to send: Clevertim already has")
    emulator.control.clear_requests()
    run("push", code=0)
    assert _writes(emulator) == []


def test_sync_dry_run_prints_inserts_updates_deletes_and_the_guard_and_writes_nothing(
    cli_runner: Any, migrated_database_url: str, emulator: Any, mirror_engine: sa.Engine
) -> None:
    run = cli_runner(migrated_database_url)
    run("sync", code=0)
    ui = emulator.control
    contacts = sorted(ui.state(as_token="test-token")["contact"], key=lambda r: r["id"])
    ui.update("contact", contacts[0]["id"], {"title": "New title", "city": "Oslo"})
    ui.update("contact", contacts[1]["id"], {})  # a touch
    ui.delete("contact", contacts[2]["id"])
    made = ui.create("contact", {"fn": "Fresh", "ln": "Face"})
    # Every note but one deleted: the guard holds it.
    notes = sorted(r["id"] for r in ui.state(as_token="test-token")["note"])
    for nid in notes[1:]:
        ui.delete("note", nid)

    before = snapshot(mirror_engine)
    emulator.control.clear_requests()
    result = run("sync", "--dry-run", "--json", code=1)  # the held resource: exit 1, as a sync would
    assert snapshot(mirror_engine) == before  # not even a run row
    assert {r["method"] for r in emulator.control.requests()} == {"GET"}
    plans = {p["resource"]: p for p in orjson.loads(result.output)}
    c = plans["contact"]
    assert c["inserts"] == [made["id"]]
    # The web-UI edit, and the contacts whose list of notes the deletions changed.
    assert c["updates"].pop(str(contacts[0]["id"])) == ["city", "title"]
    assert c["updates"] and set(map(tuple, c["updates"].values())) == {("notes",)}
    assert c["deletes"] == [contacts[2]["id"]]
    assert c["touched"] == 1 and c["held"] is None
    assert plans["note"]["deletes"] == notes[1:] and "--allow-mass-delete" in plans["note"]["held"]
    assert plans["company"]["inserts"] == [] and plans["company"]["held"] is None

    text = run("sync", "--dry-run", "-r", "contact", "-r", "note", code=1).output
    assert "sync --dry-run: what a pull would do now; nothing was written" in text
    updates = len(c["updates"]) + 1
    assert (
        f"  contact: {c['listed']} listed, 1 to insert, {updates} to update, 1 to delete, 1 touched" in text
    )
    assert f" {contacts[0]['id']} (city, title)" in text
    assert "    HELD by the mass-delete guard" in text
    assert "  company" not in text
    assert snapshot(mirror_engine) == before

    # The real sync does what the dry run said.
    run("sync", "-r", "contact", code=0)
    with mirror_engine.connect() as conn:
        h = schema.history
        last_run = sa.select(sa.func.max(schema.runs.c.id)).scalar_subquery()
        ops = conn.execute(
            sa.select(h.c.record_id, h.c.op).where(h.c.resource == "contact", h.c.run_id == last_run)
        ).all()
    said = [(made["id"], "insert"), (contacts[0]["id"], "update"), (contacts[2]["id"], "delete")]
    said += [(int(rid), "update") for rid in c["updates"]]
    assert sorted(ops) == sorted(said)


def test_push_dry_run_of_a_lost_create_adopts_without_a_request_or_plans_the_resend(
    cli_runner: Any, migrated_database_url: str, emulator: Any, mirror_engine: sa.Engine, tmp_path: Path
) -> None:
    config = tmp_path / "quick-retry.toml"
    config.write_text("[push]\nbackoff_base = 0.001\nbackoff_max = 0.001\n")  # due again at once
    run = cli_runner(migrated_database_url, CLEVERTIM_SYNC_CONFIG=str(config))
    run("sync", code=0)
    run("edit", "create", "company", "--set", "cn=Lost Answer Ltd", code=0)
    emulator.control.add_fault(method="POST", path="^/company$", kind="lost_response", times=1)
    run("push", code=0)  # the POST landed, its answer did not: the item is to be reconciled
    assert orjson.loads(run("queue", "show", "1", "--json").output)["state"] == "reconcile"
    (made,) = [r for r in emulator.control.state()["company"] if r.get("cn") == "Lost Answer Ltd"]
    before = snapshot(mirror_engine)
    emulator.control.clear_requests()
    planned = orjson.loads(run("push", "--dry-run", "--json", code=0).output)
    assert planned["requests"] == []
    assert planned["not_sent"] == [
        {
            "item": 1,
            "resource": "company",
            "op": "create",
            "why": f"its lost answer is found: company {made['id']} would be adopted, no request",
        }
    ]
    assert {r["method"] for r in emulator.control.requests()} == {"GET"}
    assert snapshot(mirror_engine) == before
    # Gone from the server meanwhile: the dry run plans the resend, with the body sent before.
    emulator.control.delete("company", made["id"])
    planned = orjson.loads(run("push", "--dry-run", "--json", code=0).output)
    (request,) = planned["requests"]
    assert (request["method"], request["path"], request["body"]) == (
        "POST",
        "/api/company",
        {"cn": "Lost Answer Ltd"},
    )
    assert request["note"] == "sent again: no record matches the earlier attempt"
    assert snapshot(mirror_engine) == before


# --- each dry run is its command's own plan, stopped before it writes (issue 19) -------------------


def _calls(module: Any, function: str) -> set[str]:
    """The names `function` of `module` calls (`f(...)` and `x.f(...)` alike)."""

    tree = ast.parse(inspect.getsource(module))
    (fn,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function]
    names = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Call):
            f = node.func
            names.add(f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else "")
    return names


def test_the_dry_runs_share_their_commands_code() -> None:
    # The pull and `sync --dry-run`: the same fetcher, and one diff-and-guard (`_diff`), the only
    # place a listing is diffed; only the pull applies.
    assert {"_Fetcher", "_diff"} <= _calls(pipeline, "plan_pull")
    assert "_Fetcher" in _calls(pipeline, "pull") and "_diff" in _calls(pipeline, "_pull_resource")
    assert "ListingDiff" in _calls(pipeline, "_diff")
    assert "ListingDiff" not in _calls(pipeline, "plan_pull") | _calls(pipeline, "_pull_resource")
    # The push and `push --dry-run`: the worker's plan of each unit; the dry run sends nothing.
    assert "plan_unit" in _calls(worker, "_process") and "plan_unit" in _calls(dryrun, "_plan_unit")
    sent = {"create", "update", "delete", "get", "list", "merge"}
    assert not sent & (_calls(dryrun, "_plan_unit") | _calls(dryrun, "plan_push"))


def test_sync_dry_run_stops_where_the_pull_would(mirror_engine: sa.Engine, emulator: Any) -> None:
    first, *rest = resources.PULL_ORDER
    emulator.control.add_fault(kind="redirect", path=f"^/{first}$")
    with ClevertimClient(emulator.base_url, "test-token", read_retries=0) as client:
        plans = {p.resource: p for p in plan_pull(mirror_engine, client)}
        report = pull(mirror_engine, client)
    # A redirect stops a pull at the first listing; its dry run stops there too.
    assert report.failed == [first] and report.skipped == rest
    assert plans[first].error and all((plans[n].error or "").startswith("skipped") for n in rest)


# --- push --dry-run is the push's own plan, on a read-only connection (issue 19) ------------------

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
TOKEN = "test-token"
# What writes, or takes a write lock, in the statements of SQLite and PostgreSQL.
WRITES = re.compile(
    r"^\s*(INSERT|UPDATE|DELETE|REPLACE|BEGIN IMMEDIATE|CREATE|DROP|ALTER)\b|\bFOR UPDATE\b", re.IGNORECASE
)


def _push_settings() -> Settings:
    return Settings(push=PushSettings(concurrency=2, backoff_base=10.0))


def _hand_insert(engine: sa.Engine, resource: str, op: str, target_id: int | None, fields: str) -> int:
    """A row INSERTed by hand (the SQL way in): validated only when a push claims it."""
    insert = "INSERT INTO writeback_queue (resource, op, target_id, fields) VALUES (:r, :o, :t, :f)"
    with engine.begin() as conn:
        conn.execute(sa.text(insert), {"r": resource, "o": op, "t": target_id, "f": fields})
        return int(conn.execute(sa.text("SELECT max(id) FROM writeback_queue")).scalar_one())


def _queue_of_every_kind(engine: sa.Engine, emulator: Any) -> dict[str, Any]:
    """A queue a push takes in several claims: a coalesced update, an invalid row that keeps a
    later edit of its record back until a claim fails it, a parent create and its waiting child,
    a delete. Returns the records and item ids it names."""
    state = emulator.control.state(as_token=TOKEN)
    a, b = sorted(state["contact"], key=lambda r: r["id"])[:2]
    note = min(state["note"], key=lambda r: r["id"])
    queue.enqueue_update(engine, "contact", a["id"], {"title": "Dry"}, now=T0)
    queue.enqueue_update(engine, "contact", a["id"], {"description": "two edits, one PUT"}, now=T0)
    bad = _hand_insert(engine, "contact", "update", b["id"], "not json")
    queue.enqueue_update(engine, "contact", b["id"], {"title": "After a bad edit"}, now=T0)
    parent = queue.enqueue_create(engine, "company", {"cn": "Dry Run Ltd"}, now=T0).id
    child = queue.enqueue_create(
        engine, "contact", {"fn": "Child", "companyId": f"local:company:{parent}"}, now=T0
    ).id
    queue.enqueue_delete(engine, "note", note["id"], now=T0)
    return {"a": a, "b": b, "note": note, "bad": bad, "parent": parent, "child": child}


def _planned(plan: dryrun.PushPlan) -> list[tuple[str, str, Any]]:
    return [(r.method, r.path, r.body) for r in plan.requests]


def test_push_dry_run_plans_in_batches_exactly_what_the_push_then_sends(
    pulled_engine: sa.Engine, api_client: ClevertimClient, emulator: Any
) -> None:
    # Batches of two units: the invalid row fails in the first, the edit behind it is planned in a
    # later one (as the push's next claim takes it), the child waits for its parent's id.
    engine = pulled_engine
    made = _queue_of_every_kind(engine, emulator)
    plan = dryrun.plan_push(engine, api_client, _push_settings(), now=T0, batch=2)
    emulator.control.clear_requests()
    report = worker.push(engine, api_client, _push_settings(), now=T0)
    a, b, note = made["a"], made["b"], made["note"]
    assert sorted(_planned(plan), key=repr) == sorted(
        [
            ("PUT", f"/api/contact/{a['id']}", {"title": "Dry", "description": "two edits, one PUT"}),
            ("PUT", f"/api/contact/{b['id']}", {"title": "After a bad edit"}),
            ("POST", "/api/company", {"cn": "Dry Run Ltd"}),
            ("DELETE", f"/api/note/{note['id']}", None),
        ],
        key=repr,
    )
    assert {n.item for n in plan.not_sent} == {made["bad"], made["child"]}
    # The push sends what was planned, plus the child once its parent has an id.
    company_id = queue.get_item(engine, made["parent"]).remote_id
    child = ("POST", "/api/contact", {"fn": "Child", "companyId": company_id})
    assert sorted(_writes(emulator), key=repr) == sorted([*_planned(plan), child], key=repr)
    assert report.writes == 5 and queue.get_item(engine, made["bad"]).state == "failed"


def test_push_dry_run_writes_nothing_and_begins_no_write_transaction(
    pulled_engine: sa.Engine, api_client: ClevertimClient, emulator: Any
) -> None:
    engine = pulled_engine
    # A create whose answer was lost (reconciled by a listing, and a read of the queue).
    lost = queue.enqueue_create(engine, "company", {"cn": "Lost Answer Ltd"}, now=T0).id
    emulator.control.add_fault(method="POST", path="^/company$", kind="lost_response", times=1)
    worker.push(engine, api_client, _push_settings(), now=T0)
    assert queue.get_item(engine, lost).state == "reconcile"
    made = _queue_of_every_kind(engine, emulator)
    with engine.begin() as conn:  # the child as a push left it: waiting (the dry run wakes it)
        waiting = sa.text("UPDATE writeback_queue SET state = 'waiting' WHERE id = :i")
        conn.execute(waiting, {"i": made["child"]})
    # An outage's pause, over: a push's first success would lift it.
    server_pause.put(engine, Pause(T0 - timedelta(minutes=5), 2, "outage"), T0 - timedelta(minutes=10))
    before = snapshot(engine)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        plan = dryrun.plan_push(engine, api_client, _push_settings(), now=T0 + timedelta(hours=1), batch=2)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert [s for s in statements if WRITES.search(s)] == []
    assert any("writeback_queue" in s for s in statements)  # it did read the queue
    assert snapshot(engine) == before
    assert before["writeback_pause"] and before["writeback_queue"]
    assert len(plan.requests) == 4
    why = {n.item: n.why for n in plan.not_sent}
    assert why[lost].startswith("its lost answer is found")
    assert why[made["child"]].startswith("waiting: companyId waits for")


def test_push_dry_run_reports_invalid_and_waiting_items_with_the_reasons_the_push_records(
    pulled_engine: sa.Engine, api_client: ClevertimClient, emulator: Any
) -> None:
    engine = pulled_engine
    a, b = sorted(emulator.control.state(as_token=TOKEN)["contact"], key=lambda r: r["id"])[:2]
    later = queue.enqueue_create(engine, "company", {"cn": "Later Ltd"}, now=T0).id
    with engine.begin() as conn:  # not due yet: its child waits for an id it does not have
        conn.execute(
            sa.text("UPDATE writeback_queue SET next_attempt_at = :t WHERE id = :i"),
            {"t": T0 + timedelta(hours=1), "i": later},
        )
    kid = {"fn": "Kid", "companyId": f"local:company:{later}"}
    waits = queue.enqueue_create(engine, "contact", kid).id
    not_json = _hand_insert(engine, "contact", "update", a["id"], "not json")
    no_such = _hand_insert(engine, "contact", "update", b["id"], '{"shoe": 9}')
    gone = queue.enqueue_create(engine, "company", {"cn": "Gone Ltd"}).id
    queue.cancel(engine, gone)
    orphan_fields = orjson.dumps({"fn": "O", "companyId": f"local:company:{gone}"}).decode()
    orphan = _hand_insert(engine, "contact", "create", None, orphan_fields)
    plan = dryrun.plan_push(engine, api_client, _push_settings(), now=T0)
    emulator.control.clear_requests()
    worker.push(engine, api_client, _push_settings(), now=T0)
    assert plan.requests == [] and _writes(emulator) == []
    why = {n.item: n.why for n in plan.not_sent}
    assert sorted(why) == sorted([later, waits, not_json, no_such, orphan])
    assert why[later] == f"not due before {(T0 + timedelta(hours=1)).isoformat()}"
    # Each reason is the one the push then records on the item (its last_error).
    recorded = {i: queue.get_item(engine, i) for i in (waits, not_json, no_such, orphan)}
    assert recorded[waits].state == "waiting"
    told = recorded[waits].last_error
    assert why[waits] == f"waiting: {told} (sent in the same push once that create has its id)"
    assert f"companyId waits for local:company:{later} (pending)" in why[waits]
    for item in (not_json, no_such, orphan):
        assert recorded[item].state == "failed"
        assert why[item] == f"would fail: {recorded[item].last_error}"
    assert why[not_json].startswith("would fail: invalid edit, not sent: fields is not valid JSON")
    assert "shoe" in why[no_such]
    assert why[orphan].startswith("would fail: not sent: companyId points at") and "cancelled" in why[orphan]


def _read_only(url: str) -> str:
    """The same database, opened so that nothing can be written: SQLite read-only (mode=ro),
    PostgreSQL every transaction READ ONLY."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"sqlite:///file:{parsed.database}?mode=ro&uri=true"
    options = {"options": "-c default_transaction_read_only=on"}
    return parsed.update_query_dict(options).render_as_string(hide_password=False)


def test_push_dry_run_on_a_read_only_mirror_gives_the_plan_of_a_writable_one(
    cli_runner: Any, migrated_database_url: str, mirror_engine: sa.Engine, emulator: Any
) -> None:
    run = cli_runner(migrated_database_url)
    run("sync", code=0)
    _queue_of_every_kind(mirror_engine, emulator)
    planned = orjson.loads(run("push", "--dry-run", "--json", code=0).output)
    read_only = _read_only(migrated_database_url)
    engine = make_engine(read_only)
    try:  # the mirror is read-only indeed
        with pytest.raises((sa.exc.DBAPIError, DatabaseFailure)), engine.begin() as conn:
            conn.execute(sa.text("UPDATE writeback_queue SET attempts = 1"))
    finally:
        engine.dispose()
    emulator.control.clear_requests()
    on_read_only = orjson.loads(cli_runner(read_only)("push", "--dry-run", "--json", code=0).output)
    assert on_read_only == planned and len(planned["requests"]) == 4
    assert {r["method"] for r in emulator.control.requests()} == {"GET"}
