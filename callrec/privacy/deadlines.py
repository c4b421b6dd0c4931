"""Dates of privacy requests (§11: answered at the latest in about a week)."""

from __future__ import annotations

from datetime import date, timedelta

from callrec.privacy.errors import Invalid

ANSWER_WITHIN = timedelta(days=7)


def parse_date(text: str) -> date:
    """An ISO date (YYYY-MM-DD); raise Invalid otherwise."""
    try:
        if len(text.strip()) != 10:
            raise ValueError(text)
        return date.fromisoformat(text.strip())
    except ValueError:
        raise Invalid(f"not a date (YYYY-MM-DD): {text[:40]!r}") from None


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
