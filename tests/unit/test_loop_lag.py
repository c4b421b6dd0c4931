"""The event loop's lateness for /metrics: what is observed, the warning, and a real loop
held up by blocking work."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from structlog.testing import capture_logs

from callrec.loop_lag import SLOW_LOOP_S, WARN_EVERY_S, LoopLag
from tests.polling import eventually

pytestmark = pytest.mark.timeout(10)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lateness_goes_into_the_histogram_and_the_worst() -> None:
    lag = LoopLag(clock=Clock())
    for seconds in (0.0004, 0.003, -0.0002, 0.04):
        lag.observe(seconds)
    assert lag.histogram.count == 4
    assert lag.histogram.sum == pytest.approx(0.0434)
    assert lag.worst == pytest.approx(0.04)
    buckets = dict(lag.histogram.cumulative())
    assert (buckets["0.001"], buckets["0.005"], buckets["0.05"]) == (2, 3, 4)


def test_a_late_loop_warns_at_most_once_per_period() -> None:
    clock = Clock()
    lag = LoopLag(clock=clock)
    with capture_logs() as logs:
        lag.observe(SLOW_LOOP_S / 2)
        lag.observe(SLOW_LOOP_S + 0.1)
        clock.now += WARN_EVERY_S / 2
        lag.observe(SLOW_LOOP_S + 0.2)
        clock.now += WARN_EVERY_S
        lag.observe(SLOW_LOOP_S + 0.3)
    late = [e for e in logs if e["log_level"] == "warning"]
    assert [e["late_s"] for e in late] == [round(SLOW_LOOP_S + 0.1, 3),
                                           round(SLOW_LOOP_S + 0.3, 3)]
    assert lag.histogram.count == 4


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        LoopLag(interval=0)


async def test_blocking_work_on_the_loop_shows_as_lateness() -> None:
    lag = LoopLag(interval=0.02)

    async def woke(times: int) -> bool:
        return lag.histogram.count >= times

    async def late() -> bool:
        return lag.worst >= 0.9

    task = asyncio.create_task(lag.run())
    try:
        await eventually(lambda: woke(3), timeout=5, interval=0.01, what="a few wake-ups")
        # an idle loop is on time (the bound is wide: a busy CI machine makes any loop late
        # by a few tens of ms, never by half a second)
        assert lag.worst < 0.5
        time.sleep(1.0)  # noqa: ASYNC251 - holding the loop up is the point
        await eventually(late, timeout=5, interval=0.01, what="the lateness seen")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert task.cancelled()
