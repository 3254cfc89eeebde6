"""APScheduler 3.x wiring: which job runs when, for every account.

Owns: the jobs of each account (the main pull, one pull per resource with its own interval, the
push, the queue watch that pushes soon after an edit is queued, the backup, the restore drill) and
the daemon's heartbeat. Every job is `max_instances=1, coalesce=True`: a late or slow run is never doubled up.
Pull and push of one account never run at once: that is the JobRunner's lock, not the scheduler's.
Across accounts, pulls, pushes and backups each run in their own bounded executor (slots.py,
`daemon.concurrent_*`): twenty accounts due at once take turns, the most overdue first, and an
edit's push never waits behind them. The threads are those bounds, not a number per account.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from clevertim_sync.daemon.runtime import AccountRuntime
from clevertim_sync.daemon.slots import OverdueFirstExecutor
from clevertim_sync.mirror.failures import error_text
from clevertim_sync.settings import DaemonSettings

log = structlog.get_logger(__name__)

# How often the queue is checked for edits to push at once; one indexed COUNT, cheap.
QUEUE_WATCH_SECONDS = 2.0


def new_scheduler(daemon: DaemonSettings) -> BackgroundScheduler:
    # APScheduler logs every run of every job at INFO: with the queue watch every 2 s that would
    # be most of the journal. Our own job.* events say what matters.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    return BackgroundScheduler(
        timezone=UTC,
        executors={
            # The queue watches (one quick indexed query each) and the standby's rebalancing.
            "default": ThreadPoolExecutor(max_workers=2),
            # Its own thread: a slow database under the watches must not silence the watchdog.
            "heartbeat": ThreadPoolExecutor(max_workers=1),
            "pull": OverdueFirstExecutor(daemon.concurrent_pulls, rank=_pull_rank),
            "push": OverdueFirstExecutor(daemon.concurrent_pushes),
            "backup": OverdueFirstExecutor(daemon.concurrent_backups),
        },
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )


def _pull_rank(job: Any) -> int:
    """An account whose last pull failed waits behind the others: it does not hold a slot that a
    healthy account's pull could use (its resources also rest, runtime.failing_wait)."""
    rt = getattr(job.func, "__self__", None)
    return 1 if isinstance(rt, AccountRuntime) and rt.pull_failing else 0


def _every(seconds: float, jitter: float = 0.0) -> IntervalTrigger:
    # jitter=None keeps APScheduler from drawing a random offset at all.
    return IntervalTrigger(seconds=seconds, jitter=int(jitter) or None, timezone=UTC)


def schedule_account(
    sched: BackgroundScheduler, rt: AccountRuntime, *, first_run: datetime, first_push: datetime | None = None
) -> None:
    """(Re)create every job of one account from its current settings."""
    s = rt.settings
    prefix = f"{rt.name}:"
    unschedule_account(sched, rt)
    sched.add_job(
        rt.run_pull,
        _every(s.pull.interval, s.pull.jitter_for(s.pull.interval)),
        args=[None],
        executor="pull",
        id=f"{prefix}pull",
        name=f"{rt.name} pull",
        next_run_time=first_run,
    )
    for offset, (resource, interval) in enumerate(sorted(s.pull.intervals.items()), start=1):
        sched.add_job(
            rt.run_pull,
            _every(interval, s.pull.jitter_for(interval)),
            args=[[resource]],
            executor="pull",
            id=f"{prefix}pull:{resource}",
            name=f"{rt.name} pull {resource}",
            # After the main pull, so parents come first on a fresh mirror.
            next_run_time=first_run + timedelta(seconds=offset),
        )
    sched.add_job(
        rt.run_push,
        _every(s.push.interval),
        executor="push",
        id=f"{prefix}push",
        name=f"{rt.name} push",
        # A moment after the first pull: pushes and pulls run in executors of their own now, and
        # the first push should find the account's pull under way (it waits, then merges against
        # a fresh mirror), not race it.
        next_run_time=first_push or first_run + timedelta(seconds=0.5),
    )
    sched.add_job(
        lambda: _watch_queue(sched, rt),
        _every(min(QUEUE_WATCH_SECONDS, s.push.interval)),
        id=f"{prefix}queue-watch",
        name=f"{rt.name} queue watch",
        # Off the beat of the other jobs, which all start at first_run.
        next_run_time=datetime.now(UTC) + timedelta(seconds=QUEUE_WATCH_SECONDS / 2),
    )
    if s.backup.interval and rt.backends.backup is not None:
        sched.add_job(
            rt.run_backup,
            _every(s.backup.interval),
            executor="backup",
            id=f"{prefix}backup",
            name=f"{rt.name} backup",
        )
    if s.backup.drill_interval and rt.backends.drill is not None:
        sched.add_job(
            rt.run_drill,
            _every(s.backup.drill_interval),
            executor="backup",  # bounded with the backups: a drill restores a whole mirror
            id=f"{prefix}drill",
            name=f"{rt.name} restore drill",
        )
    log.info(
        "daemon.scheduled",
        account=rt.name,
        pull_interval=s.pull.interval,
        pull_intervals=dict(s.pull.intervals),
        push_interval=s.push.interval,
        backup_interval=s.backup.interval if rt.backends.backup is not None else None,
        drill_interval=s.backup.drill_interval if rt.backends.drill is not None else None,
    )


def unschedule_account(sched: BackgroundScheduler, rt: AccountRuntime) -> None:
    """Remove every job of one account (a running one goes on to its end)."""
    prefix = f"{rt.name}:"
    for job in sched.get_jobs():
        if job.id.startswith(prefix):
            job.remove()


def _watch_queue(sched: BackgroundScheduler, rt: AccountRuntime) -> None:
    """Bring the push forward for an edit queued since the last push: "soon after it is queued".

    Only new items count: one that a push already tried (it waits behind another edit of its
    record, or for its retry time) must not turn the watch into a push every two seconds.
    """
    if rt.runner.current == "push" or not rt.queue_may_have_grown():
        return
    try:
        newest = rt.newest_due_item()
    except Exception as exc:
        log.warning("daemon.queue_watch_failed", account=rt.name, error=error_text(exc))
        return
    if newest <= rt.pushed_through:
        return
    job = sched.get_job(f"{rt.name}:push")
    now = datetime.now(UTC)
    if job is not None and job.next_run_time is not None and job.next_run_time > now + timedelta(seconds=1):
        log.debug("daemon.push_soon", account=rt.name, newest=newest)
        job.modify(next_run_time=now)


def add_heartbeat(sched: BackgroundScheduler, seconds: float, beat: Callable[[], None]) -> None:
    """A job that proves the scheduler runs jobs: its `beat` pings the systemd watchdog."""
    sched.add_job(
        beat,
        _every(seconds),
        executor="heartbeat",
        id="heartbeat",
        name="heartbeat",
        next_run_time=datetime.now(UTC),
    )


def reschedule(sched: BackgroundScheduler, runtimes: Sequence[AccountRuntime]) -> None:
    # A reload keeps the next runs where they were, unless the new interval brings them closer.
    now = datetime.now(UTC)

    def next_run(job_id: str, interval: float) -> datetime:
        first = now + timedelta(seconds=interval)
        job = sched.get_job(job_id)
        if job is not None and job.next_run_time is not None:
            first = min(first, job.next_run_time)
        return first

    for rt in runtimes:
        schedule_account(
            sched,
            rt,
            first_run=next_run(f"{rt.name}:pull", rt.settings.pull.interval),
            first_push=next_run(f"{rt.name}:push", rt.settings.push.interval),
        )
