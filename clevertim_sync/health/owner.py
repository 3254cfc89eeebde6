"""The server's health for one run: the decision applied, the pause set, read and lifted.

Owns: `ServerHealth`, what the pull, photos, the worker and the daemon ask after an API error
(`after_error`: the table's decision, the pause it sets, a queue item's next attempt) and before
sending anything (`paused_until`), and the outage's failures in a row (a push after an outage
probes with one request: `recovering`). The pause is one row shared by every request to the
server; its statements are the mirror's (`mirror/pause.py`), reached through `PauseStore`.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from clevertim_sync import errors as e
from clevertim_sync.health.delays import Rng
from clevertim_sync.health.policy import Policy
from clevertim_sync.health.table import Action, Decision, Where


@dataclass(frozen=True)
class Pause:
    """No request to the server before `not_before`; `failures`: outages in a row behind it."""

    not_before: datetime
    failures: int
    reason: str | None


class PauseStore(Protocol):
    """Where the pause is kept (mirror/pause.py `PauseRow`: one row of the mirror's database)."""

    def get(self) -> Pause | None: ...

    def set(self, pause: Pause, now: datetime) -> None: ...

    def clear(self) -> None: ...


@dataclass(frozen=True)
class Verdict:
    """The decision for one error, and what it set: the pause's end, a queue item's next try."""

    decision: Decision
    paused_until: datetime | None = None
    attempts: int = 0  # a queue item's attempts after this failure
    retry_at: datetime | None = None  # a queue item's next attempt (a retry, or the pause's end)
    gave_up: bool = False  # a queue item's retries are spent: the table's retry became a dead letter


class ServerHealth:
    """The decisions of one run (a pull, a push, a daemon's check) against one server.

    Thread-safe: the push's worker threads report their errors and successes here."""

    def __init__(
        self,
        pauses: PauseStore,
        policy: Policy | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        rng: Rng | None = None,
    ) -> None:
        self.policy = policy or Policy()
        self._pauses = pauses
        self._clock = clock or (lambda: datetime.now(UTC))
        self._rng: Rng = rng or random.Random()
        self._lock = threading.Lock()
        self._failures: int | None = None  # outages in a row, read from the pause at first need

    # --- before sending -----------------------------------------------------------------------

    def pause(self) -> Pause | None:
        """The pause as stored, in force or not."""
        return self._pauses.get()

    def paused_until(self, now: datetime | None = None) -> Pause | None:
        """The pause when it is still in force at `now`: nothing may be sent before its end."""
        pause = self._pauses.get()
        with self._lock:
            if self._failures is None:
                self._failures = pause.failures if pause is not None else 0
        if pause is not None and pause.not_before > (now or self._clock()):
            return pause
        return None

    @property
    def recovering(self) -> bool:
        """An outage was met (this run or before it) and no request has gone through since."""
        with self._lock:
            return bool(self._failures)

    # --- after an answer ----------------------------------------------------------------------

    def succeeded(self) -> None:
        """A request went through: an outage's pause is over."""
        with self._lock:
            if not self._failures:
                return
            self._failures = 0
        self._pauses.clear()

    def after_error(
        self, exc: e.ApiError, where: Where, *, optional: bool = False, attempts: int = 0
    ) -> Verdict:
        """The table's decision for `exc` at `where`, applied: a pause is stored; for a queue
        item (`attempts` made before this one), its next attempt and whether its retries are spent."""
        decision = self.policy.decide(exc, where, optional=optional)
        now = self._clock()
        paused_until = self._pause(exc, where, now) if decision.pause else None
        if where not in (Where.WRITE, Where.DELETE):
            return Verdict(decision, paused_until)
        if decision.action is Action.BACK:  # the server's fault: no attempt spent
            return Verdict(decision, paused_until, attempts=attempts, retry_at=paused_until)
        attempts += 1
        if decision.action is not Action.RETRY:
            return Verdict(decision, paused_until, attempts=attempts)
        if attempts >= self.policy.max_attempts:
            return Verdict(Decision(Action.DEAD_LETTER), paused_until, attempts=attempts, gave_up=True)
        delay = self.policy.item_retry(exc, attempts, self._rng)
        return Verdict(decision, paused_until, attempts=attempts, retry_at=now + timedelta(seconds=delay))

    def _pause(self, exc: e.ApiError, where: Where, now: datetime) -> datetime:
        if self._failures is None:
            self.paused_until(now)
        with self._lock:
            self._failures = (self._failures or 0) + 1
            failures = self._failures
        until = now + timedelta(seconds=self.policy.pause_seconds(exc, where, failures, self._rng))
        self._pauses.set(Pause(until, failures, str(exc)), now)
        return until
