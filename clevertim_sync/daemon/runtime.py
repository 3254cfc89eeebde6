"""One account inside the daemon: its lock, engine, API client, job runner, and its jobs' bodies.

Owns: opening an account (instance lock, migrations, the start-up token check), the pull job (with
growing waits for resources that keep failing, none while the server-wide pause is in force), the
push job, the backup and drill jobs, the health facts, and closing it all. What an API error at start-up
means, the waits, and the pause are `clevertim_sync.health`'s; this module asks. Which functions
do the pulling and pushing is injected (`Backends`), so the scheduling can be tested with
stand-ins and the real ones are wired in one place (wiring.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
import structlog

from clevertim_sync import resources
from clevertim_sync.daemon import healthz, members, memory
from clevertim_sync.daemon.accounts import Account
from clevertim_sync.daemon.jobs import JobOutcome, JobRunner
from clevertim_sync.errors import ApiError, ClevertimSyncError, InstanceLocked
from clevertim_sync.health import Action, Policy, ServerHealth, Where
from clevertim_sync.health.delays import resting_wait, start_wait
from clevertim_sync.logs import bind_context
from clevertim_sync.mirror import lock as instance_lock
from clevertim_sync.mirror import schema
from clevertim_sync.mirror.db import make_engine, sqlite_file, upgrade
from clevertim_sync.mirror.pause import PauseRow
from clevertim_sync.settings import Settings
from clevertim_sync.writeback import outbox

log = structlog.get_logger(__name__)


class Client(Protocol):
    def close(self) -> None: ...


class StopRequested(ClevertimSyncError):
    """Raised inside a job (from the pull's progress callback) when the daemon is stopping."""


@dataclass(frozen=True)
class Backends:
    """The other areas' entry points the daemon drives (see wiring.py for the real ones)."""

    make_client: Callable[..., Any]  # make_client(settings, *, stop=): stop ends read retries
    check_token: Callable[[Any], None]  # one cheap authenticated GET; raises ApiError
    pull: Callable[..., Any]  # pull(engine, client, *, resources=, settings=, progress=, stop=)
    push: Callable[..., Any]  # push(engine, client, settings, *, stop=, holder=)
    backup: Callable[[sa.Engine, Settings, str], Any] | None = None  # backup(engine, settings, account)
    drill: Callable[[Settings, str], Any] | None = None  # drill(settings, account): restore the newest
    summarize: Callable[[Any], str | None] | None = None  # one line about a job's report
    close: Callable[[], None] | None = None  # what the accounts' clients share, closed at the stop


class AccountRuntime:
    def __init__(
        self,
        account: Account,
        backends: Backends,
        *,
        on_finish: Callable[[JobOutcome], None],
        stopping: threading.Event,
        daemon: str | None = None,
    ) -> None:
        self.account = account
        self.daemon = daemon  # names the lock's session, so `status` can tell who serves the account
        self.name = account.name
        self.settings = account.settings
        self.backends = backends
        self.stopping = stopping
        self.runner = JobRunner(self.name, self.settings.daemon.job_deadline, on_finish=on_finish)
        self.lock: instance_lock.InstanceLock | None = None
        self.engine: sa.Engine | None = None
        self.client: Any = None
        self.last_pull_outcome: JobOutcome | None = None
        self._pending_settings: Settings | None = None
        self._client_config = self.settings.clevertim  # what self.client was built from
        self.pushed_through = 0  # queue items up to this id were due when a push last ran
        self._db_file: Path | None = None  # the SQLite mirror's file, None on PostgreSQL
        self._watch_stamp: tuple[tuple[int, int] | None, ...] = ()

    # --- start and stop -----------------------------------------------------------------------

    def open(
        self,
        *,
        standby: bool,
        on_status: Callable[[str], object],
        on_standby: Callable[[str], object] | None = None,
        tick: Callable[[], object] | None = None,
    ) -> None:
        """Lock, migrate, connect and check the token; raises on what a restart would not fix.

        A standby waits in the lock first: `on_standby` hears that it waits, `tick` each retry.
        """
        self.lock = instance_lock.acquire(
            self._lock_url(), standby=standby, stop=self.stopping, on_wait=on_standby or on_status, tick=tick
        )
        self._connect(on_status)

    def try_open(self, *, on_status: Callable[[str], object]) -> bool:
        """Take this account if no daemon serves it (a standby sharing the accounts), else False."""
        try:
            self.lock = instance_lock.acquire(self._lock_url())
        except InstanceLocked:
            return False
        try:
            self._connect(on_status)
        except BaseException:
            self.close()
            raise
        return True

    @property
    def held(self) -> bool:
        """True while this daemon serves the account (it holds the account's instance lock)."""
        return self.lock is not None

    def _lock_url(self) -> str:
        url = self.settings.database.url
        return url if self.daemon is None else members.named_url(url, self.daemon)

    def _connect(self, on_status: Callable[[str], object]) -> None:
        db_url = self.settings.database.url
        # Between jobs only the queue watch, health and alerts use this engine, now and then: it
        # keeps no SQLite connection (each holds the parsed schema, ~0.7 MB an account), and one
        # PostgreSQL connection (a new one costs the server a process). A job has its own engine.
        self._db_file = sqlite_file(db_url)
        self.engine = make_engine(
            db_url,
            busy_timeout=self.settings.database.sqlite_busy_timeout,
            idle_connections=0 if self._db_file is not None else 1,
        )
        upgrade(self.engine)
        self.client = self.backends.make_client(self.settings, stop=self.stopping)
        self._client_config = self.settings.clevertim
        self._wait_for_token(on_status)

    def _wait_for_token(self, on_status: Callable[[str], object]) -> None:
        """One authenticated GET; a rejected token is fatal, an unreachable API is waited out."""
        attempt = 0
        while True:
            try:
                self.backends.check_token(self.client)
            except ApiError as exc:
                if Policy.from_settings(self.settings).decide(exc, Where.START).action is not Action.RETRY:
                    raise
                attempt += 1
                wait = start_wait(attempt)
                log.warning("daemon.api_unreachable", account=self.name, error=str(exc), retry_in=wait)
                on_status(f"{self.name}: waiting for the Clevertim API: {exc}")
                if self.stopping.wait(wait):
                    raise StopRequested("stopped before the Clevertim API answered") from None
                continue
            log.info("daemon.token_accepted", account=self.name, url=self.settings.clevertim.url)
            return

    def close(self) -> None:
        """Let the account go: client, engine, then the lock (another daemon may take it now)."""
        client, self.client = self.client, None
        engine, self.engine = self.engine, None
        lock, self.lock = self.lock, None
        if client is not None:
            client.close()
        if engine is not None:
            engine.dispose()
        if lock is not None:
            lock.release()

    def reconfigure(self, settings: Settings) -> None:
        """Take new settings at the start of the next job (never under a running one)."""
        self._pending_settings = settings

    def _begin_job(self) -> None:
        # Each job runs in a new thread: tag its log lines (pull.*, push.*) with the account.
        bind_context(account=self.name)
        self._apply_pending()

    def _apply_pending(self) -> None:
        new, self._pending_settings = self._pending_settings, None
        if new is None:
            return
        if new.clevertim != self._client_config:
            # A rotated token or a new URL (SIGHUP): a new client, made between two jobs.
            old_client, self.client = self.client, self.backends.make_client(new, stop=self.stopping)
            self._client_config = new.clevertim
            old_client.close()
            log.info("daemon.client_replaced", account=self.name, url=new.clevertim.url)
        self.settings = new
        self.runner.deadline = new.daemon.job_deadline
        log.info("daemon.reconfigured", account=self.name)

    # --- the jobs -----------------------------------------------------------------------------

    def run_pull(self, group: Sequence[str] | None) -> JobOutcome:
        label = "pull" if group is None else f"pull:{','.join(group)}"
        outcome = self.runner.run(label, lambda: self._pull(group))
        if outcome.status != "skipped":
            self.last_pull_outcome = outcome
            # Between pulls the daemon idles near its start-up size, not at the pull's peak: the
            # pooled connections go (each SQLite one keeps a page cache; measured at 100k contacts:
            # idle 97 -> 93 MB), then the allocator's free memory goes back (102 -> 97 MB).
            if self.engine is not None:
                self.engine.dispose()
            memory.release()
            log.debug("daemon.memory_released", account=self.name, rss=memory.rss_bytes())
        return outcome

    @property
    def pull_failing(self) -> bool:
        """True when the last pull job failed, or a resource of it did."""
        last = self.last_pull_outcome
        return last is not None and (not last.ok or bool(getattr(last.result, "failed", None)))

    def run_push(self) -> JobOutcome:
        return self.runner.run("push", self._push)

    def run_backup(self) -> JobOutcome:
        return self.runner.run("backup", self._backup)

    def run_drill(self) -> JobOutcome:
        return self.runner.run("drill", self._drill)

    def _progress(self, _name: str, counts: Any = None) -> None:
        # The pull stops on `stop=` between resources by itself (its run is recorded 'stopped').
        # This covers a pull without that check: at a resource's start (counts None), stopping
        # there leaves every resource either fully applied or untouched. Never at a resource's
        # end, where the pull's own check comes next.
        if counts is None and self.stopping.is_set():
            raise StopRequested("the daemon is stopping; the rest of this pull is left for next time")

    @contextlib.contextmanager
    def _job_engine(self) -> Iterator[sa.Engine]:
        """An engine for one job, disposed at its end: its connections and its cache of compiled
        statements (0.3 MB after a pull) go with it. Kept for the daemon's life, these objects,
        made in the middle of a pull's short-lived ones, would also keep the allocator from
        handing the pull's memory back."""
        engine = make_engine(
            self.settings.database.url, busy_timeout=self.settings.database.sqlite_busy_timeout
        )
        try:
            yield engine
        finally:
            engine.dispose()

    def _pull(self, group: Sequence[str] | None) -> Any:
        self._begin_job()
        assert self.engine is not None
        names = list(group) if group is not None else self.default_group()
        due = self.due_resources(names, datetime.now(UTC))
        if not due:
            return None
        with self._job_engine() as engine:
            return self.backends.pull(
                engine,
                self.client,
                resources=due,
                settings=self.settings,
                progress=self._progress,
                stop=self.stopping,
            )

    def _push(self) -> Any:
        self._begin_job()
        assert self.engine is not None
        # Everything due now gets its try in this push; the queue watch only brings a push
        # forward for items newer than this (a blocked or retried item waits for push.interval).
        mark = self.newest_due_item()
        # On SIGTERM the push stops sending at once; what is on the wire finishes and is recorded.
        # Holding the instance lock: what a crashed predecessor left in flight is reconciled now.
        holder = self.lock.holder_id if self.lock is not None else None
        with self._job_engine() as engine:
            report = self.backends.push(engine, self.client, self.settings, stop=self.stopping, holder=holder)
        self.pushed_through = max(self.pushed_through, mark)
        return report

    def _backup(self) -> Any:
        self._begin_job()
        assert self.engine is not None
        assert self.backends.backup is not None
        with self._job_engine() as engine:
            return self.backends.backup(engine, self.settings, self.name)

    def _drill(self) -> Any:
        # Reads the repository only, never the mirror: it could run beside a pull, but one job
        # per account at a time keeps the machine's load (and the disk it restores onto) bounded.
        self._begin_job()
        assert self.backends.drill is not None
        return self.backends.drill(self.settings, self.name)

    # --- what to pull -------------------------------------------------------------------------

    def default_group(self) -> list[str]:
        """Resources pulled by the main pull job: those without an interval of their own."""
        return [r.name for r in resources.RESOURCES if r.name not in self.settings.pull.intervals]

    def interval_of(self, name: str) -> float:
        return self.settings.pull.intervals.get(name, self.settings.pull.interval)

    def stale_after(self, name: str) -> float:
        return healthz.stale_limit(self.settings, name)

    def due_resources(self, names: Sequence[str], now: datetime) -> list[str]:
        """`names` minus those still resting after failing several pulls in a row; none while the
        server-wide pause is in force (a rate limit's Retry-After, a refused token, an outage met
        by a push or a pull): a scheduled pull would only meet it again. `sync` by hand does not
        wait for it."""
        assert self.engine is not None
        pause = ServerHealth(PauseRow(self.engine), Policy.from_settings(self.settings)).paused_until(now)
        if pause is not None:
            log.info(
                "pull.paused", account=self.name, until=pause.not_before.isoformat(), reason=pause.reason
            )
            return []
        rs = schema.resource_status
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    rs.c.resource, rs.c.consecutive_failures, rs.c.last_pull_at, rs.c.unavailable
                ).where(rs.c.resource.in_(list(names)))
            ).all()
        resting = set()
        for name, failures, last_pull_at, unavailable in rows:
            wait = resting_wait(int(failures or 0), self.interval_of(name))
            if unavailable is not None:  # an endpoint this account lacks: asked again only slowly
                wait = max(wait, self.settings.pull.unavailable_retry)
            if wait and last_pull_at is not None and now < last_pull_at + timedelta(seconds=wait):
                resting.add(name)
        if resting:
            log.info("pull.resting", account=self.name, resources=sorted(resting))
        return [n for n in names if n not in resting]

    # --- health -------------------------------------------------------------------------------

    def facts(self, now: datetime) -> healthz.MirrorFacts:
        assert self.engine is not None
        with self.engine.connect() as conn:
            return healthz.read_facts(
                conn, self.name, now, healthz.stuck_limit(self.settings), self.stale_after
            )

    def queue_may_have_grown(self) -> bool:
        """False when the SQLite mirror's files are as they were at the last look: no edit can
        have been queued, and the queue watch need not open a connection (every 2 s, for every
        account). PostgreSQL: always True (its pooled connection makes the look cheap)."""
        return self._db_file is None or self._files_stamp() != self._watch_stamp

    def _files_stamp(self) -> tuple[tuple[int, int] | None, ...]:
        if self._db_file is None:
            return ()
        return tuple(_stamp(self._db_file.with_name(self._db_file.name + end)) for end in ("", "-wal"))

    def newest_due_item(self) -> int:
        assert self.engine is not None
        stamp = self._files_stamp()  # before the query: a write during it is seen at the next look
        with self.engine.connect() as conn:
            pause = ServerHealth(PauseRow(conn, read_only=True)).pause()
            newest = outbox.newest_due(conn, datetime.now(UTC), pause)
        self._watch_stamp = stamp
        return newest

    def reasons(self, facts: healthz.MirrorFacts, now: datetime) -> list[str]:
        """Why this account is unhealthy: the database's facts, plus this process's own view."""
        reasons = healthz.judge(facts, now, self.stale_after)
        last = self.last_pull_outcome
        if last is not None and last.status in ("failed", "timeout"):
            prefix = f"{self.name}: " if self.name != "default" else ""
            reasons.append(f"{prefix}the last pull job {last.status}: {last.error}")
        if self.lock is not None and not self.lock.check():
            reasons.append(f"{self.name}: the instance lock was lost")
        return reasons


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size
