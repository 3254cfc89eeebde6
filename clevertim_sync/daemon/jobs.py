"""Running one account's jobs: never two at once, never longer than the deadline as far as the scheduler sees.

Owns: the per-account job lock (a pull and a push never interleave, so an edit is never pushed
against a half-applied pull nor folded back while a pull rewrites its record), the deadline (the
job runs in its own thread; the scheduler stops waiting after `deadline` seconds and records a
failure, while the HTTP client's timeouts are what really ends a hung call), and the outcome record
handed to metrics, health and the terminal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class JobOutcome:
    account: str
    job: str
    status: str  # "ok" | "failed" | "timeout" | "skipped"
    duration: float
    result: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class JobRunner:
    """Runs the jobs of one account one at a time, each within `deadline` seconds."""

    def __init__(
        self,
        account: str,
        deadline: float,
        *,
        on_finish: Callable[[JobOutcome], None] | None = None,
        wait_for_busy: float = 1.0,
    ) -> None:
        self.account = account
        self.deadline = deadline
        self._on_finish = on_finish
        self._wait_for_busy = wait_for_busy
        self._busy = threading.Lock()
        self._current: str | None = None
        self._closed = threading.Event()

    @property
    def current(self) -> str | None:
        """The job running now (it may be past its deadline), or None."""
        return self._current

    def close(self) -> None:
        """No new job starts from now on; the running one goes on to its end."""
        self._closed.set()

    def reopen(self) -> None:
        """Jobs may start again (an account given back to the other daemons, then taken again)."""
        self._closed.clear()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the running job to end; True when none runs."""
        if not self._busy.acquire(timeout=max(timeout, 0.0)):
            return False
        self._busy.release()
        return True

    def run(self, job: str, fn: Callable[[], Any]) -> JobOutcome:
        if self._closed.is_set():
            return self._finish(JobOutcome(self.account, job, "skipped", 0.0, result="stopping"))
        # Waiting long here would pile scheduler threads up behind a long pull; the job's next
        # turn (or the queue watch, for a push) comes soon enough.
        if not self._busy.acquire(timeout=self._wait_for_busy):
            log.debug("job.skipped", account=self.account, job=job, busy_with=self._current)
            return self._finish(
                JobOutcome(self.account, job, "skipped", 0.0, result=f"busy: {self._current}")
            )
        if self._closed.is_set():
            self._busy.release()
            return self._finish(JobOutcome(self.account, job, "skipped", 0.0, result="stopping"))
        self._current = job
        started = time.monotonic()
        done = threading.Event()
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"] = fn()
            except BaseException as exc:  # every failure becomes an outcome
                box["error"] = exc
            finally:
                # The lock is released by the job itself, not at the deadline: a job past its
                # deadline still keeps the other jobs of this account out until it really ends.
                self._current = None
                self._busy.release()
                done.set()

        thread = threading.Thread(target=target, name=f"job-{self.account}-{job}", daemon=True)
        thread.start()
        if not done.wait(self.deadline):
            log.error("job.deadline_exceeded", account=self.account, job=job, deadline=self.deadline)
            return self._finish(
                JobOutcome(
                    self.account,
                    job,
                    "timeout",
                    time.monotonic() - started,
                    error=TimeoutError(f"{job} ran past its deadline of {self.deadline:g} s"),
                )
            )
        duration = time.monotonic() - started
        if "error" in box:
            return self._finish(JobOutcome(self.account, job, "failed", duration, error=box["error"]))
        return self._finish(JobOutcome(self.account, job, "ok", duration, result=box.get("result")))

    def _finish(self, outcome: JobOutcome) -> JobOutcome:
        if self._on_finish is not None:
            try:
                self._on_finish(outcome)
            except Exception:
                log.exception("job.report_failed", account=self.account, job=outcome.job)
        return outcome
