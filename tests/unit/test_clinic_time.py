"""The clinic's calendar: days, 'valid through' dates and local times in its timezone."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from callrec.clinic_time import clinic_timezone, day_start, end_of_day, last_day, local, zone
from callrec.errors import ConfigError

HELSINKI = zone("Europe/Helsinki")


def test_a_day_starts_at_the_clinics_midnight() -> None:
    assert day_start(date(2026, 11, 28), HELSINKI) == datetime(2026, 11, 27, 22, 0, tzinfo=UTC)
    assert day_start(date(2026, 7, 1), HELSINKI) == datetime(2026, 6, 30, 21, 0, tzinfo=UTC)


def test_valid_through_a_day_ends_with_it_and_reads_back_as_it() -> None:
    end = end_of_day(date(2026, 12, 31), HELSINKI)
    assert end == datetime(2026, 12, 31, 22, 0, tzinfo=UTC)
    assert last_day(end, HELSINKI) == date(2026, 12, 31)


def test_a_dst_day_has_its_own_length() -> None:
    # Finland goes to summer time on 2026-03-29: that day has 23 hours
    # (the difference in UTC: Python subtracts two times of one zone on the wall clock)
    day = date(2026, 3, 29)
    length = end_of_day(day, HELSINKI).astimezone(UTC) - day_start(day, HELSINKI).astimezone(UTC)
    assert length.total_seconds() == 23 * 3600


def test_local_takes_a_naive_time_as_utc() -> None:
    at = local(datetime(2026, 11, 28, 22, 30), HELSINKI)
    assert (at.date(), at.hour) == (date(2026, 11, 29), 0)


def test_clinic_timezone_from_the_environment() -> None:
    assert clinic_timezone({}).key == "Europe/Helsinki"
    assert clinic_timezone({"CALLREC_TIMEZONE": " UTC "}).key == "UTC"
    for bad in ("Mars/Olympus", "../../etc/passwd", "/etc/localtime"):
        with pytest.raises(ConfigError, match="CALLREC_TIMEZONE"):
            clinic_timezone({"CALLREC_TIMEZONE": bad})
