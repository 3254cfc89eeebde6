"""The writeback worker: drains due queue items through the API client, once per `push()` call.

Owns: what goes on the wire for each claimed unit (create, coalesced update, delete), the
reconciliation of items whose earlier request has an unknown outcome, the classification of
failures into retry / pause / dead letter, and folding each server answer into the mirror.

Must not import: the CLI, the daemon, the pull. State changes go through queue.py; the mirror
is written only through `store.apply_local_result`.

Failures, and why they are treated as they are:
- The server is down or asks to wait (429, 502/503/504, cannot connect): a server-wide pause
  (`writeback_pause`) until Retry-After, or exponential backoff with jitter without one; no
  request at all goes out before it ends. These do not spend the item's attempts: an outage says
  nothing about the item, and a ten-minute outage must not dead-letter the whole queue.
- The item's request failed in a way that may be its own (timeout or reset after sending, garbled
  answer): attempts + 1, backoff with jitter, dead letter after `push.max_attempts`.
- The server refused the item (400, 401/403, 404 on an update, 500 = body not parsed, 501):
  dead letter at once with the server's message; other records keep flowing. A 401 also stops
  this push (every other request would fail the same way).
- A DELETE that meets 404 is done: the record is gone, which is what was asked.

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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from clevertim_sync.api import errors as api_errors
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.mirror.store import apply_local_result
from clevertim_sync.retry import Rng, next_delay
from clevertim_sync.settings import Settings
from clevertim_sync.writeback import queue
from clevertim_sync.writeback.merge import matches_sent, merge
from clevertim_sync.writeback.tables import (
    CONFLICT,
    DONE,
    FAILED,
    PENDING,
    QUARANTINED,
    RECONCILE,
    writeback_queue,
)

log = structlog.get_logger(__name__)

OUTAGE_ERRORS = (api_errors.RateLimited, api_errors.ServiceUnavailable, api_errors.TransportError)


@dataclass
class PushReport:
    """What one push did. `ok` is False when an item was dead-lettered or quarantined, or the push
    stopped early (pause, auth); items left in conflict are not errors of the push."""

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
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.quarantined or self.stopped)

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
        rng: Rng,
        outage_failures: int,
    ) -> None:
        self.engine = engine
        self.client = client
        self.push = settings.push
        self.clock = clock
        self.rng = rng
        self.outage_failures = outage_failures
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.report = PushReport()

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self.report, name, getattr(self.report, name) + n)


def push(
    engine: Engine,
    client: ClevertimClient,
    settings: Settings,
    *,
    now: datetime | None = None,
    worker_id: str | None = None,
    rng: Rng | None = None,
) -> PushReport:
    """Send every due queue item once (children of creates made in this push too), then return.

    `now` pins the clock (tests simulate time passing with it); leases and the due check use it.
    Up to `settings.push.concurrency` requests are in flight at once, each for a different record.
    """
    clock: Callable[[], datetime] = (lambda: now) if now is not None else (lambda: datetime.now(UTC))
    started = clock()
    pause = queue.get_pause(engine)
    run = _Run(engine, client, settings, clock, rng or random.Random(), pause.failures if pause else 0)
    if pause is not None and pause.not_before > started:
        run.report.paused_until = pause.not_before
        run.report.stopped = f"paused until {pause.not_before.isoformat()}: {pause.reason}"
        log.info("push.paused", until=pause.not_before.isoformat(), reason=pause.reason)
        return run.report
    worker = worker_id or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
    queue.wake_waiting(engine, started)
    concurrency = settings.push.concurrency
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="push") as pool:
        inflight: set[Future[None]] = set()
        exhausted = False
        while True:
            # After an outage one unit probes the server alone (half-open): a server still down
            # then sees one request per push, not `concurrency` of them.
            probing = run.outage_failures > 0
            room = not inflight if probing else len(inflight) < concurrency * 2
            if not exhausted and not run.stop.is_set() and room:
                # Due by the push's start: an item that failed in this push waits for the next one.
                units = queue.claim(
                    engine,
                    worker=worker,
                    now=started,
                    lease=settings.push.lease,
                    limit=1 if probing else concurrency * 4,
                )
                run.count("claimed", len(units))
                exhausted = not units
                inflight.update(pool.submit(_process, run, u) for u in units)
            if not inflight:
                break
            finished, inflight = wait(inflight, return_when=FIRST_COMPLETED)
            for fut in finished:
                fut.result()
                exhausted = False  # a create may have woken its children: look again
    with engine.connect() as conn:
        run.report.waiting = conn.execute(
            sa.select(sa.func.count()).where(writeback_queue.c.state == "waiting")
        ).scalar_one()
    p = queue.get_pause(engine)
    if p is not None and p.not_before > clock():
        run.report.paused_until = p.not_before
    log.info("push.finished", **{k: v for k, v in run.report.as_dict().items() if k != "errors"})
    return run.report


# --- one unit -----------------------------------------------------------------------------------


def _process(run: _Run, unit: queue.Claimed) -> None:
    if run.stop.is_set():
        _release_untouched(run, unit)
        return
    try:
        if unit.op == "create":
            _create(run, unit)
        elif unit.op == "update":
            _update(run, unit)
        else:
            _delete(run, unit)
    except api_errors.ApiError as exc:
        _on_api_error(run, unit, exc)
    except Exception as exc:  # a bug must not leave the item claimed until its lease runs out
        log.exception("push.internal_error", item=unit.id, resource=unit.resource, op=unit.op)
        with run.engine.begin() as conn:
            queue.release(
                conn,
                unit,
                run.clock(),
                state=FAILED,
                next_attempt_at=None,
                attempts=unit.attempts + 1,
                error=f"internal error in clevertim-sync ({type(exc).__name__}: {exc}); "
                "please report it, then `clevertim-sync queue retry`",
            )
        run.count("failed")
        run.report.errors.append(f"item {unit.id}: internal error {type(exc).__name__}")


def _succeeded(run: _Run) -> None:
    """A request went through: an outage pause from an earlier push is over."""
    if run.outage_failures:
        with run.lock:
            if run.outage_failures:
                run.outage_failures = 0
                queue.clear_pause(run.engine)


def _create(run: _Run, unit: queue.Claimed) -> None:
    if unit.reconcile:
        listing = run.client.list(unit.resource)
        _succeeded(run)
        with run.engine.connect() as conn:
            taken = {
                r
                for (r,) in conn.execute(
                    sa.select(writeback_queue.c.remote_id).where(
                        writeback_queue.c.resource == unit.resource, writeback_queue.c.remote_id.is_not(None)
                    )
                )
            }
        floor = unit.max_id_seen if unit.max_id_seen is not None else -1
        found = [
            r
            for r in listing
            if isinstance(r.get("id"), int)
            and r["id"] > floor
            and r["id"] not in taken
            and matches_sent(r, unit.fields)
        ]
        if len(found) == 1:
            record = found[0]
            with run.engine.begin() as conn:
                apply_local_result(conn, unit.resource, record, op="insert", queue_item_id=unit.id)
                queue.finish(
                    conn, unit, run.clock(), remote_id=record["id"], note="adopted after a lost answer"
                )
            run.count("done")
            run.count("adopted")
            log.info("push.adopted", item=unit.id, resource=unit.resource, remote_id=record["id"])
            return
        if len(found) > 1:
            ids = sorted(r["id"] for r in found)
            with run.engine.begin() as conn:
                queue.finish(
                    conn,
                    unit,
                    run.clock(),
                    state=QUARANTINED,
                    note=f"the answer to this create was lost and {len(ids)} new {unit.resource} records "
                    f"match it (ids {ids}); it was not resent. Check them in Clevertim, delete duplicates, "
                    "then `clevertim-sync queue cancel` this item",
                )
            run.count("quarantined")
            log.warning("push.quarantined", item=unit.id, resource=unit.resource, candidates=ids)
            return
        log.info("push.resend", item=unit.id, resource=unit.resource, reason="no record matched")
    run.count("writes")
    record = run.client.create(unit.resource, unit.fields)
    _succeeded(run)
    with run.engine.begin() as conn:
        apply_local_result(conn, unit.resource, record, op="insert", queue_item_id=unit.id)
        queue.finish(conn, unit, run.clock(), remote_id=int(record["id"]), sent=unit.fields)
    run.count("done")


def _update(run: _Run, unit: queue.Claimed) -> None:
    assert unit.target_id is not None
    remote = run.client.get(unit.resource, unit.target_id)
    _succeeded(run)
    result = merge(unit.fields, unit.base, remote, run.push.conflict_policy)
    record = remote
    if result.send:
        run.count("writes")
        record = run.client.update(unit.resource, unit.target_id, result.send)
    conflict = {k: c.as_json() for k, c in result.conflicts.items()}
    state = CONFLICT if result.needs_resolution else DONE
    note = None
    if state == CONFLICT:
        note = (
            f"changed here and in Clevertim: {', '.join(sorted(conflict))}; the other fields were sent. "
            "`clevertim-sync queue resolve ID --keep local|remote`"
        )
    with run.engine.begin() as conn:
        if result.send or unit.reconcile:
            apply_local_result(conn, unit.resource, record, op="update", queue_item_id=unit.id)
        queue.finish(conn, unit, run.clock(), state=state, sent=result.send, conflict=conflict, note=note)
        queue.rebase_later_edits(conn, unit, {k: record.get(k) for k in result.send}, run.clock())
    run.count("conflicts" if state == CONFLICT else "done")


def _delete(run: _Run, unit: queue.Claimed) -> None:
    assert unit.target_id is not None
    note = None
    try:
        run.count("writes")
        run.client.delete(unit.resource, unit.target_id)
    except api_errors.NotFound:
        note = "the record was already gone (404): nothing to delete"
    _succeeded(run)
    with run.engine.begin() as conn:
        apply_local_result(conn, unit.resource, {"id": unit.target_id}, op="delete", queue_item_id=unit.id)
        queue.finish(conn, unit, run.clock(), note=note)
    run.count("done")


# --- failures -------------------------------------------------------------------------------------


def _back_state(unit: queue.Claimed, exc: api_errors.ApiError | None) -> str:
    """Where a unit goes when it must be tried again: a create that may have landed is reconciled."""
    unknown = unit.reconcile or (exc is not None and exc.may_have_reached_server)
    return RECONCILE if unit.op == "create" and unknown else PENDING


def _release_untouched(run: _Run, unit: queue.Claimed) -> None:
    """The push stopped before this unit was sent: back as it was, no attempt spent."""
    with run.engine.begin() as conn:
        queue.release(
            conn,
            unit,
            run.clock(),
            state=_back_state(unit, None),
            next_attempt_at=None,
            attempts=unit.attempts,
            error=run.report.stopped,
        )
    run.count("retry_later")


def _on_api_error(run: _Run, unit: queue.Claimed, exc: api_errors.ApiError) -> None:
    now = run.clock()
    log.warning(
        "push.item_failed",
        item=unit.id,
        resource=unit.resource,
        op=unit.op,
        reason=type(exc).__name__,
        status=exc.status,
        retry_after=exc.retry_after,
    )
    common: dict[str, Any] = {"server_message": exc.server_message, "status": exc.status}
    if isinstance(exc, OUTAGE_ERRORS):
        with run.lock:
            run.outage_failures += 1
            failures = run.outage_failures
        delay = next_delay(
            failures, exc.retry_after, base=run.push.backoff_base, cap=run.push.backoff_max, rng=run.rng
        )
        until = now + timedelta(seconds=delay)
        queue.set_pause(run.engine, until, failures, str(exc), now)
        run.report.stopped = f"server unavailable, paused until {until.isoformat()}: {exc}"
        run.stop.set()
        with run.engine.begin() as conn:
            queue.release(
                conn,
                unit,
                now,
                state=_back_state(unit, exc),
                next_attempt_at=until,
                attempts=unit.attempts,  # the server's wait is not the item's fault
                error=str(exc),
                **common,
            )
        run.count("retry_later")
        return
    if exc.transient:
        attempts = unit.attempts + 1
        if attempts < run.push.max_attempts:
            delay = next_delay(
                attempts, exc.retry_after, base=run.push.backoff_base, cap=run.push.backoff_max, rng=run.rng
            )
            with run.engine.begin() as conn:
                queue.release(
                    conn,
                    unit,
                    now,
                    state=_back_state(unit, exc),
                    next_attempt_at=now + timedelta(seconds=max(delay, 0.001)),
                    attempts=attempts,
                    error=str(exc),
                    **common,
                )
            run.count("retry_later")
            return
        error = f"gave up after {attempts} attempts: {exc}; fix the cause, then `clevertim-sync queue retry`"
    elif isinstance(exc, api_errors.NotFound) and unit.op == "update":
        error = (
            f"{exc}; the record was deleted in Clevertim (or hidden from this token), "
            "so the update was dropped"
        )
        attempts = unit.attempts + 1
    else:
        error = f"{exc}; fix the cause, then `clevertim-sync queue retry`, or `queue cancel`"
        attempts = unit.attempts + 1
    if isinstance(exc, api_errors.AuthFailed):
        run.report.stopped = f"authentication failed, push stopped: {exc}"
        run.stop.set()
    with run.engine.begin() as conn:
        queue.release(
            conn, unit, now, state=FAILED, next_attempt_at=None, attempts=attempts, error=error, **common
        )
    run.count("failed")
    with run.lock:
        run.report.errors.append(f"item {unit.id}: {exc}")
