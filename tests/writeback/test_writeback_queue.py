"""The writeback queue on a real database (SQLite file and PostgreSQL): validation of every way in,
the SQL INSERT path, claiming with a lease (two workers never own one item), FIFO per record,
coalescing, dependent creates, and the people's commands (retry, cancel, resolve)."""

from __future__ import annotations

import ast
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from support.ownership import touching

from clevertim_sync.errors import EditRejected, QueueItemError
from clevertim_sync.mirror.db import make_engine, reading
from clevertim_sync.writeback import claims, outbox, queue
from clevertim_sync.writeback.fold import Fold, fold_many
from clevertim_sync.writeback.tables import writeback_queue as Q

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _seeded(eng: Engine) -> Engine:
    """Two contacts and a company for the queue's items to point at."""
    with eng.begin() as conn:
        for rid, fn in ((1, "Ada"), (2, "Grace")):
            record = {"id": rid, "fn": fn, "ln": "X", "title": "Eng", "email": []}
            fold_many(conn, [Fold("contact", record, "insert", None)])
        fold_many(conn, [Fold("company", {"id": 10, "cn": "Acme"}, "insert", None)])
    return eng


@pytest.fixture
def seeded_engine(mirror_engine: Engine) -> Engine:
    return _seeded(mirror_engine)


@pytest.fixture
def seeded_sqlite_engine(sqlite_mirror_engine: Engine) -> Engine:
    """Validation does not depend on the database: its many cases run on SQLite only."""
    return _seeded(sqlite_mirror_engine)


def rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(Q).order_by(Q.c.id)).mappings()]


def claim(engine: Engine, now: datetime = T0, worker: str = "w1", limit: int = 50) -> list[outbox.Claimed]:
    return claims.claim(engine, worker=worker, now=now, lease=60, limit=limit)


@pytest.mark.parametrize(
    ("op", "resource", "target", "fields", "needle"),
    [
        ("create", "widget", None, {"x": 1}, "unknown resource"),
        ("update", "contact", 1, {"shoe_size": 9}, "no property"),
        ("update", "contact", 1, {"notes": [1]}, "read-only"),
        ("update", "contact", 1, {"fn": 7}, "must be a string"),
        ("create", "contact", None, {"title": "CEO"}, "needs fn or ln"),
        ("update", "comment", 1, {"comment": "x"}, "cannot be updated"),
        ("update", "user", 1, {"user": "x"}, "read-only in the Clevertim API"),
        ("delete", "group", 1, None, "read-only in the Clevertim API"),
        ("update", "contact", 999, {"fn": "x"}, "not in the mirror"),
        ("create", "contact", None, {"fn": "A", "companyId": "local:company:99"}, "no queued create"),
    ],
)
def test_invalid_edits_are_refused_and_nothing_is_stored(
    seeded_sqlite_engine: Engine, op: str, resource: str, target: int | None, fields: Any, needle: str
) -> None:
    engine = seeded_sqlite_engine

    def enqueue() -> None:
        if op == "create":
            queue.enqueue_create(engine, resource, fields)
        elif op == "update":
            queue.enqueue_update(engine, resource, target or 0, fields)
        else:
            queue.enqueue_delete(engine, resource, target or 0)

    with pytest.raises(EditRejected) as info:
        enqueue()
    assert any(needle in p for p in info.value.problems), info.value.problems
    assert "nothing was queued" in str(info.value)
    assert rows(engine) == []


def test_a_local_ref_must_point_at_the_right_kind_of_create(seeded_engine: Engine) -> None:
    person = queue.enqueue_create(seeded_engine, "contact", {"fn": "Ann"})
    with pytest.raises(EditRejected, match="must point at a company"):
        queue.enqueue_create(seeded_engine, "contact", {"fn": "Bob", "companyId": person.local_ref})
    # A note's cust may point at a contact or a company.
    note = queue.enqueue_create(seeded_engine, "note", {"desc": "hi", "cust": person.local_ref})
    assert note.fields["cust"] == person.local_ref


def test_update_records_the_mirror_record_as_base(seeded_engine: Engine) -> None:
    item = queue.enqueue_update(seeded_engine, "contact", 1, {"title": "CTO"})
    row = rows(seeded_engine)[0]
    assert (item.state, item.op, item.target_id) == ("pending", "update", 1)
    assert orjson.loads(row["base_record"])["title"] == "Eng"
    assert row["source"] == "python"
    assert row["base_hash"] is None  # never read, so no longer written


def test_sql_insert_path_is_validated_when_claimed(seeded_engine: Engine) -> None:
    insert = "INSERT INTO writeback_queue (resource, op, target_id, fields) VALUES "
    statements = [
        insert + """('contact', 'update', 1, '{"title": "CTO"}')""",
        insert + """('contact', 'update', 2, '{"shoe": 9}')""",
        insert + """('contact', 'update', NULL, '{"fn": "x"}')""",
        insert + """('user', 'create', NULL, '{"user": "x"}')""",
        insert + """('contact', 'create', NULL, 'not json')""",
        insert + """('contact', 'merge', NULL, '{}')""",
    ]
    with seeded_engine.begin() as conn:
        for sql in statements:
            conn.exec_driver_sql(sql)
    units = claim(seeded_engine)
    assert [u.id for u in units] == [1]
    assert units[0].base is not None and units[0].base["title"] == "Eng"  # mirror as the base
    by_id = {r["id"]: r for r in rows(seeded_engine)}
    assert by_id[1]["state"] == "in_flight"
    expected = {
        2: "no property",
        3: "needs target_id",
        4: "read-only",
        5: "not valid JSON",
        6: "unknown operation",
    }
    for item_id, needle in expected.items():
        assert by_id[item_id]["state"] == "failed"
        assert needle in by_id[item_id]["last_error"], by_id[item_id]["last_error"]


def test_fifo_per_record_and_pending_updates_coalesce(seeded_engine: Engine) -> None:
    a = queue.enqueue_update(seeded_engine, "contact", 1, {"title": "A", "fn": "Ada2"})
    b = queue.enqueue_update(seeded_engine, "contact", 1, {"title": "B"})
    d = queue.enqueue_delete(seeded_engine, "contact", 1)
    after = queue.enqueue_update(seeded_engine, "contact", 1, {"title": "C"})
    other = queue.enqueue_update(seeded_engine, "contact", 2, {"title": "Z"})
    units = {u.id: u for u in claim(seeded_engine)}
    assert set(units) == {a.id, other.id}
    assert units[a.id].followers == [b.id]
    assert units[a.id].fields == {"title": "B", "fn": "Ada2"}
    # The delete and the update after it wait for the record's earlier items.
    assert claim(seeded_engine) == []
    with seeded_engine.begin() as conn:
        outbox.record(conn, [outbox.Outcome(unit=units[a.id], state=outbox.DONE)], T0)
    assert [u.id for u in claim(seeded_engine)] == [d.id]
    states = {r["id"]: r["state"] for r in rows(seeded_engine)}
    assert states[b.id] == "done" and states[after.id] == "pending"


def test_an_expired_lease_is_reclaimed_for_reconciliation(seeded_engine: Engine) -> None:
    queue.enqueue_create(seeded_engine, "contact", {"fn": "Ann"})
    (first,) = claim(seeded_engine)
    assert not first.reconcile and first.sent == {"fn": "Ann"} and first.max_id_seen == 10
    assert claim(seeded_engine, T0 + timedelta(seconds=30), worker="w2") == []  # lease still held
    (again,) = claim(seeded_engine, T0 + timedelta(seconds=61), worker="w2")
    assert again.id == first.id and again.reconcile and again.fields == {"fn": "Ann"}


def test_a_lock_holder_reconciles_a_dead_holder_s_claims_at_once_and_no_one_else_s(
    seeded_engine: Engine,
) -> None:
    dead = outbox.worker_id("host:1:1", "deadbeef0001")
    beside = outbox.worker_id("host:2:1", None)  # a push that ran without the lock
    mine = outbox.worker_id("host:3:1", "cafe00000003")
    for who, name in ((dead, "Dead"), (beside, "Beside"), (mine, "Mine")):
        queue.enqueue_create(seeded_engine, "contact", {"fn": name})
        assert len(claim(seeded_engine, worker=who)) == 1
    assert len(mine) <= 64 and outbox.worker_id("h" * 80 + ":9:9", "cafe00000003").endswith(
        "@lock:cafe00000003"
    )
    assert len(outbox.worker_id("h" * 80 + ":9:9", "cafe00000003")) == 64

    assert outbox.recover_dead_holders(seeded_engine, "cafe00000003", T0 + timedelta(seconds=1)) == 1
    (again,) = claim(seeded_engine, T0 + timedelta(seconds=2), worker=mine)  # not after the 60 s lease
    assert again.reconcile and again.fields == {"fn": "Dead"}
    assert outbox.recover_dead_holders(seeded_engine, "cafe00000003", T0 + timedelta(seconds=3)) == 0


def test_two_workers_never_claim_one_item(migrated_database_url: str, seeded_engine: Engine) -> None:
    for i in range(60):
        queue.enqueue_create(seeded_engine, "note", {"desc": f"n{i}"})
    engines = [make_engine(migrated_database_url) for _ in range(2)]
    got: dict[str, list[int]] = {"a": [], "b": []}

    def work(name: str, eng: Engine) -> None:
        while units := claims.claim(eng, worker=name, now=T0, lease=60, limit=3):
            got[name].extend(u.id for u in units)

    threads = [threading.Thread(target=work, args=(n, e)) for n, e in zip(got, engines, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    claimed = got["a"] + got["b"]
    assert sorted(claimed) == list(range(1, 61))  # each exactly once
    owners = {r["id"]: r["claimed_by"] for r in rows(seeded_engine)}
    assert all(owners[i] == "a" for i in got["a"]) and all(owners[i] == "b" for i in got["b"])


def test_children_wait_for_their_parent_and_get_its_real_id(seeded_engine: Engine) -> None:
    company = queue.enqueue_create(seeded_engine, "company", {"cn": "NewCo"})
    person = queue.enqueue_create(seeded_engine, "contact", {"fn": "Ann", "companyId": company.local_ref})
    note = queue.enqueue_create(seeded_engine, "note", {"desc": "met", "cust": person.local_ref})
    (unit,) = claim(seeded_engine)
    assert unit.id == company.id
    states = {r["id"]: r for r in rows(seeded_engine)}
    assert states[person.id]["state"] == "waiting" and "waits for" in states[person.id]["last_error"]
    assert states[note.id]["state"] == "waiting"
    with seeded_engine.begin() as conn:
        outbox.record(conn, [outbox.Outcome(unit=unit, state=outbox.DONE, remote_id=500)], T0)
    (child,) = claim(seeded_engine)
    assert child.id == person.id and child.fields == {"fn": "Ann", "companyId": 500}
    assert orjson.loads(rows(seeded_engine)[1]["sent"]) == {"fn": "Ann", "companyId": 500}


def test_cancelling_a_parent_fails_its_children_with_a_reason(seeded_engine: Engine) -> None:
    company = queue.enqueue_create(seeded_engine, "company", {"cn": "NewCo"})
    person = queue.enqueue_create(seeded_engine, "contact", {"fn": "Ann", "companyId": company.local_ref})
    queue.cancel(seeded_engine, company.id)
    assert claim(seeded_engine) == []
    child = queue.get_item(seeded_engine, person.id)
    assert child.state == "failed" and "cancelled" in (child.last_error or "")


def test_retry_cancel_and_resolve(seeded_engine: Engine) -> None:
    item = queue.enqueue_update(seeded_engine, "contact", 1, {"title": "CTO"})
    with pytest.raises(QueueItemError, match="only failed"):
        queue.retry(seeded_engine, item.id)
    with seeded_engine.begin() as conn:
        conn.execute(sa.update(Q).values(state="failed", attempts=3))
    assert queue.retry(seeded_engine, failed=True) == 1
    assert queue.get_item(seeded_engine, item.id).state == "pending"
    conflict = {"title": {"base": "Eng", "local": "CTO", "remote": "VP", "winner": "none"}}
    with seeded_engine.begin() as conn:
        conn.execute(sa.update(Q).values(state="conflict", conflict=orjson.dumps(conflict).decode()))
    resolved = queue.resolve(seeded_engine, item.id, "local")
    assert resolved.state == "pending" and resolved.fields == {"title": "CTO"}
    (unit,) = claim(seeded_engine)
    assert unit.base == {"title": "VP"}  # the remote value the person saw: CTO is sent over it
    with pytest.raises(QueueItemError, match="items can be cancelled"):
        queue.cancel(seeded_engine, item.id)
    with pytest.raises(QueueItemError, match="no such item"):
        queue.get_item(seeded_engine, 999)


def test_retry_of_a_create_that_may_have_been_sent_reconciles_first(seeded_engine: Engine) -> None:
    item = queue.enqueue_create(seeded_engine, "contact", {"fn": "Ann"})
    claim(seeded_engine)
    with seeded_engine.begin() as conn:
        conn.execute(sa.update(Q).values(state="failed"))
    queue.retry(seeded_engine, item.id)
    assert queue.get_item(seeded_engine, item.id).state == "reconcile"


def test_our_own_write_becomes_the_base_of_later_edits(seeded_engine: Engine) -> None:
    queue.enqueue_update(seeded_engine, "contact", 1, {"title": "A"})
    (unit,) = claim(seeded_engine)
    later = queue.enqueue_update(seeded_engine, "contact", 1, {"title": "B"})  # queued while A is in flight
    with seeded_engine.begin() as conn:
        answer = {"id": 1, "fn": "Ada", "title": "A"}  # the server's record after our PUT
        outbox.record(
            conn, [outbox.Outcome(unit=unit, state=outbox.DONE, sent={"title": "A"}, answer=answer)], T0
        )
    (next_unit,) = claim(seeded_engine)
    # Without the rebase, B would conflict with our own A (remote A, base Eng, local B).
    assert next_unit.id == later.id and next_unit.base == {"title": "A"}


def test_only_the_outbox_issues_statements_on_the_queue_tables() -> None:
    # One owner of the queue's rows (writeback/outbox.py): every other module of the package
    # reaches them through its functions. datasette_meta imports the tables only to describe them.
    def names_it(node: ast.AST) -> str | None:
        imports = isinstance(node, ast.ImportFrom) and (
            node.module == "clevertim_sync.writeback.tables"
            or (node.module == "clevertim_sync.writeback" and any(a.name == "tables" for a in node.names))
        )
        return "imports the queue's tables" if imports else None

    allowed = {"writeback/outbox.py", "writeback/tables.py", "reporting/datasette_meta.py"}
    assert touching("writeback_queue", allowed, names_it) == []


# --- a claim is its plan, written (issue 19) --------------------------------------------------------


def _queue_taken_in_several_claims(engine: Engine) -> dict[str, int]:
    """A coalesced update; an invalid row that keeps a later edit of its record back until a claim
    fails it; a parent create and a child waiting for its id."""
    first = queue.enqueue_update(engine, "contact", 1, {"title": "A"}, now=T0).id
    queue.enqueue_update(engine, "contact", 1, {"fn": "Ada2"}, now=T0)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO writeback_queue (resource, op, target_id, fields) "
            """VALUES ('contact', 'update', 2, '{"shoe": 9}')"""
        )
    behind = queue.enqueue_update(engine, "contact", 2, {"title": "Z"}, now=T0).id
    parent = queue.enqueue_create(engine, "company", {"cn": "New"}, now=T0).id
    child = queue.enqueue_create(
        engine, "contact", {"fn": "C", "companyId": f"local:company:{parent}"}, now=T0
    )
    return {"first": first, "invalid": first + 2, "behind": behind, "parent": parent, "child": child.id}


def test_a_claim_is_its_plan_written_and_the_plan_writes_nothing(seeded_engine: Engine) -> None:
    engine = seeded_engine
    made = _queue_taken_in_several_claims(engine)
    before = rows(engine)
    with reading(engine) as conn:  # a read-only connection: a write would fail
        plan = claims.plan_claim(conn, T0, T0, 50, lock=False)
    assert rows(engine) == before
    assert [u.id for u in plan.units] == [made["first"], made["parent"]]
    assert {s.row["id"]: s.state for s in plan.left} == {made["invalid"]: "failed", made["child"]: "waiting"}
    units = claim(engine)
    assert units == plan.units  # the same units, fields, bases, followers, what a create sends
    by_id = {r["id"]: r for r in rows(engine)}
    for step in plan.left:
        assert (by_id[step.row["id"]]["state"], by_id[step.row["id"]]["last_error"]) == (step.state, step.why)
    assert all(by_id[i]["state"] == "in_flight" for u in units for i in u.item_ids)


def test_a_dry_run_s_batches_see_the_queue_as_the_push_s_next_claims_do(seeded_engine: Engine) -> None:
    # The same queue twice: planned batch after batch without a write (the wake and each batch's
    # decisions assumed), and claimed for real (woken, then each claim written).
    engine = seeded_engine
    made = _queue_taken_in_several_claims(engine)
    with engine.begin() as conn:  # the child as an earlier push left it: waiting
        conn.execute(sa.update(Q).where(Q.c.id == made["child"]).values(state="waiting"))
    assumed = claims.Assumed(woken=True)
    planned: list[list[outbox.Claimed]] = []
    with reading(engine) as conn:
        while units := claims.plan_claim(conn, T0, T0, 2, assumed=assumed, lock=False).units:
            planned.append(units)
    outbox.wake_waiting(engine, T0)
    claimed: list[list[outbox.Claimed]] = []
    held: set[int] = set()
    while units := claims.claim(engine, worker="w1", now=T0, lease=60, limit=2, held=held):
        claimed.append(units)
        held.update(i for u in units for i in u.item_ids)
    assert planned == claimed
    # The edit behind the invalid row goes in the second claim, once the first failed that row.
    assert [[u.id for u in batch] for batch in planned] == [[made["first"]], [made["behind"], made["parent"]]]
    states = {r["id"]: r["state"] for r in rows(engine)}
    assert {i: states[i] for i in assumed.states} == assumed.states
