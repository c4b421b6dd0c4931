"""Opening hours of a service, evaluated in the service's own time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from callrec.routing.model import Service

log = structlog.get_logger(__name__)


def is_open(service: Service, at: datetime) -> bool:
    """True when `at` falls in one of the service's intervals (no intervals: always open).

    An interval whose closing time is not after its opening time runs past midnight into the
    next day. An unknown time zone keeps the service open: a wrong setting must not turn
    callers away.
    """
    if not service.hours:
        return True
    try:
        local = at.astimezone(ZoneInfo(service.timezone))
    except (ZoneInfoNotFoundError, ValueError):
        log.error("unknown time zone: service treated as open", timezone=service.timezone)
        return True
    day, now = local.weekday(), local.time().replace(tzinfo=None)
    for interval in service.hours:
        if interval.opens < interval.closes:
            if interval.weekday == day and interval.opens <= now < interval.closes:
                return True
        elif (interval.weekday == day and now >= interval.opens) or (
            (interval.weekday + 1) % 7 == day and now < interval.closes
        ):
            return True
    return False
