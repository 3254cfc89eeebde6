"""The writeback queue's rows: the states of an item, their rules, and every statement on
`writeback_queue` (its columns are in tables.py, as migration 0002 made them).

Owns: the states and the rules over them (open, due, claimable, stuck, cancellable, needing a
person), the depth count, the local references (`local:company:7`), the claimed_by of a push, and
every transition below. Nothing else in the package issues SQL on this table: the ways in and
the people's commands (queue.py), the claims (claims.py), the worker (worker.py), its dry run,
the health check, the alerts and `status` call the functions here. The server-wide pause is
`health`'s decision, its row the mirror's (mirror/pause.py): the rules that depend on it
(`stuck`, `newest_due`) take it from their caller, who asks `health.ServerHealth`.

An item's life, each arrow one function of this module:

    insert -> pending --take--> in_flight --record--> done | conflict | quarantined   (settled)
               |   ^                |
          leave|   |wake            +--record--> pending | reconcile, due at next_attempt_at,
               v   |                             or failed (the dead letter)
        waiting | failed (a row that cannot be sent)

    failed --requeue_failed--> pending | reconcile    conflict --settle_conflict--> pending | done
    quarantined --adopt--> done    pending, waiting, failed, conflict, quarantined --cancel--> cancelled
    in_flight whose lease ran out, or whose lock holder is gone --take--> in_flight, reconciled

Every transition is conditional (`WHERE state IN <the states it leaves>`), so two workers, or a
worker and a person, never both move one item.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from clevertim_sync import resources
from clevertim_sync.health import Pause
from clevertim_sync.resources import Kind
from clevertim_sync.writeback.tables import writeback_queue

Q = writeback_queue
Bind = Engine | Connection

# --- the states ----------------------------------------------------------------------------------

PENDING = "pending"  # due at next_attempt_at (NULL: now)
WAITING = "waiting"  # a create's REF points at a queued create that has no remote id yet
IN_FLIGHT = "in_flight"  # claimed (lease), its request may be on the wire
RECONCILE = "reconcile"  # the request's outcome is unknown: look at the server before resending
DONE = "done"
FAILED = "failed"  # dead letter: last_error / server_message say why; `queue retry` re-queues
CONFLICT = "conflict"  # fields changed on both sides under the manual policy; `queue resolve`
QUARANTINED = "quarantined"  # a lost create matched several new records: a person must look
CANCELLED = "cancelled"

# "Open" items still have work to do and keep later edits of the same record waiting (FIFO per
# record); the others are final until a person acts (`queue retry`, `queue resolve`).
OPEN_STATES = (PENDING, WAITING, IN_FLIGHT, RECONCILE)
FINAL_STATES = (DONE, FAILED, CONFLICT, QUARANTINED, CANCELLED)
ALL_STATES = OPEN_STATES + FINAL_STATES
NEEDS_A_PERSON = (FAILED, CONFLICT, QUARANTINED)  # final, and settled only by `queue` commands
DUE_STATES = (PENDING, RECONCILE)  # go out once next_attempt_at has come
SETTLED = (DONE, CONFLICT, QUARANTINED)  # what a push's answer leaves for good
# Not on the wire and not closed: a person may still cancel them, and an adopted create's id is
# written into those that name it.
CANCELLABLE = (PENDING, WAITING, FAILED, CONFLICT, QUARANTINED)


def due(by: datetime, *, woken: bool = False) -> sa.ColumnElement[bool]:
    """The rule of when an item is due: pending or reconcile, and its next attempt has come by `by`
    (no next attempt: at once). `woken`: as after `wake_waiting`, a waiting item counts as pending
    (a dry run plans the wake without making it)."""
    states = (*DUE_STATES, WAITING) if woken else DUE_STATES
    return sa.and_(Q.c.state.in_(states), sa.or_(Q.c.next_attempt_at.is_(None), Q.c.next_attempt_at <= by))


def lease_over(by: datetime) -> sa.ColumnElement[bool]:
    """Claimed under a lease that ran out before `by`: its worker died, the item is reconciled."""
    return sa.and_(Q.c.state == IN_FLIGHT, Q.c.lease_until < by)


def claimable(now: datetime, due_by: datetime, *, woken: bool = False) -> sa.ColumnElement[bool]:
    return sa.or_(due(due_by, woken=woken), lease_over(now))


def _no_earlier_open(closed: Collection[int] = ()) -> sa.ColumnElement[bool]:
    """FIFO per record: no earlier item of the same record is still open. `closed`: items taken
    as final although their row still says open (a dry run's plan failed them)."""
    q2 = Q.alias("earlier")
    earlier_open = [
        q2.c.resource == Q.c.resource,
        q2.c.target_id == Q.c.target_id,
        q2.c.id < Q.c.id,
        q2.c.state.in_(OPEN_STATES),
    ]
    if closed:
        earlier_open.append(q2.c.id.not_in(list(closed)))
    return ~sa.exists().where(*earlier_open)


# --- columns as Python sees them ---------------------------------------------------------------


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads_or(text: str | None, default: Any) -> Any:
    """A JSON column's value; `default` for NULL or text that is no JSON (a row INSERTed by hand)."""
    if text is None:
        return default
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return default


@contextmanager
def transaction(bind: Bind) -> Iterator[Connection]:
    """A transaction on an Engine, or the caller's own Connection (its transaction, its commit)."""
    if isinstance(bind, Connection):
        yield bind
    else:
        with bind.begin() as conn:
            yield conn


# --- local references: a queued create's name until it has an id ---------------------------------

LOCAL_REF = re.compile(r"^local:([a-z]+):(\d+)$")


def local_ref_of(resource: str, item_id: int) -> str:
    """The name a queued create goes by until it has a remote id: `local:company:7`. The one rule:
    the local_ref column holds it (a create's way in writes it, a claim of a create INSERTed by
    hand too), and a reference names a create by it (`ref_problems` checks resource and id)."""
    return f"local:{resource}:{item_id}"


def local_refs_in(resource: str, fields: Mapping[str, Any]) -> dict[str, str]:
    """{api field: local ref} for each REF field of a create that names a queued create."""
    res = resources.BY_NAME.get(resource)
    if res is None:
        return {}
    out = {}
    for key, value in fields.items():
        prop = res.by_api.get(key)
        if (
            prop is not None
            and prop.kind is Kind.REF
            and isinstance(value, str)
            and value.startswith("local:")
        ):
            out[key] = value
    return out


def ref_problems(conn: Connection, resource: str, fields: Mapping[str, Any]) -> list[str]:
    """Each local reference must name a queued create of a resource that field may point at."""
    refs = local_refs_in(resource, fields)
    if not refs:
        return []
    res = resources.get(resource)
    ids = {int(m.group(2)) for ref in refs.values() if (m := LOCAL_REF.match(ref))}
    rows = {
        r.id: r
        for r in conn.execute(sa.select(Q.c.id, Q.c.resource, Q.c.op, Q.c.state).where(Q.c.id.in_(ids)))
    }
    problems = []
    for key, ref in refs.items():
        m = LOCAL_REF.match(ref)
        row = rows.get(int(m.group(2))) if m else None
        prop = res.by_api[key]
        targets = (
            resources.CUSTOMER_RESOURCES
            if prop.target == "customer"
            else ((prop.target,) if prop.target else ())
        )
        if m is None or row is None or row.op != "create" or row.resource != m.group(1):
            problems.append(
                f"{key} points at {ref}, which is no queued create (expected local:<resource>:<id>)"
            )
        elif row.resource not in targets:
            problems.append(f"{key} must point at a {' or '.join(targets)}, but {ref} is a {row.resource}")
        elif row.state == CANCELLED:
            problems.append(f"{key} points at {ref}, whose create was cancelled")
    return problems


def wake_children(conn: Connection, ref: str, now: datetime) -> None:
    """The items waiting for the create named `ref` get another look (it has its id, or is gone)."""
    # The JSON text holds the ref as a quoted string; the quotes keep local:company:7 from
    # matching local:company:71.
    conn.execute(
        sa.update(Q)
        .where(Q.c.state == WAITING, Q.c.fields.like(f'%"{ref}"%'))
        .values(state=PENDING, updated_at=now)
    )


def write_remote_id(conn: Connection, ref: str, remote_id: int, now: datetime) -> None:
    """Items not yet sent that name `ref`: the remote id in its place, and released."""
    rows = conn.execute(
        sa.select(Q.c.id, Q.c.resource, Q.c.state, Q.c.fields).where(
            Q.c.state.in_(CANCELLABLE), Q.c.fields.like(f'%"{ref}"%')
        )
    ).all()
    for row in rows:
        fields = loads_or(row.fields, {})
        if not isinstance(fields, dict):
            continue
        refs = local_refs_in(row.resource, fields)
        fields.update({key: remote_id for key, value in refs.items() if value == ref})
        state = PENDING if row.state == WAITING else row.state
        set_state(conn, row.id, (row.state,), now, fields=dumps(fields), state=state)


# --- reading -------------------------------------------------------------------------------------


def get_row(conn: Connection, item_id: int) -> sa.RowMapping | None:
    return conn.execute(sa.select(Q).where(Q.c.id == item_id)).mappings().first()


def select_rows(
    conn: Connection, *, state: str | None = None, resource: str | None = None, limit: int | None = None
) -> list[sa.RowMapping]:
    """Items oldest first, of one state and resource when given."""
    query = sa.select(Q).order_by(Q.c.id)
    if state is not None:
        query = query.where(Q.c.state == state)
    if resource is not None:
        query = query.where(Q.c.resource == resource)
    if limit is not None:
        query = query.limit(limit)
    return list(conn.execute(query).mappings())


def depth(conn: Connection) -> dict[str, int]:
    """{state: number of items}: what `status`, /healthz, /metrics and a push's report show."""
    rows = conn.execute(sa.select(Q.c.state, sa.func.count()).group_by(Q.c.state))
    return {str(state): int(n) for state, n in rows}


def stuck(
    conn: Connection, now: datetime, stuck_after: float, pause: Pause | None
) -> tuple[int, float | None]:
    """(how many items should have moved by now and did not, the oldest one's lateness in s).

    Stuck: an item due (its own next attempt, or the server-wide pause, whichever is later) more
    than `stuck_after` seconds ago, or claimed under a lease that ran out that long ago (its worker
    died and nobody took it over). `pause`: the server-wide pause as stored, in force or not
    (`ServerHealth.pause`).
    """
    limit = now - timedelta(seconds=stuck_after)
    since = sa.func.coalesce(Q.c.next_attempt_at, Q.c.created_at)  # when it became due
    late = sa.and_(due(limit), since < limit)  # an item queued after the limit is not late
    if pause is not None and pause.not_before > limit:
        late = sa.false()  # the server asked us to wait: waiting is right, not stuck
    lost = lease_over(limit)
    row = conn.execute(
        sa.select(sa.func.count(), sa.func.min(sa.case((late, since), else_=Q.c.lease_until))).where(
            sa.or_(late, lost)
        )
    ).one()
    oldest = (now - row[1]).total_seconds() if row[1] is not None else None
    return int(row[0]), oldest


def newest_due(conn: Connection, now: datetime, pause: Pause | None) -> int:
    """The highest id of an item a push would send now (0: none, or the server asked to wait).

    The cheap check behind "push soon after an edit": one indexed MAX. `pause`: the server-wide
    pause as stored (`ServerHealth.pause`).
    """
    if pause is not None and pause.not_before > now:
        return 0
    return int(conn.execute(sa.select(sa.func.max(Q.c.id)).where(due(now))).scalar() or 0)


def needing_a_person(conn: Connection) -> dict[str, list[int]]:
    """{state: item ids} of the failed, conflict and quarantined items, oldest first."""
    rows = conn.execute(
        sa.select(Q.c.state, Q.c.id).where(Q.c.state.in_(NEEDS_A_PERSON)).order_by(Q.c.state, Q.c.id)
    )
    out: dict[str, list[int]] = {}
    for state, item_id in rows:
        out.setdefault(str(state), []).append(int(item_id))
    return out


def remote_ids(conn: Connection, resource: str) -> set[int]:
    """The ids the creates of `resource` made (a lost create must not adopt one of them)."""
    stmt = sa.select(Q.c.remote_id).where(Q.c.resource == resource, Q.c.remote_id.is_not(None))
    return {int(r) for r in conn.execute(stmt).scalars()}


def item_of_remote(conn: Connection, resource: str, remote_id: int, *, other_than: int) -> int | None:
    """The item, other than `other_than`, whose create made `resource` `remote_id`."""
    stmt = sa.select(Q.c.id).where(Q.c.resource == resource, Q.c.remote_id == remote_id, Q.c.id != other_than)
    found = conn.execute(stmt).scalar()
    return int(found) if found is not None else None


def not_in_flight(conn: Connection) -> list[sa.Row[Any]]:
    """The open items no push has on the wire (pending, reconcile, waiting), oldest first: what a
    dry run's plan did not take is among them."""
    stmt = sa.select(Q.c.id, Q.c.resource, Q.c.op, Q.c.state, Q.c.last_error, Q.c.next_attempt_at)
    return list(conn.execute(stmt.where(Q.c.state.in_((WAITING, PENDING, RECONCILE))).order_by(Q.c.id)))


# --- ways in and the people's transitions ----------------------------------------------------


def insert(conn: Connection, values: Mapping[str, Any], now: datetime) -> int:
    """A new pending item; a create gets its local ref. Returns its id."""
    row = {**values, "state": PENDING, "created_at": now, "updated_at": now}
    item_id = int(conn.execute(sa.insert(Q).values(**row).returning(Q.c.id)).scalar_one())
    if row["op"] == "create":
        conn.execute(
            sa.update(Q).where(Q.c.id == item_id).values(local_ref=local_ref_of(row["resource"], item_id))
        )
    return item_id


def set_state(conn: Connection, item_id: int, expected: Sequence[str], now: datetime, **values: Any) -> bool:
    """Conditional change: only if the item is still in one of `expected`; True if it was."""
    result = conn.execute(
        sa.update(Q).where(Q.c.id == item_id, Q.c.state.in_(expected)).values(updated_at=now, **values)
    )
    return result.rowcount == 1


def requeue_failed(conn: Connection, item_id: int | None, now: datetime) -> int:
    """Failed items (one, or all with None) back in the queue, attempts reset; how many.

    A create that may have gone out before (it has a `sent` body and no remote id) goes to
    `reconcile`, never straight to `pending`: the server is checked before it is sent again.
    """
    query = sa.select(Q.c.id, Q.c.op, Q.c.sent, Q.c.remote_id).where(Q.c.state == FAILED)
    if item_id is not None:
        query = query.where(Q.c.id == item_id)
    n = 0
    for row in conn.execute(query).all():
        unknown = row.op == "create" and row.sent is not None and row.remote_id is None
        n += set_state(
            conn,
            row.id,
            (FAILED,),
            now,
            state=RECONCILE if unknown else PENDING,
            attempts=0,
            next_attempt_at=None,
            resolution=f"retried at {now.isoformat()}",
        )
    return n


def cancel(conn: Connection, item_id: int, now: datetime) -> bool:
    """A cancellable item cancelled (a create's waiting children get another look, and fail with
    the reason); False if it is not cancellable."""
    row = get_row(conn, item_id)
    if row is None or not set_state(
        conn, item_id, CANCELLABLE, now, state=CANCELLED, resolution="cancelled by a person"
    ):
        return False
    if row["op"] == "create":
        wake_children(conn, local_ref_of(row["resource"], item_id), now)
    return True


def settle_conflict(
    conn: Connection,
    item_id: int,
    now: datetime,
    *,
    conflict: Mapping[str, Any],
    resolution: str,
    again: Mapping[str, tuple[Any, Any]] | None = None,
) -> bool:
    """A conflict settled by a person: `again` {field: (local value, remote value it goes out
    over)} are queued once more (pending); without any the item is done."""
    if not again:
        return set_state(
            conn, item_id, (CONFLICT,), now, state=DONE, conflict=dumps(conflict), resolution=resolution
        )
    return set_state(
        conn,
        item_id,
        (CONFLICT,),
        now,
        state=PENDING,
        fields=dumps({k: local for k, (local, _) in again.items()}),
        base_record=dumps({k: remote for k, (_, remote) in again.items()}),
        conflict=dumps(conflict),
        attempts=0,
        next_attempt_at=None,
        resolution=resolution,
    )


def adopt(conn: Connection, item_id: int, remote_id: int, now: datetime, resolution: str) -> bool:
    """A quarantined create done with the record a person named; the items naming it get its id."""
    row = get_row(conn, item_id)
    if row is None or not set_state(
        conn,
        item_id,
        (QUARANTINED,),
        now,
        state=DONE,
        remote_id=remote_id,
        last_error=None,
        resolution=resolution,
    ):
        return False
    write_remote_id(conn, local_ref_of(row["resource"], item_id), remote_id, now)
    return True


# --- what a push takes ---------------------------------------------------------------------------


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
    """End the lease of every earlier lock holder's in-flight items, so they are taken at once:
    only the holder `holder` of the instance lock may call this (the lock is exclusive and freed
    when its holder dies, so every other holder is gone). They are then reconciled as after any
    lost answer (a create is looked for on the server before any resend)."""
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


def wake_waiting(bind: Bind, now: datetime) -> int:
    """Give every waiting child one more look (at the start of each push): cheap, and it makes a
    wake-up lost to a race cost one push cycle at most."""
    with transaction(bind) as conn:
        return conn.execute(
            sa.update(Q).where(Q.c.state == WAITING).values(state=PENDING, updated_at=now)
        ).rowcount


def leaders(
    conn: Connection,
    now: datetime,
    due_by: datetime,
    held: Collection[int],
    limit: int,
    *,
    woken: bool = False,
    closed: Collection[int] = (),
    lock: bool = True,
) -> list[sa.RowMapping]:
    """Up to `limit` claimable items, oldest first, with no earlier open item of their record;
    on PostgreSQL locked `FOR UPDATE SKIP LOCKED` (`lock`: a claim that writes; a dry run's plan,
    on a read-only connection, locks nothing). `held`: ids never to take (the caller's own).
    `woken`, `closed`: a dry run's plan, which writes nothing, sees the queue as after the writes
    a push would have made by then: the wake at its start (`due`), items it failed (`_no_earlier_open`)."""
    # First the oldest claimable ids (from the state index, without reading the JSON columns),
    # then the FIFO check and the rows for those only: a long queue is not re-read per claim.
    # The outer query repeats the state condition: on PostgreSQL a row another worker claimed
    # meanwhile is re-checked against it (and skipped) when it is locked.
    ready = claimable(now, due_by, woken=woken)
    if held:
        ready = sa.and_(ready, Q.c.id.not_in(list(held)))
    window = sa.select(Q.c.id).where(ready).order_by(Q.c.id).limit(limit * 4)
    in_window = sa.and_(Q.c.id.in_(window.scalar_subquery()), ready)
    found = _leaders(conn, in_window, limit, closed, lock)
    return found or _leaders(conn, ready, limit, closed, lock)  # everything in the window waits its turn


def _leaders(
    conn: Connection, candidates: sa.ColumnElement[bool], limit: int, closed: Collection[int], lock: bool
) -> list[sa.RowMapping]:
    query = sa.select(Q).where(candidates, _no_earlier_open(closed)).order_by(Q.c.id).limit(limit)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Q)
    return list(conn.execute(query).mappings())


def open_items_of(conn: Connection, records: Collection[tuple[str, int]]) -> list[sa.RowMapping]:
    """The open items of these (resource, target_id) records, oldest first."""
    if not records:
        return []
    return list(
        conn.execute(
            sa.select(Q)
            .where(
                Q.c.resource.in_({r for r, _ in records}),
                Q.c.target_id.in_({t for _, t in records}),
                Q.c.state.in_(OPEN_STATES),
            )
            .order_by(Q.c.id)
        ).mappings()
    )


def leave(conn: Connection, row: sa.RowMapping, state: str, why: str, now: datetime) -> None:
    """An item a claim does not take: `failed` (it cannot be sent) or `waiting` (for a parent's id)."""
    set_state(conn, row["id"], (row["state"],), now, state=state, last_error=why)


@dataclass(frozen=True)
class Take:
    """A leader about to be committed in flight: what it will send, for a create."""

    row: sa.RowMapping
    sent: str | None = None  # the JSON body of a create's POST
    max_id_seen: int | None = None  # the highest remote id known before it


def take(conn: Connection, takes: Sequence[Take], worker: str, until: datetime, now: datetime) -> bool:
    """Commit the leaders as in_flight under a lease, in one executemany; False if any had moved
    on meanwhile (the caller rolls back and claims again)."""
    if not takes:
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
    params = [
        {
            "b_id": t.row["id"],
            "b_state": t.row["state"],
            "b_sent": t.sent,
            "b_max": t.max_id_seen,
            "b_ref": local_ref_of(t.row["resource"], t.row["id"]) if t.row["op"] == "create" else None,
        }
        for t in takes
    ]
    result = conn.execute(stmt, params)
    if conn.dialect.supports_sane_multi_rowcount:
        return result.rowcount == len(takes)
    ids = [p["b_id"] for p in params]
    mine = conn.execute(
        sa.select(sa.func.count()).where(Q.c.id.in_(ids), Q.c.claimed_by == worker, Q.c.state == IN_FLIGHT)
    ).scalar_one()
    return int(mine) == len(ids)


def take_follower(  # noqa: PLR0917 - one call site, the claim's own state
    conn: Connection, item_id: int, leader: int, worker: str, until: datetime, now: datetime
) -> bool:
    """A later pending update carried by `leader`'s request, in flight with it."""
    return set_state(
        conn,
        item_id,
        (PENDING,),
        now,
        state=IN_FLIGHT,
        claimed_by=worker,
        lease_until=until,
        batch_id=leader,
    )


# --- what became of it ---------------------------------------------------------------------------


@dataclass(kw_only=True)
class Outcome:
    """What became of a claimed unit, as the queue records it."""

    unit: Claimed
    state: str  # settled (done, conflict, quarantined), or back (pending, reconcile, failed)
    answer: dict[str, Any] | None = None  # the server's record after the write (an update's base)
    remote_id: int | None = None  # the id a create made
    sent: dict[str, Any] | None = None
    conflict: dict[str, Any] | None = None
    note: str | None = None  # last_error: why it failed, waits or conflicts, or how it went
    # For a unit going back to the queue or to the dead letters:
    next_attempt_at: datetime | None = None
    attempts: int = 0
    server_message: str | None = None
    status: int | None = None

    @property
    def settled(self) -> bool:
        return self.state in SETTLED

    @property
    def plain(self) -> bool:
        """Done, alone and without a conflict: the common case, many recorded in one statement."""
        return self.state == DONE and not self.unit.followers and not self.conflict


def record(conn: Connection, outcomes: Sequence[Outcome], now: datetime) -> None:
    """Record what became of claimed units, inside the caller's transaction: each one settled or
    back in the queue, a made create's waiting children woken, and later edits of an updated
    record rebased on what the server now has."""
    _finish_plain(conn, [o for o in outcomes if o.plain], now)
    for o in outcomes:
        if o.plain:
            continue  # finished above
        if o.settled:
            _finish(conn, o, now)
        else:
            _release(conn, o, now)
    for o in outcomes:
        if o.unit.op == "create" and o.remote_id is not None:
            wake_children(conn, local_ref_of(o.unit.resource, o.unit.id), now)
    _rebase_later_edits(conn, [o for o in outcomes if o.settled], now)


def _finish_plain(conn: Connection, done: Sequence[Outcome], now: datetime) -> None:
    """Plain successes (no followers, no conflict) in one executemany: the push's hot path."""
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
                "b_id": o.unit.id,
                "b_note": o.note,
                "b_remote_id": o.remote_id,
                "b_sent": dumps(o.sent) if o.sent is not None else None,
            }
            for o in done
        ],
    )


def _finish(conn: Connection, o: Outcome, now: datetime) -> None:
    """A settled unit with followers or a conflict: the leader carries the coalesced edit."""
    unit = o.unit
    values: dict[str, Any] = {
        "state": o.state,
        "claimed_by": None,
        "lease_until": None,
        "last_error": o.note,
        "next_attempt_at": None,
    }
    if o.remote_id is not None:
        values["remote_id"] = o.remote_id
    if o.sent is not None:
        values["sent"] = dumps(o.sent)
    if o.conflict:
        values["conflict"] = dumps(o.conflict)
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
            resolution=f"coalesced into item {unit.id} ({o.state})",
        )


def _release(conn: Connection, o: Outcome, now: datetime) -> None:
    """A unit back in the queue (pending/reconcile, due at next_attempt_at) or dead-lettered (failed)."""
    values = {
        "state": o.state,
        "claimed_by": None,
        "lease_until": None,
        "next_attempt_at": o.next_attempt_at,
        "attempts": o.attempts,
        "last_error": o.note,
        "server_message": o.server_message,
        "error_status": o.status,
    }
    set_state(conn, o.unit.id, (IN_FLIGHT,), now, **values)
    # Followers go back to pending on their own (coalesced again next time), or fail with it;
    # their attempts are their own.
    follower = {k: v for k, v in values.items() if k != "attempts"}
    follower.update(state=FAILED if o.state == FAILED else PENDING, batch_id=None)
    for fid in o.unit.followers:
        set_state(conn, fid, (IN_FLIGHT,), now, **follower)


def _rebase_later_edits(conn: Connection, settled: Sequence[Outcome], now: datetime) -> None:
    """Our own write is not a remote change: later queued updates of a record see it as base.

    One SELECT covers every update that sent something (the common answer: no later edits)."""
    written = [
        (o.unit, {k: o.answer.get(k) for k in o.sent})
        for o in settled
        if o.unit.op == "update" and o.sent and o.answer is not None and o.unit.target_id is not None
    ]
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
