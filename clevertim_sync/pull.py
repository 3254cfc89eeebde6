"""One pull: every (or some) resource's full listing, diffed against the mirror and applied.

Owns: the order of a pull (parents first, `resources.PULL_ORDER`), per-resource isolation (a
listing that fails leaves that resource's tables as they were and the others go on), the
mass-delete guard's enforcement, the run record, and the `pull.*` log events.

Each resource is one transaction: load its index, diff, then either apply everything (current
rows, child rows, history, the run's counts, resource_status) or, when the guard refuses, nothing
but the record of the refusal. `plan_pull` (`sync --dry-run`) runs the same listings, diff and
guard and writes nothing.

A failure that is about the server rather than the resource (`ApiError.server_wide`: cannot
connect, a redirect, a login page or a refused token, a rate limit) stops the pull at the first
one: the resources not yet pulled are skipped with one message (`PullReport.halted`), instead of
each being retried against a server that will refuse it too. A rate limit also sets the
writeback's server-wide pause, so the push waits as well.

Must not import: httpx (the client is passed in), SQL beyond `mirror.store` and the writeback's
pause (`writeback.outbox`).
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson
import sqlalchemy as sa
import structlog

from clevertim_sync import documents, photos
from clevertim_sync import resources as registry
from clevertim_sync.api.errors import ApiError, RateLimited
from clevertim_sync.diff import changed_fields, compute_changes, mass_delete_refused
from clevertim_sync.errors import ClevertimSyncError, MassDeleteRefused, MirrorError
from clevertim_sync.mirror import store
from clevertim_sync.mirror.rowpool import RowPool
from clevertim_sync.mirror.store import ResourceCounts
from clevertim_sync.settings import PullSettings, Settings
from clevertim_sync.writeback import outbox

log = structlog.get_logger(__name__)

SKIPPED_REASONS_KEPT = 5  # per resource and run: enough to find them, never a listing's worth

# Called with (resource, None) when a resource starts and (resource, counts) when it is done.
Progress = Callable[[str, ResourceCounts | None], None]


class ListingClient(Protocol):
    """What a pull needs of the API client (clevertim_sync.api.client.ClevertimClient)."""

    def list(self, resource: str) -> list[dict[str, Any]]: ...


@dataclass
class PullReport:
    """What one pull did, per resource, in pull order."""

    run_id: int
    started_at: datetime
    finished_at: datetime | None = None
    resources: dict[str, ResourceCounts] = field(default_factory=dict)
    # The caller asked the pull to stop: the resources not in `resources` were not pulled.
    stopped: bool = False
    # A server-wide failure (see the module's docstring): why the rest was skipped, and what.
    halted: str | None = None
    skipped: list[str] = field(default_factory=list)
    # Contact photos fetched after the contacts (pull.photos; None: not fetched in this pull).
    photos: photos.PhotoCounts | None = None

    @property
    def failed(self) -> list[str]:
        return [name for name, c in self.resources.items() if c.error is not None or c.held]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped

    @property
    def status(self) -> str:
        if self.stopped:
            return "stopped"
        if self.ok:
            return "ok"
        return "failed" if len(self.failed) == len(self.resources) else "partial"

    def totals(self) -> dict[str, int]:
        keys = ("inserted", "updated", "deleted", "touched", "unchanged")
        return {k: sum(getattr(c, k) for c in self.resources.values()) for k in keys}


def resources_in_order(names: Iterable[str] | None) -> list[str]:
    """The named resources (all when None) in pull order; an unknown name is a clear error."""
    if names is None:
        return list(registry.PULL_ORDER)
    wanted = set()
    for name in names:
        try:
            wanted.add(registry.get(name).name)
        except registry.UnknownResource as exc:
            raise MirrorError(str(exc.args[0])) from None
    return [n for n in registry.PULL_ORDER if n in wanted]


def pull(
    engine: sa.Engine,
    client: ListingClient,
    *,
    resources: Sequence[str] | None = None,
    allow_mass_delete: bool = False,
    settings: Settings | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> PullReport:
    """Pull the given resources (default all), parents first; never raises for one bad listing.

    `stop` (the daemon's stopping event) is looked at between resources: a resource's transaction
    is never cut in half, the rest are left for the next pull, and the run is recorded 'stopped'.
    """
    names = resources_in_order(resources)
    policy = (settings or Settings()).pull
    started = store.now()
    with engine.begin() as conn:
        run_id = store.start_run(conn, "pull", at=started)
    report = PullReport(run_id=run_id, started_at=started)
    log.info("pull.started", run_id=run_id, resources=names)
    # One listing is fetched ahead while the previous one is diffed and written: waiting for the
    # server overlaps with database work (the drivers release the GIL). At most two listings are
    # held at once, the one being written and the next.
    fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pull-fetch")
    halt = _Halt()
    fetch = halt.guard(client)
    checkpoints = _Checkpoints(engine)
    pool = RowPool()  # its worker process starts at the first big batch of inserts, if any
    # The cyclic garbage collector is off while the pull runs: a big listing is ~10^6 acyclic
    # objects (parsed JSON) that each of its passes walks again and none of which it can free
    # (nochange sync 1.15x -> 0.9x of its floor). Cycles left meanwhile are collected afterwards.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        ahead: Future[list[dict[str, Any]]] | None = fetcher.submit(fetch, names[0]) if names else None
        for i, name in enumerate(names):
            if stop is not None and stop.is_set():
                report.stopped = True
                log.info("pull.stopped", run_id=run_id, left=names[i:])
                break
            if halt.error is not None and halt.met_by != name:
                _halted(engine, report, halt.error, names[i:], settings or Settings())
                break
            if progress:
                progress(name, None)
            assert ahead is not None
            current = ahead
            ahead = fetcher.submit(fetch, names[i + 1]) if i + 1 < len(names) else None
            counts = _pull_resource(
                engine,
                current.result,
                name,
                run_id=run_id,
                policy=policy,
                allow_mass_delete=allow_mass_delete,
                pool=pool,
            )
            report.resources[name] = counts
            checkpoints.after_commit()
            if progress:
                progress(name, counts)
        if not report.stopped and report.halted is None:  # a server refusing all refuses photos too
            report.photos = photos.after_pull(engine, client, policy, report.resources.get("contact"), stop)
    finally:
        fetcher.shutdown(wait=True, cancel_futures=True)
        pool.close()
        if gc_was_enabled:
            gc.enable()
        checkpoints.finish()
        report.finished_at = store.now()
        complete = len(report.resources) + len(report.skipped) == len(names) or report.stopped
        status = report.status if complete else "failed"
        errors = [f"{n}: {report.resources[n].error}" for n in report.failed]
        if report.halted:
            errors.append(report.halted)
        error = "; ".join(errors) or None
        with engine.begin() as conn:
            store.finish_run(conn, run_id, status, error)
    log.info(
        "pull.finished",
        run_id=run_id,
        status=report.status,
        failed=report.failed,
        skipped=report.skipped,
        seconds=round((report.finished_at - started).total_seconds(), 3),
        **report.totals(),
    )
    return report


class _Halt:
    """The first server-wide failure of a pull's listings; once set, no listing is fetched.

    Listings are fetched one at a time on one thread, so the failure is recorded before the next
    fetch starts: that one is skipped at once, not retried against a server that refuses all.
    """

    def __init__(self) -> None:
        self.error: ApiError | None = None
        self.met_by: str | None = None  # the resource whose listing met it (recorded as failed)

    def guard(self, client: ListingClient) -> Callable[[str], list[dict[str, Any]]]:
        def fetch(name: str) -> list[dict[str, Any]]:
            if self.error is not None:
                raise self.error
            try:
                return client.list(name)
            except ApiError as exc:
                if exc.server_wide:
                    self.error, self.met_by = exc, name
                raise

        return fetch


def _halted(
    engine: sa.Engine, report: PullReport, exc: ApiError, left: list[str], settings: Settings
) -> None:
    """Skip the resources `left` after a server-wide failure, with one message; a rate limit
    pauses the push too (the writeback's server-wide pause)."""
    report.skipped = list(left)
    why = f"{type(exc).__name__}"
    if isinstance(exc, RateLimited):
        wait = exc.retry_after if exc.retry_after is not None else settings.clevertim.rate_limit_floor
        now = store.now()
        until = now + timedelta(seconds=wait)
        outbox.set_pause(engine, until, 1, str(exc), now)
        report.halted = (
            f"rate limited: paused until {until.isoformat()}, {len(left)} resource(s) left for later"
        )
    else:
        report.halted = f"{why}: {len(left)} resource(s) skipped, every request would meet it"
    log.error("pull.halted", run_id=report.run_id, reason=why, error=str(exc), skipped=left)


class _Checkpoints:
    """SQLite: the WAL checkpoint after each resource's commit, on a thread of its own.

    The resource transactions run with automatic checkpoints off (store.checkpoint_deferred), so
    copying a big transaction's WAL back into the database file (seconds, after a first sync of
    contacts) overlaps with fetching, hashing and building the next resource's rows instead of
    holding up the pull. One at a time; the pull waits for the last one before it returns, so it
    leaves the WAL as the automatic checkpoints would have.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="pull-checkpoint")
            if engine.dialect.name == "sqlite"
            else None
        )
        self.pending: Future[None] | None = None

    def after_commit(self) -> None:
        if self.pool is None or (self.pending is not None and not self.pending.done()):
            return  # the running one will be followed by the final one
        self.pending = self.pool.submit(self._run)

    def finish(self) -> None:
        if self.pool is None:
            return
        self.pool.submit(self._run)
        self.pool.shutdown(wait=True)

    def _run(self) -> None:
        try:
            store.checkpoint(self.engine)
        except sa.exc.SQLAlchemyError as exc:  # housekeeping: the next one, or SQLite's own, catches up
            log.warning("pull.checkpoint_failed", error=str(exc))


def _pull_resource(
    engine: sa.Engine,
    fetch: Callable[[], list[dict[str, Any]]],
    name: str,
    *,
    run_id: int,
    policy: PullSettings,
    allow_mass_delete: bool,
    pool: RowPool,
) -> ResourceCounts:
    t0 = time.perf_counter()
    counts = ResourceCounts()
    try:
        listing = fetch()
    except ClevertimSyncError as exc:
        if (why := documents.unavailable_reason(name, exc)) is not None:
            return documents.record_unavailable(engine, name, run_id=run_id, counts=counts, why=why, t0=t0)
        # The client already retried what was worth retrying: record it, leave the tables alone.
        return _failed(engine, name, run_id=run_id, counts=counts, t0=t0, exc=exc)
    counts.listed = len(listing)
    try:
        with engine.connect() as outer, store.checkpoint_deferred(outer), outer.begin():
            conn = outer
            at = store.now()
            store.lock_resource(conn, name)
            index = store.load_index(conn, name)
            changes = compute_changes(name, listing, index, lm_key=store.lm_key(conn, name))
            del listing  # the changes hold what is still needed
            counts.unchanged = changes.unchanged
            if changes.skipped:
                counts.skipped = len(changes.skipped)
                counts.skipped_reasons = changes.skipped[:SKIPPED_REASONS_KEPT]
                log.warning(
                    "pull.entries_skipped",
                    resource=name,
                    count=counts.skipped,
                    reasons=counts.skipped_reasons,
                )
            refusal = _guard(
                name,
                deletes=len(changes.deletes),
                mirrored=len(index),
                listed=counts.listed,
                policy=policy,
                allow=allow_mass_delete,
            )
            if refusal is not None:
                counts.held, counts.error = True, str(refusal)
                log.warning(
                    "pull.mass_delete_refused",
                    resource=name,
                    would_delete=refusal.would_delete,
                    mirrored=refusal.mirrored,
                    listed=counts.listed,
                )
            else:
                store.apply_changes(conn, name, changes, run_id=run_id, at=at, pool=pool)
                counts.inserted, counts.updated = len(changes.inserts), len(changes.updates)
                counts.deleted, counts.touched = len(changes.deletes), len(changes.touches)
            counts.seconds = round(time.perf_counter() - t0, 3)
            store.record_outcome(
                conn, run_id, name, counts, at=at, held_reason=counts.error if counts.held else None
            )
    except (ClevertimSyncError, sa.exc.SQLAlchemyError) as exc:
        # Rolled back: the resource's tables are as they were before this pull.
        fresh = ResourceCounts(listed=counts.listed)
        return _failed(engine, name, run_id=run_id, counts=fresh, t0=t0, exc=exc)
    log.info("pull.resource_finished", resource=name, **counts.as_dict())
    return counts


@dataclass
class ResourcePlan:
    """What a pull of one resource would do now (`sync --dry-run`); nothing is written."""

    resource: str
    listed: int = 0
    inserts: list[int] = field(default_factory=list)
    updates: dict[int, list[str]] = field(default_factory=dict)  # id -> the fields that changed
    deletes: list[int] = field(default_factory=list)
    touched: int = 0  # only lm moved: stored, but no version and no count
    unchanged: int = 0
    held: str | None = None  # the mass-delete guard would refuse the listing: why
    error: str | None = None  # the listing could not be fetched or read
    unavailable: str | None = None  # the account lacks this endpoint (documents.py): not an error

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["updates"] = {str(k): v for k, v in self.updates.items()}
        return out


def plan_pull(
    engine: sa.Engine,
    client: ListingClient,
    *,
    resources: Sequence[str] | None = None,
    allow_mass_delete: bool = False,
    settings: Settings | None = None,
) -> list[ResourcePlan]:
    """What `pull` would insert, update and delete per resource, and whether the guard would
    hold it: the same listings, diff and guard, read in transactions that write nothing."""
    policy = (settings or Settings()).pull
    plans = []
    for name in resources_in_order(resources):
        plan = ResourcePlan(name)
        plans.append(plan)
        try:
            listing = client.list(name)
            plan.listed = len(listing)
            with engine.connect() as conn:
                index = store.load_index(conn, name)
                changes = compute_changes(name, listing, index, lm_key=store.lm_key(conn, name))
                old = store.stored_raws(conn, name, [rec["id"] for rec, _ in changes.updates])
                conn.rollback()
        except ClevertimSyncError as exc:
            if (why := documents.unavailable_reason(name, exc)) is not None:
                plan.unavailable = why
                continue
            plan.error = str(exc) or type(exc).__name__
            continue
        plan.inserts = sorted(rec["id"] for rec, _ in changes.inserts)
        plan.updates = {
            rec["id"]: list(changed_fields(orjson.loads(old[rec["id"]]), rec)) for rec, _ in changes.updates
        }
        plan.deletes = changes.deletes
        plan.touched, plan.unchanged = len(changes.touches), changes.unchanged
        refusal = _guard(
            name,
            deletes=len(changes.deletes),
            mirrored=len(index),
            listed=plan.listed,
            policy=policy,
            allow=allow_mass_delete,
        )
        plan.held = str(refusal) if refusal is not None else None
    return plans


def _guard(
    name: str, *, deletes: int, mirrored: int, listed: int, policy: PullSettings, allow: bool
) -> MassDeleteRefused | None:
    refused = mass_delete_refused(
        deletes=deletes,
        mirrored=mirrored,
        listed=listed,
        threshold=policy.mass_delete_threshold,
        min_records=policy.mass_delete_min_records,
    )
    if not refused or allow:
        return None
    return MassDeleteRefused(name, deletes, mirrored, policy.mass_delete_threshold)


def _failed(
    engine: sa.Engine, name: str, *, run_id: int, counts: ResourceCounts, t0: float, exc: Exception
) -> ResourceCounts:
    counts.error = str(exc) or type(exc).__name__
    counts.seconds = round(time.perf_counter() - t0, 3)
    log.error("pull.resource_failed", resource=name, error_type=type(exc).__name__, error=counts.error)
    with engine.begin() as conn:
        store.record_outcome(conn, run_id, name, counts, at=store.now())
    return counts
