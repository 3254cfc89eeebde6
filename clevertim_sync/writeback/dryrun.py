"""`push --dry-run`: the requests a push would send now, found without sending or writing anything.

Owns: running the push's own plan, stopped before anything is written or sent: the claims' plan
(`claims.plan_claim`: due items, FIFO per record, coalesced updates, local references, invalid
rows), batch after batch as a push claims, on a read-only connection (mirror/db.py `reading`: no
write transaction begun, no write made, not even one rolled back), then the plan of each unit
(`worker.plan_unit`: the record an update merges against, the listing a lost create is
reconciled with, the merge, the request). Writes to the server: none (GETs only). Writes to the
database: none; the server-wide pause is read, never set or lifted.

The wire is the worker's: its merge policy, its reconciliation of lost creates, the client's paths.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import Connection, Engine

from clevertim_sync.api import errors as api_errors
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.health import Policy, ServerHealth
from clevertim_sync.mirror.db import reading
from clevertim_sync.mirror.pause import PauseRow
from clevertim_sync.settings import Settings
from clevertim_sync.writeback import claims, outbox, worker
from clevertim_sync.writeback.merge import MergeResult
from clevertim_sync.writeback.outbox import FAILED, WAITING, Claimed

BATCH = 1000  # units planned per batch: the claims a push makes, larger (nothing goes on the wire)


@dataclass(frozen=True)
class PlannedRequest:
    """One request a push would send: what goes on the wire, and for which queue items."""

    method: str
    path: str  # as the server sees it: /api/contact/42
    body: dict[str, Any] | None
    resource: str
    op: str
    items: list[int]  # the leader item, then the later edits coalesced into it
    note: str | None = None


@dataclass(frozen=True)
class NotSent:
    """A queue item a push would not send now, and why."""

    item: int
    resource: str
    op: str
    why: str


@dataclass
class PushPlan:
    requests: list[PlannedRequest] = field(default_factory=list)
    not_sent: list[NotSent] = field(default_factory=list)
    paused_until: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": [asdict(r) for r in self.requests],
            "not_sent": [asdict(n) for n in self.not_sent],
            "paused_until": self.paused_until.isoformat() if self.paused_until else None,
        }


def plan_push(
    engine: Engine,
    client: ClevertimClient,
    settings: Settings,
    *,
    now: datetime | None = None,
    batch: int = BATCH,
) -> PushPlan:
    """What `push` would send now: every request with its body after the merge (GETs only).
    `batch`: units planned per batch (a test makes several batches of a small queue)."""
    started = now or datetime.now(UTC)
    plan = PushPlan()
    # The pause as the push would see it; a dry run never sets or lifts it.
    health = ServerHealth(PauseRow(engine, read_only=True), Policy.from_settings(settings))
    if (pause := health.paused_until(started)) is not None:
        plan.paused_until = pause.not_before
        return plan
    with reading(engine) as conn:
        units = _plan_claims(conn, started, batch, plan)
    run = worker._Run(engine, client, settings, lambda: started, health, read=lambda: reading(engine))
    for unit in units:
        _plan_unit(run, client, unit, plan)
    return plan


def _plan_claims(conn: Connection, started: datetime, size: int, plan: PushPlan) -> list[Claimed]:
    """The units a push would claim, and the items it would leave: the claims' own plan, batch
    after batch, never written. What a batch decided (and the wake a push begins with) is carried
    into the next as `claims.Assumed`, so each batch sees the queue as the push's next claim would."""
    assumed = claims.Assumed(woken=True)  # outbox.wake_waiting, at the start of every push
    units: list[Claimed] = []
    left: dict[int, claims.Left] = {}
    while True:
        batch = claims.plan_claim(conn, started, started, size, assumed=assumed, lock=False)
        left.update((step.row["id"], step) for step in batch.left)
        if not batch.units:
            break  # as a push stops claiming when a claim takes nothing
        units.extend(batch.units)
    # What it would not send now, and why: the items it would leave, and the open ones it would
    # not reach (not due, or behind an earlier edit of the same record).
    not_sent = {
        item: NotSent(item, step.row["resource"], step.row["op"], _left_why(step))
        for item, step in left.items()
    }
    taken = {i for u in units for i in u.item_ids}
    for row in outbox.not_in_flight(conn):
        if row.id not in taken and row.id not in not_sent:
            not_sent[row.id] = NotSent(row.id, row.resource, row.op, _why(row, started))
    plan.not_sent.extend(not_sent[item] for item in sorted(not_sent))
    return units


def _left_why(step: claims.Left) -> str:
    if step.state == FAILED:
        return f"would fail: {step.why}"
    assert step.state == WAITING
    return f"waiting: {step.why} (sent in the same push once that create has its id)"


def _why(row: Any, started: datetime) -> str:
    due = row.next_attempt_at
    if due is not None and due > started:
        return f"not due before {due.isoformat()}"
    return "waits for an earlier edit of the same record (a later push sends it)"


def _path(client: ClevertimClient, resource: str, record_id: int | None) -> str:
    return urlsplit(client._url(resource, record_id)).path  # the client's own paths


def _plan_unit(run: worker._Run, client: ClevertimClient, unit: Claimed, plan: PushPlan) -> None:
    """The push's own plan for the unit (worker.plan_unit: its reads, reconciliation and merge),
    stopped before the request it would send."""
    try:
        planned = worker.plan_unit(run, unit)
    except api_errors.NotFound as exc:
        why = f"would fail: {exc}; the record was deleted in Clevertim (or hidden from this token)"
        plan.not_sent.append(NotSent(unit.id, unit.resource, unit.op, why))
        return
    if planned.method is None:
        plan.not_sent.append(NotSent(unit.id, unit.resource, unit.op, _why_no_request(planned)))
        return
    note = planned.note
    if planned.merge is not None and (conflicts := _unsettled(planned.merge)):
        note = f"conflict on {', '.join(conflicts)}: not sent, the item waits for `queue resolve`"
    path = _path(client, unit.resource, unit.target_id if unit.op != "create" else None)
    add = PlannedRequest(planned.method, path, planned.body, unit.resource, unit.op, unit.item_ids, note)
    plan.requests.append(add)


def _unsettled(result: MergeResult) -> list[str]:
    return sorted(k for k, c in result.conflicts.items() if c.winner == "none")


def _why_no_request(planned: worker.Planned) -> str:
    unit, found = planned.unit, planned.found
    if len(found) == 1:
        return (
            f"its lost answer is found: {unit.resource} {worker.remote_id(found[0])} would be adopted, "
            "no request"
        )
    if len(found) > 1:
        ids = worker.remote_ids(found)
        return f"quarantined: {len(ids)} new records match its lost answer (ids {ids}), not resent"
    assert planned.merge is not None
    if conflicts := _unsettled(planned.merge):
        return f"conflict on {', '.join(conflicts)}: not sent, the item waits for `queue resolve`"
    return "nothing to send: Clevertim already has these values"
