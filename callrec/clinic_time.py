"""The clinic's calendar. The dates people type and read (a day's calls, an account valid
through a date, the day a privacy request arrived) are days in the clinic's timezone
(`CALLREC_TIMEZONE`), whatever zone the server or PostgreSQL runs in; stored times stay
absolute (timestamptz, UTC in the logs and files)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callrec.errors import ConfigError

DEFAULT_TIMEZONE = "Europe/Helsinki"  # the clinic of the privacy statement
DEFAULT_ZONE = ZoneInfo(DEFAULT_TIMEZONE)


def clinic_timezone(env: Mapping[str, str] | None = None) -> ZoneInfo:
    """The zone named by CALLREC_TIMEZONE (default Europe/Helsinki); ConfigError if unknown."""
    env = os.environ if env is None else env
    name = env.get("CALLREC_TIMEZONE", "").strip() or DEFAULT_TIMEZONE
    return zone(name)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"CALLREC_TIMEZONE: unknown timezone {name[:60]!r} (e.g. {DEFAULT_TIMEZONE!r})"
        ) from None


def day_start(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of `day` in the clinic (its midnight; DST days have 23 or 25 h)."""
    return datetime.combine(day, time(0), tzinfo=tz)


def end_of_day(day: date, tz: ZoneInfo) -> datetime:
    """The instant `day` ends in the clinic: what 'valid through `day`' expires at, and
    where a search 'until `day`' (that day included) stops."""
    return day_start(day + timedelta(days=1), tz)


def last_day(end: datetime, tz: ZoneInfo) -> date:
    """The clinic's day an `end_of_day` instant closes (the 'valid through' date)."""
    return (end.astimezone(tz) - timedelta(microseconds=1)).date()


def local(at: datetime, tz: ZoneInfo) -> datetime:
    """`at` on the clinic's clock (a naive value is taken as UTC)."""
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(tz)
