"""writeback.fold.fold_many, the one way a push's answers reach the mirror, on SQLite and
PostgreSQL: a batch leaves the mirror (current rows, child rows, history, full-text search)
exactly as folding each answer on its own, in order, does, with history labelled 'local' and
each record's queue item."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from clevertim_sync.errors import MirrorError
from clevertim_sync.mirror import schema, store
from clevertim_sync.reporting import reports
from clevertim_sync.writeback.fold import Fold, fold_many

LM = "2026-01-01T00:00:00Z"


def contact(rid: int, fn: str, lm: str = LM, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "fn": fn, "ln": "Fold", "email": [f"{fn.lower()}@example.com"], "lm": lm, **extra}


def note(rid: int, desc: str, lm: str = LM) -> dict[str, Any]:
    return {"id": rid, "desc": desc, "type": "N", "lm": lm}


SEED = [
    Fold("contact", contact(1, "Ada"), "insert", None),
    Fold("contact", contact(2, "Bob"), "insert", None),
    Fold("contact", contact(3, "Cy"), "insert", None),
    Fold("note", note(7, "Serengeti pricing"), "insert", None),
]

BATCH = [
    Fold("contact", contact(1, "Ada", phones=[{"type": "Work", "no": "+1"}]), "update", 11),  # changed
    Fold("contact", contact(2, "Bob", lm="2026-02-02T00:00:00Z"), "update", 12),  # only lm moved
    Fold("contact", {"id": 3}, "delete", 13),
    Fold("contact", {"id": 99}, "delete", 14),  # already gone: nothing to record
    Fold("contact", contact(4, "Dee"), "create", 15),
    Fold("note", note(7, "Kalahari pricing"), "update", 16),
    Fold("note", note(8, "Okavango visit"), "insert", 17),
    Fold("contact", contact(4, "Dee", title="CEO"), "update", 18),  # the same record again, later
]


def snapshot(conn: sa.Connection) -> dict[str, Any]:
    h = schema.history
    out: dict[str, Any] = {
        "history": sorted(
            conn.execute(
                sa.select(
                    h.c.resource,
                    h.c.record_id,
                    h.c.run_id,
                    h.c.origin,
                    h.c.op,
                    h.c.raw,
                    h.c.content_hash,
                    h.c.changed,
                    h.c.queue_item_id,
                ).order_by(h.c.id)
            ).all(),
            key=repr,  # apply_changes writes inserts before updates: compare as sets of rows
        )
    }
    children = [t for (res, _), t in schema.CHILDREN.items() if res in ("contact", "note")]
    for table in (schema.CURRENT["contact"], schema.CURRENT["note"], *children):
        out[table.name] = sorted(map(repr, conn.execute(sa.select(table)).all()))
    return out


def hits(engine: sa.Engine, words: str) -> list[int]:
    return sorted(h.record_id for h in reports.search(engine, words))


def test_fold_many_of_a_batch_equals_folding_one_by_one(mirror_engine: sa.Engine) -> None:
    engine = mirror_engine
    with engine.begin() as conn:
        fold_many(conn, SEED)
    with engine.connect() as conn, conn.begin() as tx:
        for f in BATCH:
            fold_many(conn, [f])
        one_by_one = snapshot(conn)
        tx.rollback()
    with engine.begin() as conn:
        fold_many(conn, BATCH)
    with engine.connect() as conn:
        bulk = snapshot(conn)
    assert hits(engine, "serengeti") == [] and hits(engine, "kalahari") == [7]
    assert hits(engine, "okavango") == [8]
    assert bulk == one_by_one
    ops = [(r.record_id, r.op, r.origin, r.queue_item_id) for r in bulk["history"] if r.queue_item_id]
    assert sorted(ops) == [
        (1, "update", "local", 11), (3, "delete", "local", 13), (4, "insert", "local", 15),
        (4, "update", "local", 18), (7, "update", "local", 16), (8, "insert", "local", 17),
    ]  # fmt: skip


def test_fold_many_refuses_a_bad_answer_and_writes_nothing(mirror_engine: sa.Engine) -> None:
    with pytest.raises(MirrorError, match="integer id"), mirror_engine.begin() as conn:
        fold_many(
            conn, [Fold("contact", contact(5, "Eve"), "insert", 1), Fold("contact", {"id": "x"}, "update", 2)]
        )
    with pytest.raises(MirrorError, match="unknown op"), mirror_engine.begin() as conn:
        fold_many(conn, [Fold("contact", contact(5, "Eve"), "upsert", 1)])
    with mirror_engine.connect() as conn:
        assert store.load_record(conn, "contact", 5) is None
