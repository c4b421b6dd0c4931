"""How late the service's event loop runs what is due: its own overload signal.

Every call's events, requests and row writes are callbacks on the one loop. While the process
keeps up, a timer fires within a millisecond or so of its time; when the loop has more work
than one core can do, or the process waits for a CPU the machine does not have free,
everything due waits and the lateness grows. The notice and join waits in `/metrics` include
Asterisk's own answer times; this does not, so it tells whether callrec was slow to react
(whether from its own work or for want of a CPU, the process's CPU time tells).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from callrec.histograms import Histogram

log = structlog.get_logger(__name__)

#: Upper bounds in seconds: a loop that keeps up is late by well under 5 ms.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
INTERVAL_S = 0.25
SLOW_LOOP_S = 0.5  # later than this, a warning line (at most one per WARN_EVERY_S)
WARN_EVERY_S = 10.0


class LoopLag:
    """Sleeps `interval` seconds at a time and observes how much later than asked it woke."""

    def __init__(self, interval: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval <= 0:
            raise ValueError("the interval must be positive")
        self.interval = interval
        self.histogram = Histogram(LAG_BUCKETS)
        self.worst = 0.0
        self._clock = clock
        self._quiet_until = float("-inf")

    def observe(self, lag: float) -> None:
        """One wake-up `lag` seconds late (a clock's jitter can make it slightly negative)."""
        lag = max(lag, 0.0)
        self.histogram.observe(lag)
        self.worst = max(self.worst, lag)
        now = self._clock()
        if lag > SLOW_LOOP_S and now >= self._quiet_until:
            self._quiet_until = now + WARN_EVERY_S
            log.warning("event loop running late: callrec busy or short of CPU",
                        late_s=round(lag, 3))

    async def run(self) -> None:
        """Measure until cancelled."""
        while True:
            due = self._clock() + self.interval
            await asyncio.sleep(self.interval)
            self.observe(self._clock() - due)
