"""The writeback worker: drains due queue items through the API client, once per `push()` call.

Owns: what goes on the wire for each claimed unit (create, coalesced update, delete), the
reconciliation of items whose earlier request has an unknown outcome, turning `health`'s verdict
on a failure (columns `write` and `delete` of its table) into the item's outcome, and the order in
which an outcome is recorded.

One item's path runs one way: claims.py takes it (`claims.claim`: its plan, then written), a
worker thread plans its request (`plan_unit`, which `push --dry-run` runs too), sends it and
turns the answer into an `outbox.Outcome` (`_process`), and `_record` writes the server's answer
into the mirror (`fold.fold_many`), then the item's new state into the queue (`outbox.record`), in
one transaction. Every statement on the queue is outbox.py's; the mirror is written only through
`fold.fold_many`.

Failures: the worker reports each to the push's `ServerHealth` and follows its verdict (the
table, with its reasons, is in `clevertim_sync/health/__init__.py`): the server is down, asks to
wait or refused the token: every request pauses (`mirror/pause.py`'s row), the push stops, the
item goes back as it was (an outage says nothing about the item, and a ten-minute outage must not
dead-letter the queue); a redirect stops the push; a failure that may be the item's own is
retried later, then dead-lettered after `push.max_attempts`; a refusal of the item dead-letters
it at once and the rest flows; a DELETE that meets 404 is done. After an outage the next push
probes with one unit (`ServerHealth.recovering`); the first success lifts the pause.

Lost responses: a create whose answer may have been lost goes to `reconcile`. Before anything is
resent the resource is listed: one new record (id above the highest known before the POST) that
carries the sent values is adopted; none means the POST did not land and it is sent again;
several means a person must look (`quarantined`), never a blind resend. An update is always a
re-read plus a merge, so a lost PUT needs no special case: if it landed, the re-read shows our
values and nothing is sent again.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.engine import Connection, Engine

from clevertim_sync import shapes
from clevertim_sync.api import errors as api_errors
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.health import Action, Decision, Policy, ServerHealth, Verdict, Where
from clevertim_sync.health.delays import Rng
from clevertim_sync.mirror.failures import error_text
from clevertim_sync.mirror.pause import PauseRow
from clevertim_sync.settings import Settings
from clevertim_sync.writeback import claims, outbox
from clevertim_sync.writeback.fold import Fold, fold_many
from clevertim_sync.writeback.merge import MergeResult, matches_identity, matches_sent, merge
from clevertim_sync.writeback.outbox import (
    CONFLICT,
    DONE,
    FAILED,
    PENDING,
    QUARANTINED,
    RECONCILE,
    WAITING,
    Claimed,
)

log = structlog.get_logger(__name__)

# Outcomes are recorded once this many rounds of `concurrency` requests have finished.
RECORD_ROUNDS = 4


@dataclass
class PushReport:
    """What one push did. `ok` is False when an item was dead-lettered or quarantined; items left
    in conflict, and a pause the server asked for (`paused_until`), are not errors of the push."""

    claimed: int = 0
    done: int = 0
    adopted: int = 0  # lost creates found on the server and bound to their item
    conflicts: int = 0
    failed: int = 0
    quarantined: int = 0
    retry_later: int = 0
    waiting: int = 0
    writes: int = 0  # POST/PUT/DELETE requests sent
    paused_until: datetime | None = None
    stopped: str | None = None
    # The server refused the token or redirected: nothing can go out until a person acts.
    halted: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        # A pause the server asked for (429, 503) is not a failure; a refused token or a redirect is.
        return not (self.failed or self.quarantined or self.halted)

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        if self.paused_until is not None:
            out["paused_until"] = self.paused_until.isoformat()
        out["ok"] = self.ok
        return out


class _Run:
    """One push: its settings, clock, stop flag and report, shared by the worker threads."""

    def __init__(  # noqa: PLR0917 - built in one place, from push()'s own arguments
        self,
        engine: Engine,
        client: ClevertimClient,
        settings: Settings,
        clock: Callable[[], datetime],
        health: ServerHealth,
        caller_stop: threading.Event | None = None,
        *,
        read: Callable[[], AbstractContextManager[Connection]] | None = None,
    ) -> None:
        self.engine = engine
        # A connection for the plan's reads (a lost create's known ids): a dry run's reads only.
        self.read = read or engine.connect
        self.client = client
        self.push = settings.push
        self.clock = clock
        self.health = health
        # Set by the push itself (a pause the server asked for, a rejected token).
        self.stop = threading.Event()
        # Set by the caller (the daemon is stopping): never set by the push, only read.
        self.caller_stop = caller_stop
        self.lock = threading.Lock()
        self.report = PushReport()

    def stopping(self) -> bool:
        """True once no new request may go out: the push stopped itself or the caller asked."""
        if self.stop.is_set():
            return True
        if self.caller_stop is not None and self.caller_stop.is_set():
            with self.lock:
                if self.report.stopped is None:
                    self.report.stopped = "stop requested; the rest of the queue is left for next time"
            return True
        return False

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self.report, name, getattr(self.report, name) + n)


@dataclass(kw_only=True)
class _Outcome(outbox.Outcome):
    """What a worker thread learned about one unit; the push loop records it in the database.

    Threads do only HTTP (and the rare read for a reconciliation), so a request slot is never
    held up by a database lock; the loop records the outcomes of many units per transaction.
    `answer` (the server's record) is folded into the mirror as `fold_op`.
    """

    counter: str  # the PushReport field to bump
    fold_op: str | None = None  # insert | update | delete; None: nothing to fold

    def fold(self) -> Fold | None:
        if self.answer is None or self.fold_op is None:
            return None
        return Fold(self.unit.resource, self.answer, self.fold_op, self.unit.id)


def push(
    engine: Engine,
    client: ClevertimClient,
    settings: Settings,
    *,
    now: datetime | None = None,
    worker_id: str | None = None,
    rng: Rng | None = None,
    stop: threading.Event | None = None,
    holder: str | None = None,
    policy: Policy | None = None,
) -> PushReport:
    """Send every due queue item once (children of creates made in this push too), then return.

    `now` pins the clock (tests simulate time passing with it); leases and the due check use it.
    Up to `settings.push.concurrency` requests are in flight at once, each for a different record.
    `stop` (the daemon's stopping event): once set, nothing more is claimed or sent; requests
    already on the wire finish and their outcome is recorded, claimed units not yet sent go back
    as they were (no attempt spent), and push() returns with `report.stopped` saying so.
    `holder`: the id of the mirror's instance lock, when the caller holds it: the items a dead
    earlier holder left in flight are reconciled now, not after their lease (outbox.recover_dead_holders).
    `policy`: what to do after an API error (default: `health`'s, with the settings' numbers).
    """
    clock: Callable[[], datetime] = (lambda: now) if now is not None else (lambda: datetime.now(UTC))
    started = clock()
    health = ServerHealth(
        PauseRow(engine), policy or Policy.from_settings(settings), clock=clock, rng=rng or random.Random()
    )
    run = _Run(engine, client, settings, clock, health, stop)
    pause = health.paused_until(started)
    if pause is not None:
        run.report.paused_until = pause.not_before
        run.report.stopped = f"paused until {pause.not_before.isoformat()}: {pause.reason}"
        log.info("push.paused", until=pause.not_before.isoformat(), reason=pause.reason)
        return run.report
    worker = outbox.worker_id(
        worker_id or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}", holder
    )
    if holder is not None:
        recovered = outbox.recover_dead_holders(engine, holder, clock())
        if recovered:
            log.info("push.recovering", items=recovered, reason="left in flight by a holder that is gone")
    outbox.wake_waiting(engine, started)
    concurrency = settings.push.concurrency
    batch = RECORD_ROUNDS * concurrency
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="push") as pool:
        inflight: set[Future[_Outcome]] = set()
        ready: list[_Outcome] = []
        # Items claimed by this push whose outcome is not recorded yet: with a short lease they
        # could expire while queued or while their outcome waits for its batch.
        held: set[int] = set()
        exhausted = False
        while True:
            # After an outage one unit probes the server alone (half-open): a server still down
            # then sees one request per push, not `concurrency` of them.
            probing = health.recovering
            room = not inflight if probing else len(inflight) < concurrency * 2
            if not exhausted and not run.stopping() and room:
                # Due by the push's start: an item that failed in this push waits for the next one.
                units = claims.claim(
                    engine,
                    worker=worker,
                    now=clock(),
                    due_by=started,
                    lease=settings.push.lease,
                    limit=1 if probing else max(concurrency * 4, 16),
                    held=held,
                )
                run.count("claimed", len(units))
                exhausted = not units
                inflight.update(pool.submit(_process, run, u) for u in units)
                held.update(i for u in units for i in u.item_ids)
            if not inflight and not ready:
                break
            if inflight:
                finished, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                ready.extend(fut.result() for fut in finished)
            # Record in batches of several rounds of requests: the fixed cost of a transaction and
            # of each statement (under load, mostly the wait to get the GIL back from the worker
            # threads after every database call) is paid once per batch, while the threads keep
            # the request slots busy. The outcomes wait for a fraction of a second at most.
            if ready and (len(ready) >= batch or not inflight):
                _record(run, ready)
                held.difference_update(i for o in ready for i in o.unit.item_ids)
                if any(o.unit.op == "create" and o.remote_id is not None for o in ready):
                    exhausted = False  # a create may have woken its children: look again
                ready = []
    with engine.connect() as conn:
        run.report.waiting = outbox.depth(conn).get(WAITING, 0)
    if (p := health.paused_until(clock())) is not None:
        run.report.paused_until = p.not_before
    log.info("push.finished", **{k: v for k, v in run.report.as_dict().items() if k != "errors"})
    return run.report


# --- recording outcomes ----------------------------------------------------------------------------


def _record(run: _Run, outcomes: list[_Outcome]) -> None:
    """Record outcomes, many per transaction; if that fails, one by one so that one bad outcome
    cannot lose the others. An outcome that cannot be recorded leaves its item in flight: the
    next push reconciles it against the server, so nothing is sent twice."""
    now = run.clock()
    try:
        with run.engine.begin() as conn:
            _record_in(conn, outcomes, now)
    except Exception:
        log.exception("push.record_batch_failed", items=[o.unit.id for o in outcomes])
        for o in outcomes:
            try:
                with run.engine.begin() as conn:
                    _record_in(conn, [o], now)
            except Exception:
                log.exception("push.record_failed", item=o.unit.id)
                run.report.errors.append(f"item {o.unit.id}: its outcome could not be recorded")
                continue
    for o in outcomes:
        run.count(o.counter)
        if o.counter == "adopted":
            run.count("done")


def _record_in(conn: Connection, outcomes: list[_Outcome], now: datetime) -> None:
    """The server's answers into the mirror, then the items' states into the queue, in the
    caller's transaction. The answers of a batch are folded in together: a few statements per
    resource rather than several per record (the CPU cost of a push at concurrency 8)."""
    fold_many(conn, [f for o in outcomes if (f := o.fold()) is not None])
    outbox.record(conn, outcomes, now)


# --- one unit, in a worker thread -------------------------------------------------------------------


def _process(run: _Run, unit: Claimed) -> _Outcome:
    if run.stopping():
        # The push stopped before this unit was sent: back as it was, no attempt spent.
        return _Outcome(
            unit=unit,
            state=_back_state(unit, None),
            counter="retry_later",
            attempts=unit.attempts,
            note=run.report.stopped,
        )
    try:
        return _send(run, plan_unit(run, unit))
    except api_errors.ApiError as exc:
        return _on_api_error(run, unit, exc)
    except Exception as exc:  # a bug must not leave the item claimed until its lease runs out
        log.exception("push.internal_error", item=unit.id, resource=unit.resource, op=unit.op)
        with run.lock:
            run.report.errors.append(f"item {unit.id}: internal error {type(exc).__name__}")
        return _Outcome(
            unit=unit,
            state=FAILED,
            counter="failed",
            attempts=unit.attempts + 1,
            note=f"internal error in clevertim-sync ({error_text(exc)}); "
            "please report it, then `clevertim-sync queue retry`",
        )


@dataclass
class Planned:
    """What the push does for one unit, decided before anything is written to the server: the
    request (`method` POST, PUT or DELETE with its `body`), or, when none is needed, the outcome
    as it stands (`settled`: a lost create adopted or quarantined, an update with nothing to send).
    `push --dry-run` (dryrun.py) stops here; `_send` sends it."""

    unit: Claimed
    method: str | None = None
    body: dict[str, Any] | None = None
    note: str | None = None  # why the request goes (a create resent after a lost answer)
    found: list[dict[str, Any]] = field(default_factory=list)  # a lost create's candidates
    merge: MergeResult | None = None  # an update's three-way merge against the record re-read
    settled: _Outcome | None = None


def plan_unit(run: _Run, unit: Claimed) -> Planned:
    """The push's plan for one claimed unit: the reads it needs (a lost create's listing, an
    update's record), the merge, and the request it would send. Raises the ApiError of a read."""
    if unit.op == "create":
        return _plan_create(run, unit)
    if unit.op == "update":
        return _plan_update(run, unit)
    return Planned(unit, "DELETE")


def _send(run: _Run, planned: Planned) -> _Outcome:
    """The planned request on the wire, and the outcome its answer makes."""
    unit = planned.unit
    if planned.settled is not None:
        if planned.settled.counter == "adopted":
            log.info(
                "push.adopted", item=unit.id, resource=unit.resource, remote_id=remote_id(planned.found[0])
            )
        elif planned.settled.counter == "quarantined":
            ids = remote_ids(planned.found)
            log.warning("push.quarantined", item=unit.id, resource=unit.resource, candidates=ids)
        return planned.settled
    assert planned.method is not None
    run.count("writes")
    if planned.method == "POST":
        if planned.note is not None:
            log.info("push.resend", item=unit.id, resource=unit.resource, reason="no record matched")
        record = run.client.create(unit.resource, unit.fields)
        run.health.succeeded()
        return _created(unit, record, "done", sent=unit.fields)
    assert unit.target_id is not None
    if planned.method == "PUT":
        assert planned.merge is not None
        assert planned.body is not None
        record = run.client.update(unit.resource, unit.target_id, planned.body)
        return _update_outcome(unit, planned.merge, record)
    run.client.delete(unit.resource, unit.target_id)
    run.health.succeeded()
    return _deleted(unit)


def _plan_create(run: _Run, unit: Claimed) -> Planned:
    if not unit.reconcile:
        return Planned(unit, "POST", unit.fields)
    found = _reconcile_create(run, unit)
    if len(found) == 1:
        adopted = _created(unit, found[0], "adopted", note="adopted after a lost answer")
        return Planned(unit, found=found, settled=adopted)
    if len(found) > 1:
        ids = remote_ids(found)
        quarantined = _Outcome(
            unit=unit,
            state=QUARANTINED,
            counter="quarantined",
            note=f"the answer to this create was lost and {len(ids)} new {unit.resource} records "
            f"match it (ids {ids}); it was not resent. Check them in Clevertim and delete any "
            f"duplicate, then `clevertim-sync queue adopt {unit.id} ID` with the id of yours "
            "(or `queue cancel` it if none is)",
        )
        return Planned(unit, found=found, settled=quarantined)
    return Planned(unit, "POST", unit.fields, note="sent again: no record matches the earlier attempt")


def _reconcile_create(run: _Run, unit: Claimed) -> list[dict[str, Any]]:
    """The records that appeared since the create was journaled and carry what it sent: all of
    it, after normalising as a server does; failing that, the fields that identify the kind (a
    server may also fill or change others). Several: the caller quarantines, never resends."""
    listing = run.client.list(unit.resource)
    run.health.succeeded()
    with run.read() as conn:
        taken = outbox.remote_ids(conn, unit.resource)
    floor = unit.max_id_seen if unit.max_id_seen is not None else -1
    new = []
    for r in listing:
        rid, _ = shapes.record_id(r)
        if rid is not None and rid > floor and rid not in taken:
            new.append(r)  # as served ("id": "445" too): the fold keeps raw so
    full = [r for r in new if matches_sent(r, unit.fields, unit.resource)]
    return full or [r for r in new if matches_identity(r, unit.fields, unit.resource)]


def _plan_update(run: _Run, unit: Claimed) -> Planned:
    assert unit.target_id is not None
    remote = run.client.get(unit.resource, unit.target_id)
    run.health.succeeded()
    result = merge(unit.fields, unit.base, remote, run.push.conflict_policy, resource=unit.resource)
    if result.send:
        return Planned(unit, "PUT", result.send, merge=result)
    return Planned(unit, merge=result, settled=_update_outcome(unit, result, remote))


def _update_outcome(unit: Claimed, result: MergeResult, record: dict[str, Any]) -> _Outcome:
    """An update's outcome: `record` is the server's answer to the PUT, or the record re-read
    when nothing was sent."""
    conflict = {k: c.as_json() for k, c in result.conflicts.items()}
    state = CONFLICT if result.needs_resolution else DONE
    note = None
    if state == CONFLICT:
        note = (
            f"changed here and in Clevertim: {', '.join(sorted(conflict))}; the other fields were sent. "
            f"`clevertim-sync queue show {unit.id}` shows both sides and how to settle it"
        )
    # Fold what we wrote (or, after an unknown outcome, what we found) so the next pull sees no news.
    fold = record if (result.send or unit.reconcile) else None
    return _Outcome(
        unit=unit,
        state=state,
        counter="conflicts" if state == CONFLICT else "done",
        answer=fold,
        fold_op="update",
        sent=result.send,
        conflict=conflict,
        note=note,
    )


def _created(
    unit: Claimed,
    record: dict[str, Any],
    counter: str,
    *,
    sent: dict[str, Any] | None = None,
    note: str | None = None,
) -> _Outcome:
    """A create done: the server's record (its answer, or the one adopted) bound to the item."""
    return _Outcome(
        unit=unit,
        state=DONE,
        counter=counter,
        answer=record,
        fold_op="insert",
        remote_id=remote_id(record),
        sent=sent,
        note=note,
    )


def remote_id(record: dict[str, Any]) -> int:
    """The id of a record the server answered with, by meaning ("445" is 445)."""
    rid, _ = shapes.record_id(record)
    assert rid is not None  # the client refuses a write's answer without one; candidates have one
    return rid


def remote_ids(records: list[dict[str, Any]]) -> list[int]:
    """A lost create's candidates' ids, in order, by meaning."""
    return sorted(remote_id(r) for r in records)


def _deleted(unit: Claimed, note: str | None = None) -> _Outcome:
    return _Outcome(
        unit=unit, state=DONE, counter="done", answer={"id": unit.target_id}, fold_op="delete", note=note
    )


# --- failures -------------------------------------------------------------------------------------


def _back_state(unit: Claimed, exc: api_errors.ApiError | None) -> str:
    """Where a unit goes when it must be tried again: a create that may have landed is reconciled."""
    unknown = unit.reconcile or (exc is not None and exc.may_have_reached_server)
    return RECONCILE if unit.op == "create" and unknown else PENDING


def _on_api_error(run: _Run, unit: Claimed, exc: api_errors.ApiError) -> _Outcome:
    """The item's outcome as `health` decides it (a pause it decides is already set)."""
    log.warning(
        "push.item_failed",
        item=unit.id,
        resource=unit.resource,
        op=unit.op,
        reason=type(exc).__name__,
        status=exc.status,
        retry_after=exc.retry_after,
    )
    where = Where.DELETE if unit.op == "delete" else Where.WRITE
    verdict = run.health.after_error(exc, where, attempts=unit.attempts)
    decision = verdict.decision
    if decision.stop:
        _stop(run, decision, verdict, exc)
    common: dict[str, Any] = {"server_message": exc.server_message, "status": exc.status, "note": str(exc)}
    if decision.action is Action.DONE:
        run.health.succeeded()  # the server answered: whatever outage there was is over
        return _deleted(unit, f"the record was already gone (HTTP {exc.status}): nothing to delete")
    if decision.action in (Action.BACK, Action.RETRY):
        return _Outcome(
            unit=unit,
            state=_back_state(unit, exc),
            counter="retry_later",
            next_attempt_at=verdict.retry_at,
            attempts=verdict.attempts,
            **common,
        )
    if verdict.gave_up:
        error = (
            f"gave up after {verdict.attempts} attempts: {exc}; "
            "fix the cause, then `clevertim-sync queue retry`"
        )
    elif isinstance(exc, api_errors.NotFound) and unit.op == "update":
        error = (
            f"{exc}; the record was deleted in Clevertim (or hidden from this token), "
            "so the update was dropped"
        )
    else:
        error = f"{exc}; fix the cause, then `clevertim-sync queue retry`, or `queue cancel`"
    with run.lock:
        run.report.errors.append(f"item {unit.id}: {exc}")
    return _Outcome(
        unit=unit, state=FAILED, counter="failed", attempts=verdict.attempts, **{**common, "note": error}
    )


def _stop(run: _Run, decision: Decision, verdict: Verdict, exc: api_errors.ApiError) -> None:
    """No new request in this push; the report says why (`halted`: a person must act)."""
    why = f"paused until {verdict.paused_until.isoformat()}" if verdict.paused_until else "push stopped"
    if decision.halt:
        why += "; the token or clevertim.url needs a person"
    with run.lock:
        run.report.stopped = f"{why}: {exc}"
        if decision.halt:
            run.report.halted = run.report.stopped
    run.stop.set()
