"""Folding a push's answers into the mirror: the one way a server's answer to a write gets there.

Owns: `fold_many`: the current rows, child rows, full-text index and history of one or many
pushed records, a few statements per resource instead of several per record. It classifies each
answer the way a pull classifies a listing (new, changed, only `lm` moved, deleted) and hands
that to `store.apply_changes` with origin 'local' and each record's queue item, so every upkeep
the pull's write path does (child tables, full-text index, history with the changed fields)
covers pushed records too, with no second copy of it here.

Runs inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from clevertim_sync import resources
from clevertim_sync.errors import MirrorError
from clevertim_sync.mirror import schema, store
from clevertim_sync.pull.diff import Changes, id_reader, id_respeller, record_hash

OPS = ("insert", "create", "update", "delete")


@dataclass(frozen=True)
class Fold:
    """One server answer to fold in: `record` is the server's version (only `id` for a delete)."""

    resource: str
    record: Mapping[str, Any]
    op: str  # insert | create | update | delete
    queue_item_id: int | None


def fold_many(conn: sa.Connection, folds: Sequence[Fold], *, at: datetime | None = None) -> None:
    """Fold every answer into the mirror inside the caller's transaction, in order: the same
    result as folding them one at a time. A server that answers "id": "445": the record is stored
    under 445 and `raw` keeps "445", as a pull stores it."""
    for resource, group in _groups(folds):
        _fold_group(conn, resource, group, at or datetime.now(UTC))


# A fold with its record's id by meaning: what the id column, the history and the queue item's
# link are keyed by.
_Keyed = tuple[Fold, Any]


def _groups(folds: Sequence[Fold]) -> Iterator[tuple[str, list[_Keyed]]]:
    """Runs of folds per resource, each record at most once per run (a record answered twice in
    one batch is folded in order, in two runs)."""
    current: dict[str, tuple[list[_Keyed], set[Any]]] = {}
    for f in folds:
        if f.op not in OPS:
            raise MirrorError(f"fold_many: unknown op {f.op!r}; use insert, update or delete")
        name = resources.get(f.resource).name
        rid, _ = id_reader(name)(f.record)
        if rid is None:
            rid = f.record.get("id")  # no id by meaning: named as it is below
        if (problem := resources.id_problem(name, rid)) is not None:
            raise MirrorError(f"fold_many: the {name} record's id: {problem}")
        group, seen = current.setdefault(name, ([], set()))
        if rid in seen:
            yield name, group
            group, seen = [], set()
            current[name] = (group, seen)
        group.append((f, rid))
        seen.add(rid)
    for name, (group, _) in current.items():
        if group:
            yield name, group


def _fold_group(conn: sa.Connection, resource: str, group: list[_Keyed], at: datetime) -> None:
    table = schema.CURRENT[resource]
    ids = [rid for _, rid in group]
    old = dict(conn.execute(sa.select(table.c.id, table.c.content_hash).where(table.c.id.in_(ids))).all())
    respell = id_respeller(resource)
    changes = Changes()
    for f, rid in group:
        if f.op == "delete":
            if rid in old:
                changes.deletes.append(rid)
            continue
        record = dict(f.record)  # as served: raw keeps the server's spelling of the id
        digest = record_hash(respell(record))  # the pull's hash of it: by meaning
        if rid not in old:
            changes.inserts.append((record, digest))
        elif old[rid] != digest:
            changes.updates.append((record, digest))
        else:
            changes.touches.append((record, digest))  # only lm moved: like a pull, no history
    if changes.empty:
        return
    queue_items = {rid: f.queue_item_id for f, rid in group}  # a record once per group
    store.apply_changes(conn, resource, changes, run_id=None, at=at, origin="local", queue_items=queue_items)
