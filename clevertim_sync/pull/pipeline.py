"""One pull: every (or some) resource's full listing, diffed against the mirror and applied.

Owns: the order of a pull (parents first, `resources.PULL_ORDER`), per-resource isolation (a
listing that fails leaves that resource's tables as they were and the others go on), the
mass-delete guard's enforcement, the run record, and the `pull.*` log events.

Each resource is fetch -> diff -> apply. Fetch: the client downloads the listing to a temporary
file (the next one downloads while this one is written). Diff and apply, in one transaction: the
listing is parsed a batch at a time (`BATCH` entries), each batch diffed against the mirror's
index and written; what the mirror holds that the listing did not (the deletes) is known at the
listing's end, where the guard decides before anything commits. A refusal, or a listing found
broken half-way, rolls back every batch written: the resource is as it was. Memory is the
index and one batch, whatever the size of the account. Whatever makes the writes fast lives
behind `store.bulk_writes`, not here. `plan_pull` (`sync --dry-run`) is the same fetch, diff and
guard (`_Fetcher`, `_diff`), stopped before apply: it writes nothing.

What a listing's failure means is `health`'s table (column `listing`), asked through one
`ServerHealth` per pull: a failure that is about the server rather than the resource (cannot
connect, a redirect, a login page or a refused token, a rate limit) stops the pull at the first
one: the resources not yet pulled are skipped with one message (`PullReport.halted`), instead of
each being retried against a server that will refuse it too. Where the table says so (a rate
limit), every request to the server pauses, the push's too.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import sqlalchemy as sa
import structlog

from clevertim_sync import jsontext
from clevertim_sync import resources as registry
from clevertim_sync.api.listing import Listing
from clevertim_sync.errors import ApiError, ClevertimSyncError, MassDeleteRefused, MirrorError
from clevertim_sync.health import Action, Policy, ServerHealth, Where
from clevertim_sync.mirror import store, wide
from clevertim_sync.mirror.failures import error_text
from clevertim_sync.mirror.pause import PauseRow
from clevertim_sync.mirror.store import ResourceCounts
from clevertim_sync.pull import documents, photos
from clevertim_sync.pull.diff import Changes, ListingDiff, MirrorIndex, changed_fields, mass_delete_refused
from clevertim_sync.settings import PullSettings, Settings

log = structlog.get_logger(__name__)

SKIPPED_REASONS_KEPT = 5  # per resource and run: enough to find them, never a listing's worth
# Entries parsed, diffed and written at a time: what a pull holds of a listing (a few MB of
# contacts), whatever the account's size.
BATCH = 1000

# Called with (resource, None) when a resource starts and (resource, counts) when it is done.
Progress = Callable[[str, ResourceCounts | None], None]


class ListingClient(Protocol):
    """What a pull needs of the API client (clevertim_sync.api.client.ClevertimClient)."""

    def listing(self, resource: str) -> Listing: ...


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
    policy: Policy | None = None,
) -> PullReport:
    """Pull the given resources (default all), parents first; never raises for one bad listing.

    `stop` (the daemon's stopping event) is looked at between resources: a resource's transaction
    is never cut in half, the rest are left for the next pull, and the run is recorded 'stopped'.
    `policy`: what to do after an API error (default: `health`'s, with the settings' numbers).
    """
    names = resources_in_order(resources)
    settings = settings or Settings()
    health = ServerHealth(PauseRow(engine), policy or Policy.from_settings(settings))
    started = store.now()
    with engine.begin() as conn:
        run_id = store.start_run(conn, "pull", at=started)
    report = PullReport(run_id=run_id, started_at=started)
    log.info("pull.started", run_id=run_id, resources=names)
    try:
        with _Fetcher(client, names, health.policy) as fetcher, store.bulk_writes(engine) as writes:
            for i, name in enumerate(names):
                if stop is not None and stop.is_set():
                    report.stopped = True
                    log.info("pull.stopped", run_id=run_id, left=names[i:])
                    break
                if fetcher.halted_before(name):
                    assert fetcher.error is not None
                    _halted(report, fetcher.error, names[i:], health)
                    break
                if progress:
                    progress(name, None)
                counts = _pull_resource(
                    writes,
                    fetcher.listing(name),
                    name,
                    health=health,
                    run_id=run_id,
                    policy=settings.pull,
                    allow_mass_delete=allow_mass_delete,
                )
                report.resources[name] = counts
                if progress:
                    progress(name, counts)
        if not report.stopped and report.halted is None:  # a server refusing all refuses photos too
            contacts = report.resources.get("contact")
            report.photos = photos.after_pull(
                engine, client, settings.pull, contacts, health=health, stop=stop
            )
        # A custom field added, renamed or removed: the wide views' columns follow it.
        wide.after_pull(engine)
    finally:
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


class _Fetcher:
    """The listings of a pull, each downloaded one ahead on a thread of its own (to a temporary
    file: waiting for the server overlaps with writing the previous listing, and no more than
    two files exist at a time).

    The first failure the health table stops a pull for is kept (`error`, met by `met_by`): no
    listing is fetched after it, and the resources after the one that met it are skipped at once,
    not retried against a server that refuses all. Listings are fetched one at a time on one
    thread, so the failure is recorded before the next fetch starts.
    """

    def __init__(self, client: ListingClient, names: Sequence[str], policy: Policy) -> None:
        self.client = client
        self.policy = policy
        self.names = list(names)
        self.error: ApiError | None = None
        self.met_by: str | None = None  # the resource whose listing met it (recorded as failed)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pull-fetch")
        self._ahead: dict[str, Future[Listing]] = {}
        if self.names:
            self._ahead[self.names[0]] = self._thread.submit(self._fetch, self.names[0])

    def _fetch(self, name: str) -> Listing:
        if self.error is not None:
            raise self.error
        try:
            return self.client.listing(name)
        except ApiError as exc:
            if self.policy.decide(exc, Where.LISTING).stop:
                self.error, self.met_by = exc, name
            raise

    def halted_before(self, name: str) -> bool:
        """A server-wide failure was met by an earlier resource: `name` and the rest are skipped."""
        return self.error is not None and self.met_by != name

    def listing(self, name: str) -> Callable[[], Listing]:
        """`name`'s listing when called (it may raise the fetch's error); the next one starts now."""
        current = self._ahead.pop(name)
        following = self.names.index(name) + 1
        if following < len(self.names):
            nxt = self.names[following]
            self._ahead[nxt] = self._thread.submit(self._fetch, nxt)
        return current.result

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)
        for future in self._ahead.values():  # fetched ahead, not pulled (a stop, a halt): its file goes
            if future.done() and not future.cancelled() and future.exception() is None:
                future.result().close()


def _halted(report: PullReport, exc: ApiError, left: list[str], health: ServerHealth) -> None:
    """Skip the resources `left` after a failure that stops the pull, with one message (the
    pause, when the table set one, was set as the resource that met it was recorded)."""
    report.skipped = list(left)
    why = f"{type(exc).__name__}"
    pause = health.paused_until() if health.policy.decide(exc, Where.LISTING).pause else None
    if pause is not None:
        report.halted = (
            f"{'rate limited' if why == 'RateLimited' else why}: paused until "
            f"{pause.not_before.isoformat()}, {len(left)} resource(s) left for later"
        )
    else:
        report.halted = f"{why}: {len(left)} resource(s) skipped, every request would meet it"
    log.error("pull.halted", run_id=report.run_id, reason=why, error=error_text(exc), skipped=left)


class _Held(Exception):
    """The guard refused the listing: raised to roll the resource's transaction back."""

    def __init__(self, refusal: MassDeleteRefused) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


def _pull_resource(
    writes: store.BulkWrites,
    fetch: Callable[[], Listing],
    name: str,
    *,
    health: ServerHealth,
    run_id: int,
    policy: PullSettings,
    allow_mass_delete: bool,
) -> ResourceCounts:
    """Fetch -> diff -> apply, batch by batch, in one transaction; the deletes (and so the
    guard's decision) come at the listing's end, before anything commits: a refusal, or a
    listing that turns out broken half-way, rolls back every batch applied."""
    t0 = time.perf_counter()
    counts = ResourceCounts()
    try:
        listing = fetch()
    except ClevertimSyncError as exc:
        if isinstance(exc, ApiError):  # the table's verdict (a pause is set here when it says so)
            verdict = health.after_error(exc, Where.LISTING, optional=registry.get(name).optional)
            if verdict.decision.action is Action.UNAVAILABLE:
                why = documents.unavailable_reason(name, exc)
                return documents.record_unavailable(
                    writes.engine, name, run_id=run_id, counts=counts, why=why, t0=t0
                )
        # The client already retried what was worth retrying: record it, leave the tables alone.
        return _failed(writes.engine, name, run_id=run_id, counts=counts, t0=t0, exc=exc)
    except Exception as exc:
        return _failed(writes.engine, name, run_id=run_id, counts=counts, t0=t0, exc=exc, unexpected=True)
    try:
        with listing, writes.resource(name, run_id=run_id) as mirror:

            def apply(changes: Changes) -> None:
                mirror.apply(changes)
                _count(counts, changes)
                if changes.duplicates:
                    mirror.resolve(changes.duplicates, counts)

            diffed = _diff(listing, name, mirror.index, mirror.lm_key, apply, policy, allow_mass_delete)
            counts.listed = diffed.listed
            _count_findings(counts, listing.findings)
            if diffed.refusal is not None:
                raise _Held(diffed.refusal)
            deletes = diffed.deletes
            mirror.delete(deletes)
            counts.deleted = len(deletes)
            counts.seconds = round(time.perf_counter() - t0, 3)
            mirror.commit(counts)
    except _Held as held:
        # Rolled back: nothing of the listing applied; only the refusal is recorded.
        return _refused(writes.engine, name, run_id=run_id, counts=counts, t0=t0, refusal=held.refusal)
    except (ClevertimSyncError, sa.exc.SQLAlchemyError) as exc:
        # Rolled back: the resource's tables are as they were before this pull.
        fresh = ResourceCounts(listed=counts.listed)
        return _failed(writes.engine, name, run_id=run_id, counts=fresh, t0=t0, exc=exc)
    except Exception as exc:
        fresh = ResourceCounts(listed=counts.listed)
        return _failed(writes.engine, name, run_id=run_id, counts=fresh, t0=t0, exc=exc, unexpected=True)
    _log_skipped(name, counts)
    log.info("pull.resource_finished", resource=name, **counts.as_dict())
    return counts


@dataclass
class _Diffed:
    """A listing diffed to its end: how many entries it held, what the mirror holds that it did
    not, and the guard's refusal of those deletes (None: they may go)."""

    listed: int
    deletes: list[Any]
    refusal: MassDeleteRefused | None


def _diff(  # noqa: PLR0917 - the listing and what it is diffed and guarded against
    listing: Listing,
    name: str,
    index: MirrorIndex,
    lm_key: Callable[[Mapping[str, Any]], Any],
    on_batch: Callable[[Changes], None],
    policy: PullSettings,
    allow_mass_delete: bool,
) -> _Diffed:
    """The pull's diff and guard of one listing, for the pull and its dry run alike: each batch's
    changes go to `on_batch` (the pull applies them, `plan_pull` notes them), then the deletes
    and the guard's verdict on them, before anything commits."""
    diff = ListingDiff(name, index, lm_key=lm_key)
    for batch in listing.batches(BATCH):
        changes = diff.batch(batch)
        del batch  # the changes hold what is still needed
        on_batch(changes)
    deletes = diff.deletes()
    refusal = _guard(
        name,
        deletes=len(deletes),
        mirrored=len(diff.index),
        listed=diff.listed,
        policy=policy,
        allow=allow_mass_delete,
    )
    return _Diffed(diff.listed, deletes, refusal)


def _count(counts: ResourceCounts, changes: Changes) -> None:
    """Add one batch's changes to the resource's counts (deletes are counted at the end)."""
    counts.inserted += len(changes.inserts)
    counts.updated += len(changes.updates)
    counts.touched += len(changes.touches)
    counts.unchanged += changes.unchanged
    counts.skipped += len(changes.skipped)
    room = SKIPPED_REASONS_KEPT - len(counts.skipped_reasons)
    counts.skipped_reasons += changes.skipped[: max(room, 0)]
    for reason, n in changes.reasons.items():
        counts.bad_entries[reason] = counts.bad_entries.get(reason, 0) + n


def _count_findings(counts: ResourceCounts, findings: Iterable[tuple[str, Any]]) -> None:
    """Add the entries the listing's parser kept but reported (altered text) to the counts."""
    for reason, _rid in findings:
        counts.bad_entries[reason] = counts.bad_entries.get(reason, 0) + 1


def _log_skipped(name: str, counts: ResourceCounts) -> None:
    if counts.skipped:
        log.warning(
            "pull.entries_skipped", resource=name, count=counts.skipped, reasons=counts.skipped_reasons
        )
    if counts.bad_entries:
        log.warning("pull.bad_entries", resource=name, **counts.bad_entries)


def _refused(
    engine: sa.Engine,
    name: str,
    *,
    run_id: int,
    counts: ResourceCounts,
    t0: float,
    refusal: MassDeleteRefused,
) -> ResourceCounts:
    """The guard held the listing: the run and resource_status say why, the tables are untouched."""
    held = ResourceCounts(
        listed=counts.listed,
        unchanged=counts.unchanged,
        skipped=counts.skipped,
        skipped_reasons=counts.skipped_reasons,
        held=True,
        error=str(refusal),
        seconds=round(time.perf_counter() - t0, 3),
    )
    _log_skipped(name, held)
    log.warning(
        "pull.mass_delete_refused",
        resource=name,
        would_delete=refusal.would_delete,
        mirrored=refusal.mirrored,
        listed=held.listed,
    )
    with engine.begin() as conn:
        store.record_outcome(conn, run_id, name, held, at=store.now(), held_reason=held.error)
    return held


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
    error: str | None = None  # the listing could not be fetched or read, or a bug met it
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
    hold it: the pull's own fetch (`_Fetcher`), diff and guard (`_diff`), stopped before apply,
    read in transactions that write nothing. A failure that would stop the pull stops it too; one
    that fails a resource in a pull (an unexpected exception included) fails its plan, and the
    next resources are planned."""
    settings = settings or Settings()
    decisions = Policy.from_settings(settings)
    names = resources_in_order(resources)
    plans = []
    with _Fetcher(client, names, decisions) as fetcher:
        for name in names:
            plan = ResourcePlan(name)
            plans.append(plan)
            if fetcher.halted_before(name):
                plan.error = f"skipped: {type(fetcher.error).__name__}, every request would meet it"
                continue
            try:
                with contextlib.closing(fetcher.listing(name)()) as listing, engine.connect() as conn:
                    index, key = store.load_index(conn, name), store.lm_key(conn, name)
                    diffed = _diff(
                        listing,
                        name,
                        index,
                        key,
                        functools.partial(_plan_batch, conn, plan),
                        settings.pull,
                        allow_mass_delete,
                    )
                    conn.rollback()
            except ClevertimSyncError as exc:
                optional = registry.get(name).optional
                if isinstance(exc, ApiError) and (
                    decisions.decide(exc, Where.LISTING, optional=optional).action is Action.UNAVAILABLE
                ):
                    plan.unavailable = documents.unavailable_reason(name, exc)
                    continue
                plan.error = error_text(exc)
                continue
            except sa.exc.SQLAlchemyError as exc:
                plan.error = error_text(exc)
                continue
            except Exception as exc:  # a bug: that resource fails and the rest are planned, as in a pull
                plan.error = _crashed(name, exc)
                continue
            plan.inserts.sort()
            plan.listed, plan.deletes = diffed.listed, diffed.deletes
            plan.held = str(diffed.refusal) if diffed.refusal is not None else None
    return plans


def _plan_batch(conn: sa.Connection, plan: ResourcePlan, changes: Changes) -> None:
    id_of = store.builder(conn, plan.resource).id_of
    plan.inserts += [id_of(rec) for rec, _ in changes.inserts]
    old = store.stored_raws(conn, plan.resource, [id_of(rec) for rec, _ in changes.updates])
    for rec, _ in changes.updates:
        plan.updates[id_of(rec)] = list(changed_fields(jsontext.loads(old[id_of(rec)]), rec))
    plan.touched += len(changes.touches)
    plan.unchanged += changes.unchanged


def _crashed(name: str, exc: Exception) -> str:
    """An exception that is not one of the project's (a bug) while pulling or planning `name`,
    told by its type and where it happened, never by its text (which may quote a record); the
    last frames go to the log (`pull.resource_crashed`): enough for a bug report."""
    frames = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_tb(exc.__traceback__)]
    log.error("pull.resource_crashed", resource=name, error_type=type(exc).__name__, frames=frames[-8:])
    where = f" at {frames[-1]}" if frames else ""
    return f"unexpected {type(exc).__name__} while pulling {name}{where} (a bug: see the log)"


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
    engine: sa.Engine,
    name: str,
    *,
    run_id: int,
    counts: ResourceCounts,
    t0: float,
    exc: Exception,
    unexpected: bool = False,
) -> ResourceCounts:
    """Record a failed resource (the run, resource_status: alerts fire, the next pull retries).
    `unexpected`: not one of the project's errors (a bug): see `_crashed`."""
    if unexpected:
        counts.error = _crashed(name, exc)
    else:
        counts.error = error_text(exc)  # last_error, status, alerts: no statement, no values
    counts.seconds = round(time.perf_counter() - t0, 3)
    log.error("pull.resource_failed", resource=name, error_type=type(exc).__name__, error=counts.error)
    with engine.begin() as conn:
        store.record_outcome(conn, run_id, name, counts, at=store.now())
    return counts
