"""One pull: every (or some) resource's full listing, diffed against the mirror and applied.

Owns: the order of a pull (parents first, `resources.PULL_ORDER`), per-resource isolation (a
listing that fails leaves that resource's tables as they were and the others go on), the
mass-delete guard's enforcement, the run record, and the `pull.*` log events.

Each resource is one transaction: load its index, diff, then either apply everything (current
rows, child rows, history, the run's counts, resource_status) or, when the guard refuses, nothing
but the record of the refusal.

Must not import: httpx (the client is passed in), SQL beyond `mirror.store`.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
import structlog

from clevertim_sync import resources as registry
from clevertim_sync.diff import compute_changes, mass_delete_refused
from clevertim_sync.errors import ClevertimSyncError, MassDeleteRefused, MirrorError
from clevertim_sync.mirror import store
from clevertim_sync.mirror.rowpool import RowPool
from clevertim_sync.mirror.store import ResourceCounts
from clevertim_sync.settings import PullSettings, Settings

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

    @property
    def failed(self) -> list[str]:
        return [name for name, c in self.resources.items() if c.error is not None or c.held]

    @property
    def ok(self) -> bool:
        return not self.failed

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
    checkpoints = _Checkpoints(engine)
    pool = RowPool()  # its worker process starts at the first big batch of inserts, if any
    # The cyclic garbage collector is off while the pull runs: a big listing is ~10^6 acyclic
    # objects (parsed JSON) that each of its passes walks again and none of which it can free
    # (nochange sync 1.15x -> 0.9x of its floor). Cycles left meanwhile are collected afterwards.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        ahead: Future[list[dict[str, Any]]] | None = fetcher.submit(client.list, names[0]) if names else None
        for i, name in enumerate(names):
            if stop is not None and stop.is_set():
                report.stopped = True
                log.info("pull.stopped", run_id=run_id, left=names[i:])
                break
            if progress:
                progress(name, None)
            assert ahead is not None
            current = ahead
            ahead = fetcher.submit(client.list, names[i + 1]) if i + 1 < len(names) else None
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
    finally:
        fetcher.shutdown(wait=True, cancel_futures=True)
        pool.close()
        if gc_was_enabled:
            gc.enable()
        checkpoints.finish()
        report.finished_at = store.now()
        complete = len(report.resources) == len(names) or report.stopped
        status = report.status if complete else "failed"
        error = "; ".join(f"{n}: {report.resources[n].error}" for n in report.failed) or None
        with engine.begin() as conn:
            store.finish_run(conn, run_id, status, error)
    log.info(
        "pull.finished",
        run_id=run_id,
        status=report.status,
        failed=report.failed,
        seconds=round((report.finished_at - started).total_seconds(), 3),
        **report.totals(),
    )
    return report


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
