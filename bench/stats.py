"""Percentiles and summaries of latency samples (pure)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], p: float) -> float:
    """The `p`-th percentile (0..100) by the nearest-rank method: always one of the samples,
    so a p99 of 100 samples is the 99th smallest, never an interpolated value."""
    if not samples:
        raise ValueError("no samples")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0..100")
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Summary:
    count: int
    p50: float
    p95: float
    p99: float
    max: float

    def as_dict(self) -> dict[str, float]:
        return {"count": self.count, "p50": self.p50, "p95": self.p95, "p99": self.p99,
                "max": self.max}


def summarize(samples: Sequence[float]) -> Summary:
    if not samples:
        raise ValueError("no samples")
    return Summary(len(samples), percentile(samples, 50), percentile(samples, 95),
                   percentile(samples, 99), max(samples))


def bucket_quantile(before: Sequence[tuple[float, int]], after: Sequence[tuple[float, int]],
                    q: float) -> float | None:
    """The upper bound of the bucket that holds the `q`-quantile (0..1) of what a Prometheus
    histogram counted between two readings of its cumulative `(le, count)` buckets (the same
    bounds, `+Inf` last as `math.inf`); None if it counted nothing in between."""
    if not 0 < q <= 1:
        raise ValueError(f"quantile {q} is outside (0, 1]")
    if [le for le, _ in before] != [le for le, _ in after] or not after:
        raise ValueError("the two readings have different buckets")
    counts = [n1 - n0 for (_, n0), (_, n1) in zip(before, after, strict=True)]
    if any(b < a for a, b in itertools.pairwise(counts)) or counts[0] < 0:
        raise ValueError("the counts went down: the process restarted between the readings")
    total = counts[-1]
    if total == 0:
        return None
    wanted = q * total
    return next(le for (le, _), n in zip(after, counts, strict=True) if n >= wanted)
