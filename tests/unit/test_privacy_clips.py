"""Disclosure ranges: parsing offsets and checking them against a recording."""

from __future__ import annotations

import pytest

from callrec.privacy.clips import clip_range, format_offset, parse_offset
from callrec.privacy.errors import Invalid


@pytest.mark.parametrize("text,ms", [
    ("00:00", 0), ("01:02", 62_000), ("1:02.5", 62_500), ("00:03.25", 3_250),
    ("00:03.007", 3_007), ("125:00", 7_500_000), ("1:02:03.004", 3_723_004),
])
def test_offsets_parse_to_milliseconds(text: str, ms: int) -> None:
    assert parse_offset(text) == ms


@pytest.mark.parametrize("bad", ["", "5", "1:60", "1:2", "00:01.0001", "-0:01", "a:bc",
                                 "1:60:00", "00:01,5", "1:02:03:04"])
def test_malformed_offsets_are_refused(bad: str) -> None:
    with pytest.raises(Invalid):
        parse_offset(bad)


def test_format_round_trips() -> None:
    assert format_offset(62_500) == "01:02.500"
    assert parse_offset(format_offset(3_723_004)) == 3_723_004


def test_range_is_sample_exact_at_8khz() -> None:
    rng = clip_range(1_250, 3_007, 8000, 80_000)
    assert (rng.start_sample, rng.end_sample) == (10_000, 24_056)
    assert rng.duration_ms == 1_757
    assert clip_range(0, 10_000, 8000, 80_000).end_sample == 80_000  # up to the very end


@pytest.mark.parametrize("start,end,message", [
    (2_000, 1_000, "reversed"), (1_000, 1_000, "empty"), (0, 10_001, "after the recording"),
    (-1, 5, "negative"),
])
def test_bad_ranges_are_refused(start: int, end: int, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        clip_range(start, end, 8000, 80_000)


def test_offsets_off_the_sample_grid_are_refused() -> None:
    with pytest.raises(Invalid, match="sample boundary"):
        clip_range(0, 1, 44_100, 1_000_000)  # 1 ms = 44.1 samples
