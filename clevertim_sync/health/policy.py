"""The numbers behind every delay, with the decision table they go with: one `Policy` per run.

Owns: the defaults of the read retries (the client's backoff, its budgets, the longest wait it
sits out inside one call), the least wait after a bare 429, a queue item's backoff and attempts,
and how long a pause lasts. `Policy.from_settings` takes what the configuration sets; a test may
pass its own `table` to see the client, the pull, photos and the worker follow it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from clevertim_sync import errors as e
from clevertim_sync.health.delays import Rng, next_delay
from clevertim_sync.health.table import TABLE, Action, Decision, Row, Where, decide
from clevertim_sync.settings import Settings


@dataclass(frozen=True)
class Policy:
    """The decision table and the numbers of the delays (see the fields' comments)."""

    table: Mapping[type[e.ApiError], Row] = field(default_factory=lambda: TABLE)
    # A read: retried up to `read_retries` times (`connect_retries` when the table says briefly),
    # waiting backoff(read_backoff_base, read_backoff_cap) but never less than the server asked.
    read_retries: int = 5
    connect_retries: int = 3
    read_backoff_base: float = 0.5
    read_backoff_cap: float = 30.0
    # A wait longer than this is not sat out inside one call: the error goes up and the
    # scheduler comes back later, rather than blocking a pull for an hour.
    max_read_wait: float = 120.0
    # A 429 without Retry-After: wait at least this long (retrying sooner keeps hitting it).
    rate_limit_floor: float = 30.0
    # A queue item (and the push's pause after an outage): backoff over its attempts (the
    # outage's failures in a row), dead letter after `max_attempts`.
    item_backoff_base: float = 2.0
    item_backoff_cap: float = 600.0
    max_attempts: int = 8

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Policy:
        c, p = settings.clevertim, settings.push
        policy = cls(
            read_retries=c.read_retries,
            connect_retries=min(c.connect_retries, c.read_retries),
            rate_limit_floor=c.rate_limit_floor,
            item_backoff_base=p.backoff_base,
            item_backoff_cap=p.backoff_max,
            max_attempts=p.max_attempts,
        )
        return replace(policy, **overrides)

    def decide(self, exc: e.ApiError, where: Where, *, optional: bool = False) -> Decision:
        return decide(exc, where, optional=optional, table=self.table)

    def asked(self, exc: e.ApiError) -> float | None:
        """The least wait the server asked for: its Retry-After, or the floor for a bare 429."""
        if exc.retry_after is None and isinstance(exc, e.RateLimited):
            return self.rate_limit_floor
        return exc.retry_after

    def read_retry(self, exc: e.ApiError, attempt: int, rng: Rng) -> float | None:
        """Seconds before retrying a read that failed on its `attempt`-th try, None: give up."""
        decision = self.decide(exc, Where.READ)
        budget = self.connect_retries if decision.brief else self.read_retries
        if decision.action is not Action.RETRY or attempt > budget:
            return None
        delay = next_delay(
            attempt, self.asked(exc), base=self.read_backoff_base, cap=self.read_backoff_cap, rng=rng
        )
        return None if delay > self.max_read_wait else delay

    def item_retry(self, exc: e.ApiError, attempts: int, rng: Rng) -> float:
        """Seconds before a queue item's next attempt, `attempts` (its count so far) failed."""
        delay = next_delay(
            attempts, exc.retry_after, base=self.item_backoff_base, cap=self.item_backoff_cap, rng=rng
        )
        return max(delay, 0.001)

    def pause_seconds(self, exc: e.ApiError, where: Where, failures: int, rng: Rng) -> float:
        """How long every request waits after `exc` paused the server, `failures` in a row.

        A read waits what the server asked (a 429's Retry-After or the floor); a write's outage
        backs off over the failures in a row, never below what the server asked."""
        asked = self.asked(exc)
        if where in (Where.WRITE, Where.DELETE):
            return next_delay(
                failures, asked, base=self.item_backoff_base, cap=self.item_backoff_cap, rng=rng
            )
        return asked if asked is not None else self.rate_limit_floor
