"""A bounded APScheduler executor: at most `workers` jobs at once, the most overdue first.

Owns: the bound on how many jobs of one kind (pulls, pushes, backups) run at once across every
account, and the order in which waiting jobs get a slot. The daemon's memory is one pull's working
set times the pulls that run at once, so the bound is what keeps an agency's daemon inside its
unit's MemoryMax; and its threads are these workers, however many accounts there are.

Why not APScheduler's ThreadPoolExecutor: its queue is first come, first served, and it cannot put
an account whose pulls keep failing behind the healthy ones. Here a waiting job is ranked by
`rank(job)` (lower first: the scheduler ranks a failing account's pulls after the others), then by
the time it fell due: the longest overdue first.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from apscheduler.executors.base import BaseExecutor, run_job


class OverdueFirstExecutor(BaseExecutor):  # type: ignore[misc]  # APScheduler 3 is untyped
    def __init__(self, workers: int, *, rank: Callable[[Any], int] = lambda _job: 0) -> None:
        super().__init__()
        self.workers = workers
        self._rank = rank
        self._waiting: list[tuple[int, datetime, int, Any, list[datetime]]] = []
        self._order = itertools.count()  # ties keep their order of arrival
        self._cond = threading.Condition()
        self._closed = False
        self._threads: list[threading.Thread] = []

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self._threads = [
            threading.Thread(target=self._work, name=f"{alias}-{n}", daemon=True) for n in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        with self._cond:
            heapq.heappush(self._waiting, (self._rank(job), run_times[0], next(self._order), job, run_times))
            self._cond.notify()

    def waiting(self) -> int:
        """Jobs due but waiting for a slot (for the metrics: a daemon falling behind)."""
        with self._cond:
            return len(self._waiting)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:  # the daemon stops: what still waits is left for the next start
                    return
                *_, job, run_times = heapq.heappop(self._waiting)
            try:
                events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
            except BaseException as exc:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, events)

    def shutdown(self, wait: bool = True) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()
