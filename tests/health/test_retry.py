"""The pure retry policy: backoff ceilings, jitter range, Retry-After floor, header parsing."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clevertim_sync.health.delays import MAX_RETRY_AFTER, backoff_delay, next_delay, parse_retry_after


class Top:
    def uniform(self, a: float, b: float) -> float:
        return b


def test_ceiling_doubles_up_to_cap() -> None:
    assert [backoff_delay(n, base=1.0, cap=10.0, rng=Top()) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_huge_attempt_does_not_overflow() -> None:
    assert backoff_delay(10_000, base=2.0, cap=600.0, rng=Top()) == 600.0


def test_attempt_counts_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        backoff_delay(0, base=1.0, cap=1.0)


@given(st.integers(1, 200), st.floats(0.01, 10), st.floats(0.01, 1000), st.integers(0, 2**32))
def test_full_jitter_stays_in_range(attempt: int, base: float, cap: float, seed: int) -> None:
    delay = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2 ** (attempt - 1)) + 1e-9


@given(st.integers(1, 50), st.floats(0, 5000), st.integers(0, 2**32))
def test_never_before_retry_after(attempt: int, retry_after: float, seed: int) -> None:
    delay = next_delay(attempt, retry_after, base=0.5, cap=30.0, rng=random.Random(seed))
    assert delay >= min(retry_after, MAX_RETRY_AFTER)
    assert delay <= max(30.0, min(retry_after, MAX_RETRY_AFTER))


def test_jitter_spreads_waits() -> None:
    rng = random.Random(1)
    waits = {round(backoff_delay(5, base=1.0, cap=60.0, rng=rng), 6) for _ in range(50)}
    assert len(waits) > 40


def test_parse_retry_after() -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 5 ") == 5.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now=now) == 0.0  # in the past
    for junk in [None, "", "soon", "-3", "1.5e3"]:
        assert parse_retry_after(junk, now=now) is None
