"""The latency histogram behind /metrics: Prometheus's cumulative buckets."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callrec.histograms import LATENCY_BUCKETS, Histogram

pytestmark = pytest.mark.timeout(30)


def test_a_value_on_a_bound_counts_in_that_bucket() -> None:
    h = Histogram((0.1, 1.0))
    for value in (0.1, 0.5, 1.0, 3.0):
        h.observe(value)
    assert h.cumulative() == [("0.1", 1), ("1", 3), ("+Inf", 4)]
    assert h.count == 4
    assert h.sum == pytest.approx(4.6)


def test_an_empty_histogram_reports_zeroes() -> None:
    h = Histogram()
    assert [n for _, n in h.cumulative()] == [0] * (len(LATENCY_BUCKETS) + 1)
    assert (h.count, h.sum) == (0, 0.0)


def test_a_negative_duration_counts_as_no_wait() -> None:
    h = Histogram((0.0, 1.0))
    h.observe(-0.25)  # the wall clock stepped back between the two times
    assert h.cumulative() == [("0", 1), ("1", 1), ("+Inf", 1)]
    assert h.sum == 0.0


def test_nan_is_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        Histogram().observe(math.nan)


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0), (0.1, math.inf), (math.nan,)])
def test_bad_bounds_are_refused(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="bounds"):
        Histogram(bounds)


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_each_bucket_counts_the_values_up_to_its_bound(values: list[float]) -> None:
    h = Histogram()
    for v in values:
        h.observe(v)
    buckets = h.cumulative()
    for (le, n), bound in zip(buckets, LATENCY_BUCKETS, strict=False):
        assert le == f"{bound:g}"
        assert n == sum(1 for v in values if v <= bound)
    assert buckets[-1] == ("+Inf", len(values))
    assert h.count == len(values)
    assert h.sum == pytest.approx(sum(values))
