"""HTTP Range header parsing (RFC 9110 §14.1.2) for the recording player."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callrec.web.errors import RangeNotSatisfiable
from callrec.web.ranges import ByteRange, parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("", 100, None),
        ("bytes=0-9", 100, ByteRange(0, 9)),
        ("bytes=90-", 100, ByteRange(90, 99)),
        ("bytes=90-1000", 100, ByteRange(90, 99)),
        ("bytes=-10", 100, ByteRange(90, 99)),
        ("bytes=-1000", 100, ByteRange(0, 99)),
        ("bytes=5-5", 100, ByteRange(5, 5)),
        ("bytes = 0 - 9", 100, ByteRange(0, 9)),
        ("bytes=0-1,5-9", 100, None),  # several ranges: the whole file
        ("items=0-9", 100, None),
        ("bytes=9-0", 100, None),
        ("bytes=-", 100, None),
        ("bytes=abc", 100, None),
        # numbers past what int() takes (4,300 digits) or any file's size
        ("bytes=0-" + "9" * 5000, 100, ByteRange(0, 99)),
        ("bytes=-" + "9" * 5000, 100, ByteRange(0, 99)),
        ("bytes=" + "0" * 5000 + "7-9", 100, ByteRange(7, 9)),  # leading zeros
    ],
)
def test_parse_range(header: str | None, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=100-", 100), ("bytes=-0", 100),
                                              ("bytes=0-", 0), ("bytes=-5", 0),
                                              ("bytes=" + "1" * 5000 + "-", 100),
                                              ("bytes=" + "0" * 5000 + "-", 0)])
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(1, 10_000))
def test_a_satisfiable_range_lies_inside_the_file(a: int, b: int, size: int) -> None:
    try:
        got = parse_range(f"bytes={a}-{b}", size)
    except RangeNotSatisfiable:
        assert a >= size
        return
    if got is None:
        assert b < a
    else:
        assert 0 <= got.start <= got.end < size and got.length >= 1
