"""What a push takes from the queue: units of work, planned from the due items, then committed in flight.

Owns: the claim, in two steps. `plan_claim` reads and decides, and writes nothing: the claimable
items (outbox.leaders) and, for each, the unit of work it makes or why it stays behind. A row that
cannot be sent (a row INSERTed by hand is validated here) is left failed with the reason; a create
whose local reference waits for its parent's id is left waiting, one whose parent has it gets the
id written in; the later pending updates of a record coalesce into its leader's one PUT. The plan
is data (`ClaimPlan`). `claim_in` writes it in the claim's transaction: the rows left
(outbox.leave), the followers and the leaders in flight under a lease (outbox.take_follower,
outbox.take). A push claims (`claim`: both, in one transaction); `push --dry-run` (dryrun.py) only
plans, on a read-only connection, carrying what it decided into its next batch (`Assumed`) so that
the batch sees the queue as a push's next claim would. Every statement is outbox.py's; what
becomes of a unit afterwards is recorded by outbox.record.


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
from dataclasses import dataclass, field, replace
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
from clevertim_sync.writeback.outbox import FAILED, IN_FLIGHT, PENDING, WAITING, Claimed, loads_or


@dataclass
class Assumed:
    """What a claim's plan takes as written though it is not (yet): the wake at a push's start
    (`woken`: every waiting item counts as pending, as after outbox.wake_waiting) and the plan's
    own decisions (`states`: item id -> the state the plan gives it). A push's claim starts with
    none and writes its decisions at its end; a dry run keeps one through all its batches and
    writes nothing."""

    woken: bool = False
    states: dict[int, str] = field(default_factory=dict)

    def state_of(self, row: sa.RowMapping) -> str:
        """The item's state as the plan sees it."""
        decided = self.states.get(row["id"])
        if decided is not None:
            return decided
        return PENDING if self.woken and row["state"] == WAITING else str(row["state"])

    def failed(self) -> list[int]:
        return [item for item, state in self.states.items() if state == FAILED]


@dataclass(frozen=True)
class Taken:
    """A leader the claim takes: its unit of work (`unit.followers`: the followers planned), how
    its row is committed in flight, and the rows of the later edits that ride on its request."""

    unit: Claimed
    take: outbox.Take
    followers: list[sa.RowMapping]


@dataclass(frozen=True)
class Left:
    """A leader the claim does not take, the state it is left in and why: failed (it cannot be
    sent) or waiting (its parent create has no id yet)."""

    row: sa.RowMapping
    state: str
    why: str


@dataclass(frozen=True)
class ClaimPlan:
    """A claim decided and not written: each leader, oldest first, taken or left."""

    steps: list[Taken | Left]

    @property
    def units(self) -> list[Claimed]:
        return [step.unit for step in self.steps if isinstance(step, Taken)]

    @property
    def left(self) -> list[Left]:
        return [step for step in self.steps if isinstance(step, Left)]


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
    conn: Connection, row: sa.RowMapping, fields: dict[str, Any], seen: Assumed
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
            waits.append(f"{key} waits for {ref} ({seen.state_of(parent)})")
    if waits:
        return None, "; ".join(waits) + "; it goes out once that create has its id", None
    return out, None, None


def _followers(
    conn: Connection, leaders: list[sa.RowMapping], seen: Assumed
) -> dict[int, list[sa.RowMapping]]:
    """For each pending update leader: the later pending updates of the same record, up to the
    first item that is not one (a delete, or an update still in backoff, keeps its place)."""
    keys = {
        (r["resource"], r["target_id"]): r["id"]
        for r in leaders
        if r["op"] == "update" and seen.state_of(r) == PENDING
    }
    out: dict[int, list[sa.RowMapping]] = {}
    stopped: set[int] = set()
    for r in outbox.open_items_of(conn, keys):
        leader = keys.get((r["resource"], r["target_id"]))
        if leader is None or r["id"] <= leader or leader in stopped:
            continue
        if r["op"] == "update" and seen.state_of(r) == PENDING and _invalid_reason(r) is None:
            out.setdefault(leader, []).append(r)
        else:
            stopped.add(leader)
    return out


class _RowMoved(Exception):
    """A row changed between our read and our conditional write: roll the claim back."""


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
    """Claim up to `limit` units of due work and commit them as in_flight under a lease: the
    claim's plan (`plan_claim`) written (`claim_in`), in one transaction.

    `now` is the clock (leases start and expire by it); `due_by` (default `now`) is the instant
    items must be due by: a push passes its start, so an item that failed during this push waits
    for the next one. `held`: ids the caller holds already (sent or about to be, outcome not yet
    recorded): never claimed again by it, even when their lease ran out meanwhile, since a second
    claim would reconcile (or resend) a write whose answer is on its way.
    """
    until = now + timedelta(seconds=lease)
    for _ in range(3):
        try:
            with engine.begin() as conn:
                return claim_in(conn, plan_claim(conn, now, due_by or now, limit, held), worker, until, now)
        except _RowMoved:
            continue  # rolled back; the next read sees the other worker's claim
    return []


def plan_claim(
    conn: Connection,
    now: datetime,
    due_by: datetime,
    limit: int,
    held: Collection[int] = (),
    *,
    assumed: Assumed | None = None,
    lock: bool = True,
) -> ClaimPlan:
    """What a claim of up to `limit` units takes and leaves now, read and decided; nothing written.

    `assumed`: what earlier plans decided and nobody wrote (a dry run's earlier batches; the wake
    it does not make): its items are not taken again, those it failed keep no later edit of their
    record back, and this plan's decisions are added to it. `lock`: lock the leaders' rows for the
    claim that will write (PostgreSQL `FOR UPDATE SKIP LOCKED`); a dry run on a read-only
    connection locks nothing."""
    seen = assumed if assumed is not None else Assumed()
    leaders = outbox.leaders(
        conn, now, due_by, {*held, *seen.states}, limit, woken=seen.woken, closed=seen.failed(), lock=lock
    )
    followers = _followers(conn, leaders, seen)
    id_cache: dict[str, int | None] = {}
    steps: list[Taken | Left] = []
    for row in leaders:
        step = _unit(conn, row, followers.get(row["id"], []), seen, id_cache)
        if isinstance(step, Left):
            seen.states[row["id"]] = step.state  # a later create naming it sees it so
        steps.append(step)
    # The leaders go in flight at the claim's end (claim_in: outbox.take, after the rows left).
    for taken in steps:
        if isinstance(taken, Taken):
            seen.states.update(dict.fromkeys(taken.unit.item_ids, IN_FLIGHT))
    return ClaimPlan(steps)


def claim_in(conn: Connection, plan: ClaimPlan, worker: str, until: datetime, now: datetime) -> list[Claimed]:
    """Write a claim's plan in the caller's transaction: the rows it leaves failed or waiting,
    then its leaders, with the followers riding on them, in flight under a lease until `until`.
    The units as taken (a follower another worker took meanwhile is not in them)."""
    units: list[Claimed] = []
    takes: list[outbox.Take] = []
    for step in plan.steps:
        if isinstance(step, Left):
            outbox.leave(conn, step.row, step.state, step.why, now)
            continue
        # The followers ride on the leader's request: in flight with it.
        riding = [
            f["id"]
            for f in step.followers
            if outbox.take_follower(conn, f["id"], step.unit.id, worker, until, now)
        ]
        units.append(replace(step.unit, followers=riding))
        takes.append(step.take)
    if not outbox.take(conn, takes, worker, until, now):
        # Another worker claimed a row between our read and our write (SKIP LOCKED and the
        # re-checked state make this rare; SQLite's one writer makes it impossible there).
        raise _RowMoved
    return units


def _unit(
    conn: Connection,
    row: sa.RowMapping,
    followers: list[sa.RowMapping],
    seen: Assumed,
    id_cache: dict[str, int | None],
) -> Taken | Left:
    """The unit of work a leader row makes and how it is taken, or why it is left (failed: it
    cannot be sent; waiting: its parent has no id yet)."""
    reason = _invalid_reason(row)
    if reason is not None:
        return Left(row, FAILED, f"invalid edit, not sent: {reason}")
    fields: dict[str, Any] = orjson.loads(row["fields"] or "{}")
    reconcile = seen.state_of(row) != PENDING
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
            resolved, wait, fail = _resolve_refs(conn, row, fields, seen)
            if fail is not None:
                return Left(row, FAILED, f"not sent: {fail}")
            if resolved is None:
                return Left(row, WAITING, wait or "")
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
        followers=[f["id"] for f in followers],
    )
    return Taken(unit, take, followers)


def _base_of(row: sa.RowMapping) -> dict[str, Any] | None:
    base = loads_or(row["base_record"], None)
    return base if isinstance(base, dict) else None
