"""Latency histograms for `/metrics`, in Prometheus's form: cumulative buckets, sum, count."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from itertools import pairwise

#: Upper bounds in seconds: the call flow's goals are tens of milliseconds, and under
#: overload a caller or an agent can wait seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts of observed durations (seconds) per bucket; each bucket counts the values
    up to and including its bound, the last one (`+Inf`) all of them."""

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        bounds = tuple(float(b) for b in bounds)
        if not bounds or any(not math.isfinite(b) for b in bounds):
            raise ValueError("histogram bounds must be finite numbers, at least one")
        if any(a >= b for a, b in pairwise(bounds)):
            raise ValueError("histogram bounds must increase")
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # A duration from wall-clock times can come out negative when the clock is stepped
        # back; it counts as no wait rather than poisoning the sum. NaN is a caller's bug.
        if math.isnan(seconds):
            raise ValueError("cannot observe NaN")
        seconds = max(seconds, 0.0)
        self._counts[bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """`(le, count)` per bucket, `+Inf` last, as the `_bucket` series wants them."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip(self.bounds, self._counts, strict=False):
            running += n
            out.append((f"{bound:g}", running))
        out.append(("+Inf", running + self._counts[-1]))
        return out
