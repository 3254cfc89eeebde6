"""The bounded executors of the daemon's scheduler (daemon/slots.py, scheduler.new_scheduler): at
most `concurrent_pulls` pulls at once whatever the number of accounts, the most overdue first, a
failing account's pull behind the healthy ones, and a push never waiting behind the pulls."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from clevertim_sync.daemon.scheduler import new_scheduler
from clevertim_sync.daemon.slots import OverdueFirstExecutor
from clevertim_sync.settings import DaemonSettings


class Log:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def job(self, name: str, seconds: float) -> None:
        with self._lock:
            self.started.append(name)
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(seconds)
        with self._lock:
            self.running -= 1


@pytest.fixture
def sched() -> Iterator[BackgroundScheduler]:
    s = BackgroundScheduler(
        timezone=UTC,
        executors={
            "pull": OverdueFirstExecutor(1, rank=lambda job: 1 if job.id.startswith("failing") else 0)
        },
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )
    s.start()
    yield s
    s.shutdown(wait=False)


def _wait(predicate: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_most_overdue_waiting_pull_goes_first_and_a_failing_one_last(sched: BackgroundScheduler) -> None:
    log = Log()
    now = datetime.now(UTC)

    def add(job_id: str, overdue: float, seconds: float = 0.05) -> None:
        sched.add_job(
            log.job,
            args=[job_id, seconds],
            id=job_id,
            executor="pull",
            next_run_time=now - timedelta(seconds=overdue),
        )

    add("busy", 0, seconds=0.5)  # holds the only slot while the others arrive
    _wait(lambda: log.started == ["busy"])
    add("due-5s", 5)  # first come...
    add("failing-120s", 120)  # ...the longest overdue, but its account's last pull failed
    add("due-60s", 60)
    add("due-30s", 30)
    _wait(lambda: len(log.started) == 5)
    assert log.started == ["busy", "due-60s", "due-30s", "due-5s", "failing-120s"]
    assert log.most == 1


def test_pulls_are_bounded_across_accounts_and_a_push_does_not_wait_for_them() -> None:
    sched = new_scheduler(DaemonSettings(concurrent_pulls=2))
    log = Log()
    now = datetime.now(UTC)
    for n in range(8):  # eight accounts due at once
        sched.add_job(log.job, args=[f"pull-{n}", 0.3], id=f"a{n}:pull", executor="pull", next_run_time=now)
    sched.add_job(
        log.job, args=["push", 0.0], id="a0:push", executor="push", next_run_time=now + timedelta(seconds=0.1)
    )
    sched.start()
    try:
        _wait(lambda: "push" in log.started, 2)
        assert log.started.index("push") <= 3  # not after the eight pulls: it had its own slot
        _wait(lambda: len(log.started) == 9)
        assert log.most <= 3  # two pulls and the push
    finally:
        sched.shutdown(wait=False)
