"""The worker's side of the queue: claims, outcomes and the server-wide pause.

Owns: every state change a push makes to a `writeback_queue` row, and `writeback_pause`. The
worker (worker.py) decides what to do on the wire; this module records it.

Must not import: httpx, the API client, the worker.

Claiming: an item is claimed with a lease (claimed_by, lease_until) in one short transaction
that also commits it as in_flight, with what it will send and (for a create) the highest remote
id known, before its request goes out. On PostgreSQL the candidate rows are read `FOR UPDATE SKIP
LOCKED`; on SQLite every transaction is `BEGIN IMMEDIATE` (mirror/db.py), so claims serialise.
Either way the state change is a conditional UPDATE (`WHERE state = <the state we read>`), so two
workers never both own one item. An item whose lease ran out (a worker died) is reconciled, not
resent. A push run by the holder of the mirror's instance lock (daemon/lock.py: the daemon, or a
CLI `push` that could take it) tags its claims with the lock's holder id; a later holder knows
that every other holder's claim belongs to a process that is gone (the lock is exclusive, and
freed when its holder dies), so it reconciles those at once (`recover_dead_holders`) instead of
waiting for their lease. The lease stays for pushes that run beside the holder without the lock.
Items of one record go out in order (FIFO): an item waits while an earlier open item of
the same record exists, and pending updates of one record coalesce into one PUT.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from clevertim_sync import resources
from clevertim_sync.mirror import schema
from clevertim_sync.mirror.store import load_record
from clevertim_sync.writeback.merge import Edit, coalesce
from clevertim_sync.writeback.queue import (
    LOCAL_REF,
    SERVER_SCOPE,
    Bind,
    Q,
    dumps,
    loads_or,
    local_ref_of,
    local_refs_in,
    ref_problems,
    set_state,
    transaction,
    utcnow,
    wake_children,
)
from clevertim_sync.writeback.tables import (
    DONE,
    FAILED,
    IN_FLIGHT,
    OPEN_STATES,
    PENDING,
    RECONCILE,
    WAITING,
    writeback_pause,
)

# --- the worker's side ---------------------------------------------------------------------------


@dataclass
class Claimed:
    """One unit of work: a leader item, plus the later pending updates of its record folded in."""

    id: int
    resource: str
    op: str
    target_id: int | None
    fields: dict[str, Any]  # what to write: coalesced (update) or with local refs rewritten (create)
    base: dict[str, Any] | None  # per-field base of an update (None: unknown)
    reconcile: bool  # the outcome of an earlier send is unknown: check before sending
    attempts: int
    sent: dict[str, Any] | None
    max_id_seen: int | None
    followers: list[int] = field(default_factory=list)

    @property
    def item_ids(self) -> list[int]:
        return [self.id, *self.followers]


def _claimable(now: datetime, due_by: datetime) -> sa.ColumnElement[bool]:
    due = sa.or_(Q.c.next_attempt_at.is_(None), Q.c.next_attempt_at <= due_by)
    return sa.or_(
        sa.and_(Q.c.state.in_((PENDING, RECONCILE)), due),
        sa.and_(Q.c.state == IN_FLIGHT, Q.c.lease_until < now),  # its worker died: reconcile
    )


def _no_earlier_open() -> sa.ColumnElement[bool]:
    q2 = Q.alias("earlier")
    return ~sa.exists().where(
        q2.c.resource == Q.c.resource,
        q2.c.target_id == Q.c.target_id,
        q2.c.id < Q.c.id,
        q2.c.state.in_(OPEN_STATES),
    )


# claimed_by of a lock holder's push: "<host:pid:thread>@lock:<holder id>".
HOLDER_MARK = "@lock:"
_CLAIMED_BY_WIDTH = 64  # writeback_queue.claimed_by is String(64)


def worker_id(base: str, holder: str | None) -> str:
    """The claimed_by of a push: `base`, tagged with the lock holder's id when it has one."""
    if holder is None:
        return base[:_CLAIMED_BY_WIDTH]
    tag = f"{HOLDER_MARK}{holder}"
    return base[: _CLAIMED_BY_WIDTH - len(tag)] + tag


def recover_dead_holders(bind: Bind, holder: str, now: datetime) -> int:
    """Make the in-flight items of every earlier lock holder claimable at once (their lease is
    ended): only the holder `holder` of the instance lock may call this. They are then reconciled
    as after any lost answer (a create is looked for on the server before any resend)."""
    mine = f"%{HOLDER_MARK}{holder}"
    with transaction(bind) as conn:
        return conn.execute(
            sa.update(Q)
            .where(
                Q.c.state == IN_FLIGHT,
                Q.c.claimed_by.like(f"%{HOLDER_MARK}%"),
                Q.c.claimed_by.not_like(mine),
                sa.or_(Q.c.lease_until.is_(None), Q.c.lease_until >= now),
            )
            .values(lease_until=now - timedelta(microseconds=1), updated_at=now)
        ).rowcount


def wake_waiting(bind: Bind, now: datetime | None = None) -> int:
    """Give every waiting child one more look (at the start of each push): cheap, and it makes a
    wake-up lost to a race cost one push cycle at most."""
    with transaction(bind) as conn:
        return conn.execute(
            sa.update(Q).where(Q.c.state == WAITING).values(state=PENDING, updated_at=now or utcnow())
        ).rowcount


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
    refs = local_refs_in(row["resource"], fields)
    if not refs:
        return fields, None, None
    problems = ref_problems(conn, row["resource"], fields)
    if problems:
        return None, None, "; ".join(problems)
    out = dict(fields)
    waits = []
    for key, ref in refs.items():
        m = LOCAL_REF.match(ref)
        assert m is not None  # checked by ref_problems
        parent = conn.execute(sa.select(Q.c.state, Q.c.remote_id).where(Q.c.id == int(m.group(2)))).one()
        if parent.remote_id is not None:
            out[key] = int(parent.remote_id)
        else:
            waits.append(f"{key} waits for {ref} ({parent.state})")
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
    if not keys:
        return {}
    rows = conn.execute(
        sa.select(Q)
        .where(
            Q.c.resource.in_({r for r, _ in keys}),
            Q.c.target_id.in_({t for _, t in keys}),
            Q.c.state.in_(OPEN_STATES),
        )
        .order_by(Q.c.id)
    ).mappings()
    out: dict[int, list[sa.RowMapping]] = {}
    stopped: set[int] = set()
    for r in rows:
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
            return _claim_once(engine, worker, now, lease, limit, due_by or now, held)
        except _RowMoved:
            continue  # rolled back; the next read sees the other worker's claim
    return []


class _RowMoved(Exception):
    """A row changed between our read and our conditional write: roll the claim back."""


def _claim_once(  # noqa: PLR0917 - the arguments of claim(), passed through
    engine: Engine,
    worker: str,
    now: datetime,
    lease: float,
    limit: int,
    due_by: datetime,
    held: Collection[int],
) -> list[Claimed]:
    with engine.begin() as conn:
        return claim_in(conn, worker, now, lease, limit, due_by, held)


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
    # First the oldest claimable ids (from the state index, without reading the JSON columns),
    # then the FIFO check and the rows for those only: a long queue is not re-read per claim.
    # The outer query repeats the state condition: on PostgreSQL a row another worker claimed
    # meanwhile is re-checked against it (and skipped) when it is locked.
    claimable = _claimable(now, due_by)
    if held:
        claimable = sa.and_(claimable, Q.c.id.not_in(list(held)))
    window = sa.select(Q.c.id).where(claimable).order_by(Q.c.id).limit(limit * 4)
    leaders = _leaders(conn, sa.and_(Q.c.id.in_(window.scalar_subquery()), claimable), limit)
    if not leaders:
        leaders = _leaders(conn, claimable, limit)  # everything in the window waits its turn
    followers = _followers(conn, leaders)
    until = now + timedelta(seconds=lease)
    id_cache: dict[str, int | None] = {}
    out: list[Claimed] = []
    taken: list[dict[str, Any]] = []
    for row in leaders:
        unit = _claim_one(conn, row, followers.get(row["id"], []), worker, now, until, id_cache, taken)
        if unit is not None:
            out.append(unit)
    if not _take(conn, taken, worker, until, now):
        # Another worker claimed a row between our read and our write (SKIP LOCKED and the
        # re-checked state make this rare; SQLite's one writer makes it impossible there).
        raise _RowMoved
    return out


def _leaders(conn: Connection, candidates: sa.ColumnElement[bool], limit: int) -> list[sa.RowMapping]:
    query = sa.select(Q).where(candidates, _no_earlier_open()).order_by(Q.c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Q)
    return list(conn.execute(query).mappings())


def _take(conn: Connection, taken: list[dict[str, Any]], worker: str, until: datetime, now: datetime) -> bool:
    """Commit the claimed leaders as in_flight in one executemany; False if any had moved on."""
    if not taken:
        return True
    stmt = (
        sa.update(Q)
        .where(Q.c.id == sa.bindparam("b_id"), Q.c.state == sa.bindparam("b_state"))
        .values(
            state=IN_FLIGHT,
            claimed_by=worker,
            lease_until=until,
            updated_at=now,
            sent=sa.func.coalesce(sa.bindparam("b_sent", type_=sa.Text), Q.c.sent),
            max_id_seen=sa.func.coalesce(sa.bindparam("b_max", type_=sa.BigInteger), Q.c.max_id_seen),
            local_ref=sa.func.coalesce(sa.bindparam("b_ref", type_=sa.String), Q.c.local_ref),
        )
    )
    result = conn.execute(stmt, taken)
    if conn.dialect.supports_sane_multi_rowcount:
        return result.rowcount == len(taken)
    ids = [t["b_id"] for t in taken]
    mine = conn.execute(
        sa.select(sa.func.count()).where(Q.c.id.in_(ids), Q.c.claimed_by == worker, Q.c.state == IN_FLIGHT)
    ).scalar_one()
    return int(mine) == len(ids)


def _claim_one(  # noqa: PLR0917 - one call site, all of its state
    conn: Connection,
    row: sa.RowMapping,
    followers: list[sa.RowMapping],
    worker: str,
    now: datetime,
    until: datetime,
    id_cache: dict[str, int | None],
    taken: list[dict[str, Any]],
) -> Claimed | None:
    reason = _invalid_reason(row)
    if reason is not None:
        set_state(
            conn,
            row["id"],
            (row["state"],),
            now,
            state=FAILED,
            last_error=f"invalid edit, not sent: {reason}",
        )
        return None
    fields: dict[str, Any] = orjson.loads(row["fields"] or "{}")
    reconcile = row["state"] != PENDING
    values: dict[str, Any] = {"state": IN_FLIGHT, "claimed_by": worker, "lease_until": until}
    base: dict[str, Any] | None = None
    sent: dict[str, Any] | None = None
    max_id_seen: int | None = row["max_id_seen"]
    if row["op"] == "create":
        values["local_ref"] = row["local_ref"] or local_ref_of(row["resource"], row["id"])
        sent = loads_or(row["sent"], None)
        if reconcile and isinstance(sent, dict):
            fields = sent  # what may have gone out is what a new record must match
        else:
            reconcile = False  # never sent: nothing to reconcile
            resolved, wait, fail = _resolve_refs(conn, row, fields)
            if fail is not None:
                set_state(conn, row["id"], (row["state"],), now, state=FAILED, last_error=f"not sent: {fail}")
                return None
            if resolved is None:
                set_state(conn, row["id"], (row["state"],), now, state=WAITING, last_error=wait)
                return None
            fields = sent = resolved
            max_id_seen = _max_remote_id(conn, row["resource"], id_cache)
            values["sent"] = dumps(sent)
            values["max_id_seen"] = max_id_seen
    elif row["op"] == "update":
        # A row INSERTed by hand has no base: the mirror as it is now is the best guess of what
        # its author saw.
        base_now = _base_of(row) or load_record(conn, row["resource"], row["target_id"])
        edits = [Edit(fields, base_now)]
        edits += [Edit(orjson.loads(f["fields"]), _base_of(f)) for f in followers]
        fields, base = coalesce(edits)
    taken.append(
        {
            "b_id": row["id"],
            "b_state": row["state"],
            "b_sent": values.get("sent"),
            "b_max": values.get("max_id_seen"),
            "b_ref": values.get("local_ref"),
        }
    )
    kept = [
        f["id"]
        for f in followers
        if set_state(
            conn,
            f["id"],
            (PENDING,),
            now,
            state=IN_FLIGHT,
            claimed_by=worker,
            lease_until=until,
            batch_id=row["id"],
        )
    ]
    return Claimed(
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
        followers=kept,
    )


def _base_of(row: sa.RowMapping) -> dict[str, Any] | None:
    base = loads_or(row["base_record"], None)
    return base if isinstance(base, dict) else None


# --- outcomes -------------------------------------------------------------------------------------


def finish(
    conn: Connection,
    unit: Claimed,
    now: datetime,
    *,
    state: str = DONE,
    remote_id: int | None = None,
    sent: Mapping[str, Any] | None = None,
    conflict: Mapping[str, Any] | None = None,
    note: str | None = None,
) -> None:
    """Record a settled unit (done, conflict or quarantined); wake a create's waiting children."""
    values: dict[str, Any] = {
        "state": state,
        "claimed_by": None,
        "lease_until": None,
        "last_error": note,
        "next_attempt_at": None,
    }
    if remote_id is not None:
        values["remote_id"] = remote_id
    if sent is not None:
        values["sent"] = dumps(dict(sent))
    if conflict:
        values["conflict"] = dumps(dict(conflict))
    if unit.followers:
        # The leader carries the coalesced edit from now on (a conflict is resolved on it).
        values["fields"] = dumps(unit.fields)
        if unit.base is not None:
            values["base_record"] = dumps(unit.base)
    set_state(conn, unit.id, (IN_FLIGHT,), now, **values)
    for fid in unit.followers:
        set_state(
            conn,
            fid,
            (IN_FLIGHT,),
            now,
            state=DONE,
            claimed_by=None,
            lease_until=None,
            resolution=f"coalesced into item {unit.id} ({state})",
        )
    if unit.op == "create" and remote_id is not None:
        wake_children(conn, local_ref_of(unit.resource, unit.id), now)


def finish_done_many(
    conn: Connection,
    done: Sequence[tuple[Claimed, int | None, Mapping[str, Any] | None, str | None]],
    now: datetime,
) -> None:
    """`finish` for many plain successes (no followers, no conflict) in one executemany:
    (unit, remote_id, sent, note) each. The push's hot path: one statement for a whole batch."""
    if not done:
        return
    stmt = (
        sa.update(Q)
        .where(Q.c.id == sa.bindparam("b_id"), Q.c.state == IN_FLIGHT)
        .values(
            state=DONE,
            claimed_by=None,
            lease_until=None,
            next_attempt_at=None,
            last_error=sa.bindparam("b_note"),
            remote_id=sa.func.coalesce(sa.bindparam("b_remote_id", type_=sa.BigInteger), Q.c.remote_id),
            sent=sa.func.coalesce(sa.bindparam("b_sent", type_=sa.Text), Q.c.sent),
            updated_at=now,
        )
    )
    conn.execute(
        stmt,
        [
            {
                "b_id": unit.id,
                "b_note": note,
                "b_remote_id": remote_id,
                "b_sent": dumps(dict(sent)) if sent is not None else None,
            }
            for unit, remote_id, sent, note in done
        ],
    )
    for unit, remote_id, _, _ in done:
        if unit.op == "create" and remote_id is not None:
            wake_children(conn, local_ref_of(unit.resource, unit.id), now)


def rebase_later_edits(
    conn: Connection, written: Sequence[tuple[Claimed, Mapping[str, Any]]], now: datetime
) -> None:
    """Our own write is not a remote change: later queued updates of a record see it as base.

    `written` holds (unit, {field: value the server now has}) for updates that sent something;
    one SELECT covers them all (the common answer: no later edits)."""
    written = [(u, w) for u, w in written if u.op == "update" and w and u.target_id is not None]
    if not written:
        return
    rows = conn.execute(
        sa.select(Q.c.id, Q.c.resource, Q.c.target_id, Q.c.base_record).where(
            # resource and target_id first: the (resource, target_id) index, not a scan of the
            # whole pending queue
            Q.c.resource.in_({u.resource for u, _ in written}),
            Q.c.target_id.in_({u.target_id for u, _ in written}),
            Q.c.op == "update",
            Q.c.state.in_((PENDING, WAITING)),
        )
    ).all()
    for row in rows:
        for unit, values in written:
            if (row.resource, row.target_id) != (unit.resource, unit.target_id) or row.id <= unit.id:
                continue
            base = loads_or(row.base_record, None)
            if isinstance(base, dict):
                base.update(values)
                conn.execute(
                    sa.update(Q).where(Q.c.id == row.id).values(base_record=dumps(base), updated_at=now)
                )


def release(
    conn: Connection,
    unit: Claimed,
    now: datetime,
    *,
    state: str,
    next_attempt_at: datetime | None,
    attempts: int,
    error: str | None,
    server_message: str | None = None,
    status: int | None = None,
) -> None:
    """Put a unit back (pending/reconcile, due at next_attempt_at) or dead-letter it (failed)."""
    values = {
        "state": state,
        "claimed_by": None,
        "lease_until": None,
        "next_attempt_at": next_attempt_at,
        "attempts": attempts,
        "last_error": error,
        "server_message": server_message,
        "error_status": status,
    }
    set_state(conn, unit.id, (IN_FLIGHT,), now, **values)
    for fid in unit.followers:
        # Followers go back to pending on their own; they are coalesced again next time.
        follower_state = FAILED if state == FAILED else PENDING
        set_state(
            conn,
            fid,
            (IN_FLIGHT,),
            now,
            state=follower_state,
            claimed_by=None,
            lease_until=None,
            batch_id=None,
            next_attempt_at=next_attempt_at,
            last_error=error,
            server_message=server_message,
            error_status=status,
        )


# --- the server-wide pause ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pause:
    not_before: datetime
    failures: int
    reason: str | None


def get_pause(bind: Bind) -> Pause | None:
    with transaction(bind) as conn:
        row = conn.execute(sa.select(writeback_pause).where(writeback_pause.c.scope == SERVER_SCOPE)).first()
    return Pause(row.not_before, row.failures, row.reason) if row else None


def set_pause(bind: Bind, not_before: datetime, failures: int, reason: str, now: datetime) -> None:
    """No request before `not_before`: the server asked (Retry-After) or is down. Never shortens one.

    One upsert: worker threads meeting the same outage set it at the same moment, and on
    PostgreSQL a read-then-insert let two of them insert (a unique violation mid-push)."""
    t = writeback_pause
    upsert = postgresql.insert if bind.dialect.name == "postgresql" else sqlite.insert
    values = {"not_before": not_before, "failures": failures, "reason": reason, "updated_at": now}
    stmt = upsert(t).values(scope=SERVER_SCOPE, **values)
    asked = stmt.excluded.not_before
    later = sa.case((asked > t.c.not_before, asked), else_=t.c.not_before)
    stmt = stmt.on_conflict_do_update(index_elements=[t.c.scope], set_={**values, "not_before": later})
    with transaction(bind) as conn:
        conn.execute(stmt)


def clear_pause(bind: Bind) -> None:
    with transaction(bind) as conn:
        conn.execute(sa.delete(writeback_pause).where(writeback_pause.c.scope == SERVER_SCOPE))
