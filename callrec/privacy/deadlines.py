"""Dates of privacy requests (§11: answered at the latest in about a week)."""

from __future__ import annotations

from datetime import date, timedelta

from callrec.privacy.errors import Invalid

ANSWER_WITHIN = timedelta(days=7)


#: Dates a user may give: the clinic's clock turns a date into its first and last instant
#: (a day is added), and PostgreSQL takes them in UTC: near year 1 or 9999 either overflows.
EARLIEST, LATEST = date(1900, 1, 1), date(9998, 12, 31)


def parse_date(text: str) -> date:
    """An ISO date (YYYY-MM-DD) between 1900 and 9998; raise Invalid otherwise."""
    try:
        if len(text.strip()) != 10:
            raise ValueError(text)
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise Invalid(f"not a date (YYYY-MM-DD): {text[:40]!r}") from None
    if not EARLIEST <= day <= LATEST:
        raise Invalid(f"a date between {EARLIEST.year} and {LATEST.year} is required: "
                      f"{text.strip()!r}")
    return day


def received_date(text: str | None, today: date) -> date:
    """The date a request arrived: today if not given; never in the future."""
    received = today if text is None else parse_date(text)
    if received > today:
        raise Invalid("a request cannot be received in the future")
    return received


def due_date(received: date) -> date:
    return received + ANSWER_WITHIN


def is_overdue(due: date, today: date) -> bool:
    return today > due
