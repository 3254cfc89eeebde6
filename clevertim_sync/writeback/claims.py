"""What a push takes from the queue: units of work, built from the due items and committed in flight.

Owns: the claim. It reads the claimable items (outbox.leaders), fails those that cannot be sent
with the reason (a row INSERTed by hand is validated here), parks a create whose local reference
waits for its parent's id and writes the parent's id into one whose parent has it, coalesces the
later pending updates of a record into its leader's one PUT, and commits the leaders in flight
under a lease (outbox.take). Every statement is outbox.py's; what becomes of a unit afterwards is
recorded by outbox.record.


Claiming: an item is claimed with a lease (claimed_by, lease_until) in one short transaction
that also commits it as in_flight, with what it will send and (for a create) the highest remote
id known, before its request goes out. On PostgreSQL the candidate rows are read `FOR UPDATE SKIP
LOCKED`; on SQLite every transaction is `BEGIN IMMEDIATE` (mirror/db.py), so claims serialise.
Either way the state change is a conditional UPDATE (`WHERE state = <the state we read>`), so two
workers never both own one item. An item whose lease ran out (a worker died) is reconciled, not
resent. A push run by the holder of the mirror's instance lock (mirror/lock.py: the daemon, or a
CLI `push` that could take it) tags its claims with the lock's holder id (outbox.worker_id); a
later holder knows that every other holder's claim belongs to a process that is gone (the lock is
exclusive, and freed when its holder dies), so it reconciles those at once
(`outbox.recover_dead_holders`) instead of waiting for their lease. The lease stays for pushes
that run beside the holder without the lock. Items of one record go out in order (FIFO): an item
waits while an earlier open item of the same record exists, and pending updates of one record
coalesce into one PUT.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from clevertim_sync import resources
from clevertim_sync.mirror import schema
from clevertim_sync.mirror.store import load_record
from clevertim_sync.writeback import outbox
from clevertim_sync.writeback.merge import Edit, coalesce
from clevertim_sync.writeback.outbox import FAILED, PENDING, WAITING, Claimed, loads_or


def _max_remote_id(conn: Connection, resource: str, cache: dict[str, int | None]) -> int | None:
    """The highest id this resource's records are known to have (contacts and companies share one
    id space): a create's answer, if lost, must be a record above it."""
    if resource in cache:
        return cache[resource]
    # The mirror holds every record a create of ours made (the answer is folded in before the
    # item is done), so its highest id (a primary key lookup) covers them too.
    names = resources.CUSTOMER_RESOURCES if resource in resources.CUSTOMER_RESOURCES else (resource,)
    best: int | None = None
    for name in names:
        value = conn.execute(sa.select(sa.func.max(schema.CURRENT[name].c.id))).scalar()
        if value is not None and (best is None or value > best):
            best = int(value)
    cache[resource] = best
    return best


def _invalid_reason(row: sa.RowMapping) -> str | None:
    """Why a row (possibly INSERTed by hand) cannot be sent, or None."""
    try:
        fields = orjson.loads(row["fields"] or "{}")
    except orjson.JSONDecodeError as exc:
        return f'fields is not valid JSON ({exc}); write a JSON object such as {{"title": "CTO"}}'
    if not isinstance(fields, dict):
        return "fields must be a JSON object of property: value"
    problems = resources.edit_problems(row["resource"], row["op"], fields)
    if row["op"] in ("update", "delete") and row["target_id"] is None:
        problems.append(f"a {row['op']} needs target_id, the id of the record")
    if row["op"] == "create" and row["target_id"] is not None:
        problems.append("a create takes no target_id: the server assigns the id")
    return "; ".join(problems) if problems else None


def _resolve_refs(
    conn: Connection, row: sa.RowMapping, fields: dict[str, Any]
) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """(fields with local refs replaced by remote ids, or None; wait reason; failure reason)."""
    refs = outbox.local_refs_in(row["resource"], fields)
    if not refs:
        return fields, None, None
    problems = outbox.ref_problems(conn, row["resource"], fields)
    if problems:
        return None, None, "; ".join(problems)
    out = dict(fields)
    waits = []
    for key, ref in refs.items():
        m = outbox.LOCAL_REF.match(ref)
        assert m is not None  # checked by ref_problems
        parent = outbox.get_row(conn, int(m.group(2)))
        assert parent is not None  # checked by ref_problems
        if parent["remote_id"] is not None:
            out[key] = int(parent["remote_id"])
        else:
            waits.append(f"{key} waits for {ref} ({parent['state']})")
    if waits:
        return None, "; ".join(waits) + "; it goes out once that create has its id", None
    return out, None, None


def _followers(conn: Connection, leaders: list[sa.RowMapping]) -> dict[int, list[sa.RowMapping]]:
    """For each pending update leader: the later pending updates of the same record, up to the
    first item that is not one (a delete, or an update still in backoff, keeps its place)."""
    keys = {
        (r["resource"], r["target_id"]): r["id"]
        for r in leaders
        if r["op"] == "update" and r["state"] == PENDING
    }
    out: dict[int, list[sa.RowMapping]] = {}
    stopped: set[int] = set()
    for r in outbox.open_items_of(conn, keys):
        leader = keys.get((r["resource"], r["target_id"]))
        if leader is None or r["id"] <= leader or leader in stopped:
            continue
        if r["op"] == "update" and r["state"] == PENDING and _invalid_reason(r) is None:
            out.setdefault(leader, []).append(r)
        else:
            stopped.add(leader)
    return out


def claim(
    engine: Engine,
    *,
    worker: str,
    now: datetime,
    lease: float,
    limit: int,
    due_by: datetime | None = None,
    held: Collection[int] = (),
) -> list[Claimed]:
    """Claim up to `limit` units of due work and commit them as in_flight under a lease.

    `now` is the clock (leases start and expire by it); `due_by` (default `now`) is the instant
    items must be due by: a push passes its start, so an item that failed during this push waits
    for the next one. `held`: ids the caller holds already (sent or about to be, outcome not yet
    recorded): never claimed again by it, even when their lease ran out meanwhile, since a second
    claim would reconcile (or resend) a write whose answer is on its way.
    """
    for _ in range(3):
        try:
            with engine.begin() as conn:
                return claim_in(conn, worker, now, lease, limit, due_by or now, held)
        except _RowMoved:
            continue  # rolled back; the next read sees the other worker's claim
    return []


class _RowMoved(Exception):
    """A row changed between our read and our conditional write: roll the claim back."""


def claim_in(  # noqa: PLR0917 - the arguments of claim(), passed through
    conn: Connection,
    worker: str,
    now: datetime,
    lease: float,
    limit: int,
    due_by: datetime,
    held: Collection[int] = (),
) -> list[Claimed]:
    """`claim` inside the caller's transaction (a dry run claims, reads and rolls back)."""
    leaders = outbox.leaders(conn, now, due_by, held, limit)
    followers = _followers(conn, leaders)
    until = now + timedelta(seconds=lease)
    id_cache: dict[str, int | None] = {}
    units: list[Claimed] = []
    takes: list[outbox.Take] = []
    for row in leaders:
        built = _unit(conn, row, followers.get(row["id"], []), now, id_cache)
        if built is None:
            continue
        unit, take = built
        takes.append(take)
        # The followers ride on the leader's request: in flight with it.
        unit.followers = [
            f["id"]
            for f in followers.get(row["id"], [])
            if outbox.take_follower(conn, f["id"], row["id"], worker, until, now)
        ]
        units.append(unit)
    if not outbox.take(conn, takes, worker, until, now):
        # Another worker claimed a row between our read and our write (SKIP LOCKED and the
        # re-checked state make this rare; SQLite's one writer makes it impossible there).
        raise _RowMoved
    return units


def _unit(
    conn: Connection,
    row: sa.RowMapping,
    followers: list[sa.RowMapping],
    now: datetime,
    id_cache: dict[str, int | None],
) -> tuple[Claimed, outbox.Take] | None:
    """The unit of work a leader row makes, and how it is taken; None when the row is not taken
    (failed: it cannot be sent; waiting: its parent has no id yet)."""
    reason = _invalid_reason(row)
    if reason is not None:
        outbox.leave(conn, row, FAILED, f"invalid edit, not sent: {reason}", now)
        return None
    fields: dict[str, Any] = orjson.loads(row["fields"] or "{}")
    reconcile = row["state"] != PENDING
    base: dict[str, Any] | None = None
    sent: dict[str, Any] | None = None
    take = outbox.Take(row)
    max_id_seen: int | None = row["max_id_seen"]
    if row["op"] == "create":
        sent = loads_or(row["sent"], None)
        if reconcile and isinstance(sent, dict):
            fields = sent  # what may have gone out is what a new record must match
        else:
            reconcile = False  # never sent: nothing to reconcile
            resolved, wait, fail = _resolve_refs(conn, row, fields)
            if fail is not None:
                outbox.leave(conn, row, FAILED, f"not sent: {fail}", now)
                return None
            if resolved is None:
                outbox.leave(conn, row, WAITING, wait or "", now)
                return None
            fields = sent = resolved
            max_id_seen = _max_remote_id(conn, row["resource"], id_cache)
            take = outbox.Take(row, sent=outbox.dumps(sent), max_id_seen=max_id_seen)
    elif row["op"] == "update":
        # A row INSERTed by hand has no base: the mirror as it is now is the best guess of what
        # its author saw.
        base_now = _base_of(row) or load_record(conn, row["resource"], row["target_id"])
        edits = [Edit(fields, base_now)]
        edits += [Edit(orjson.loads(f["fields"]), _base_of(f)) for f in followers]
        fields, base = coalesce(edits)
    unit = Claimed(
        id=row["id"],
        resource=row["resource"],
        op=row["op"],
        target_id=row["target_id"],
        fields=fields,
        base=base,
        reconcile=reconcile,
        attempts=row["attempts"],
        sent=sent,
        max_id_seen=max_id_seen,
    )
    return unit, take


def _base_of(row: sa.RowMapping) -> dict[str, Any] | None:
    base = loads_or(row["base_record"], None)
    return base if isinstance(base, dict) else None
