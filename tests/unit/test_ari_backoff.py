"""Reconnect backoff: capped exponential growth, full jitter, reset after a stable connection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callrec.ari.backoff import (
    BASE_DELAY,
    MAX_DELAY,
    STABLE_AFTER,
    Backoff,
    backoff_ceiling,
    backoff_delay,
)


def test_defaults_are_the_documented_ones() -> None:
    assert (BASE_DELAY, MAX_DELAY, STABLE_AFTER) == (0.5, 10.0, 30.0)


def test_ceiling_doubles_until_the_cap() -> None:
    assert [backoff_ceiling(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_ceiling(10_000) == 10.0


def test_negative_attempt_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff_ceiling(-1)


@given(
    attempt=st.integers(0, 100_000),
    u=st.floats(0.0, 1.0, exclude_max=True),
    base=st.floats(0.001, 5.0),
    cap=st.floats(0.01, 60.0),
)
def test_delay_is_within_zero_and_ceiling(attempt: int, u: float, base: float, cap: float) -> None:
    delay = backoff_delay(attempt, base=base, cap=cap, uniform=lambda: u)
    ceiling = backoff_ceiling(attempt, base=base, cap=cap)
    assert ceiling == min(cap, base * 2.0 ** min(attempt, 64))
    assert 0.0 <= delay <= ceiling <= cap


def test_full_jitter_spans_the_whole_range() -> None:
    assert backoff_delay(3, uniform=lambda: 0.0) == 0.0
    assert backoff_delay(3, uniform=lambda: 0.5) == 2.0
    assert backoff_delay(3, uniform=lambda: 0.999) == pytest.approx(3.996)


def test_default_jitter_is_random_and_bounded() -> None:
    delays = {backoff_delay(8) for _ in range(200)}
    assert all(0.0 <= d < MAX_DELAY for d in delays)
    assert len(delays) > 150, "delays must be spread, not fixed"


def test_backoff_grows_per_failure_and_resets_after_stable_connection() -> None:
    b = Backoff(uniform=lambda: 0.999999)
    ceilings = [round(b.next_delay(), 3) for _ in range(7)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    b.connection_lived(STABLE_AFTER - 0.1)  # flapping connection: keep backing off
    assert round(b.next_delay(), 3) == 10.0
    b.connection_lived(STABLE_AFTER)
    assert round(b.next_delay(), 3) == 0.5
    assert round(b.next_delay(), 3) == 1.0
