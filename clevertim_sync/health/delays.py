"""The delays, pure: how long to wait before the next attempt, and how long a pause lasts.

Owns: exponential backoff with full jitter, honouring a server's Retry-After (capped at
MAX_RETRY_AFTER), parsing a Retry-After header value (delta-seconds or an HTTP date), the
growing rest of a resource that keeps failing (`resting_wait`) and the daemon's waits for an
unreachable API at start-up (`start_wait`). `policy.Policy` applies them with its numbers (from
the settings): a read's retries in the client, a queue item's next attempt, a pause's length.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol


class Rng(Protocol):
    """What the policy needs from a random source: `random.Random` fits, tests pass a fixed one."""

    def uniform(self, a: float, b: float) -> float: ...


_DEFAULT_RNG = random.Random()

# The longest Retry-After we accept as given: a server asking for more than an hour is treated as
# asking for an hour, so a bogus header cannot park a pull (or a queue item) for days.
MAX_RETRY_AFTER = 3600.0


def backoff_delay(attempt: int, *, base: float, cap: float, rng: Rng | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1 = the first retry): full jitter.

    The ceiling grows as base * 2**(attempt-1) up to `cap`; the wait is uniform in [0, ceiling],
    which spreads many clients (or many queue items) retrying at once (AWS "full jitter").
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    # min() on the exponent first so a large attempt number cannot overflow the float.
    ceiling = min(cap, base * (2.0 ** min(attempt - 1, 62)))
    return (rng or _DEFAULT_RNG).uniform(0.0, ceiling)


def next_delay(
    attempt: int,
    retry_after: float | None = None,
    *,
    base: float,
    cap: float,
    rng: Rng | None = None,
) -> float:
    """The wait before retry `attempt`: the jittered backoff, but never earlier than Retry-After.

    A Retry-After above `cap` is still honoured (up to MAX_RETRY_AFTER): the server said when.
    """
    delay = backoff_delay(attempt, base=base, cap=cap, rng=rng)
    if retry_after is not None:
        delay = max(delay, min(max(retry_after, 0.0), MAX_RETRY_AFTER))
    return delay


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (`120` or `Wed, 21 Oct 2015 07:28:00 GMT`), None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT; parsedate gives naive for "-0000"
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


# The daemon's waits for an API it cannot reach at start-up: doubling from 2 s up to this.
START_WAIT_CAP = 30.0
# The longest a resource that keeps failing is left alone between pulls.
RESTING_CAP = 3600.0


def start_wait(attempt: int) -> float:
    """Seconds before the daemon checks the token again after the API could not be reached."""
    return min(2.0**attempt, START_WAIT_CAP)


def resting_wait(failures: int, interval: float) -> float:
    """Extra seconds to leave a resource alone after `failures` failed pulls in a row.

    The first failure is retried at the next scheduled pull; after that the wait doubles from one
    interval, capped at an hour. The ceiling of `backoff_delay`, not a random draw: a daemon's
    schedule should be predictable (the scheduler's own jitter already spreads the load).
    """
    if failures <= 1:
        return 0.0
    return backoff_delay(failures - 1, base=interval, cap=RESTING_CAP, rng=_Ceiling())


class _Ceiling:
    def uniform(self, a: float, b: float) -> float:
        return b
