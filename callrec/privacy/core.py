"""Shared plumbing of the privacy service: construction, authorisation, field validation."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from callrec.clinic_time import DEFAULT_ZONE, day_start, end_of_day
from callrec.errors import ConfigError, NotConfigured
from callrec.privacy import audit
from callrec.privacy.errors import (
    Forbidden,
    Invalid,
)
from callrec.privacy.numbers import NumberHasher
from callrec.privacy.roles import Actor, Operation, Role, permits

log = structlog.get_logger(__name__)

USERNAME_PATTERN = r"^[a-z][a-z0-9._-]{1,31}$"


def text_field(value: str | None, what: str, limit: int = 500) -> str:
    """A required free-text field: trimmed, non-empty, bounded, no control characters."""
    cleaned = (value or "").strip()
    if not cleaned:
        raise Invalid(f"{what} is required")
    if len(cleaned) > limit:
        raise Invalid(f"{what} may have at most {limit} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in cleaned):
        raise Invalid(f"{what} must not contain control characters")
    return cleaned


def username_field(value: str) -> str:
    """A username as stored: lower case, checked against USERNAME_PATTERN."""
    name = value.strip().lower()
    if not re.match(USERNAME_PATTERN, name):
        raise Invalid("a username is 2-32 characters: a-z first, then a-z 0-9 . _ -")
    return name


def parse_call_id(value: str | UUID) -> UUID:
    """A call id from text; raise Invalid for anything that is not a UUID."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value.strip())
    except (ValueError, AttributeError):
        raise Invalid(f"not a call id: {str(value)[:40]!r}") from None


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC, or None."""
    return value.astimezone(UTC).isoformat() if value is not None else None


CALL_COLUMNS = (
    "c.id, c.caller_number, c.caller_name, c.service_number, c.service_name, c.agent_name, "
    "c.started_at, c.answered_at, c.ended_at, c.end_reason, c.notice_prompt, "
    "c.notice_language, c.notice_completed, r.path, r.sha256, r.duration_ms, r.bytes"
)


class ServiceCore:
    """Pool, archive, key and the authorisation every operation starts with."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        archive_root: Path | None,
        secret_key: bytes | None,
        *,
        retention_months: int = 12,
        lockout_failures: int = 5,
        lockout_window: timedelta = timedelta(minutes=15),
        timezone: ZoneInfo | None = None,
    ) -> None:
        if not 1 <= retention_months <= 1200:
            raise ConfigError("retention months must be between 1 and 1200")
        self._pool = pool
        self._root = archive_root
        self._hasher = NumberHasher(secret_key) if secret_key is not None else None
        self.retention_months = retention_months
        self._lockout_failures = lockout_failures
        self._lockout_window = lockout_window
        # the clinic's days: request dates, 'valid through' dates, day searches
        self.timezone = timezone or DEFAULT_ZONE

    @property
    def archive_root(self) -> Path:
        if self._root is None or not self._root.is_dir():
            raise NotConfigured("CALLREC_ARCHIVE_DIR is not set or not a directory")
        return self._root

    @property
    def hasher(self) -> NumberHasher:
        if self._hasher is None:
            raise NotConfigured("CALLREC_SECRET_KEY or CALLREC_SECRET_KEY_FILE is not set")
        return self._hasher

    async def _authorize(
        self, conn: asyncpg.Connection, actor: Actor, op: Operation, target: str = ""
    ) -> frozenset[Role]:
        """The actor's current roles if they permit `op`; else audit the denial and raise."""
        why = ""
        roles: frozenset[Role] = frozenset()
        can_listen = False
        if actor.is_system:
            roles = actor.roles
        else:
            row = await conn.fetchrow(
                "SELECT roles, can_listen, disabled, expires_at, now() AS now FROM users"
                " WHERE id = $1 AND username = $2",
                actor.user_id, actor.username,
            )
            if row is None or row["disabled"]:
                why = "account missing or disabled"
            elif row["expires_at"] is not None and row["expires_at"] <= row["now"]:
                why = "account expired"
            else:
                roles = frozenset(Role(r) for r in row["roles"])
                can_listen = row["can_listen"]
        if not why and permits(roles, can_listen, op):
            return roles
        async with conn.transaction():
            await audit.append(
                conn, actor=actor.username, action="denied", target=target, reason=op.value,
                details={"roles": sorted(r.value for r in roles), "why": why or "role"},
            )
        log.warning("privacy_denied", actor=actor.username, operation=op.value)
        raise Forbidden(f"{actor.username} may not do {op.value}" + (f" ({why})" if why else ""))

    async def _active_user(
        self, conn: asyncpg.Connection, username: str, role: Role | None = None
    ) -> str:
        """A named colleague (identity verifier, approver): an active account, with `role`
        if one is given."""
        name = username_field(username)
        row = await conn.fetchrow(
            "SELECT roles, disabled, expires_at, now() AS now FROM users WHERE username = $1",
            name,
        )
        if (
            row is None or row["disabled"]
            or (role is not None and role.value not in row["roles"])
            or (row["expires_at"] is not None and row["expires_at"] <= row["now"])
        ):
            need = f" with the {role.value} role" if role is not None else ""
            raise Invalid(f"{name} is not an active account{need}")
        return name

    def day_start(self, day: date) -> datetime:
        return day_start(day, self.timezone)

    def day_end(self, day: date) -> datetime:
        """When `day` ends in the clinic: an account valid through it expires then, a search
        through it stops there."""
        return end_of_day(day, self.timezone)

    async def _today(self, conn: asyncpg.Connection) -> date:
        # the database's clock (one clock for every writer), the clinic's calendar
        value: date = await conn.fetchval(
            "SELECT (now() AT TIME ZONE $1)::date", self.timezone.key)
        return value

    async def _awaiting_access(
        self, conn: asyncpg.Connection, calls: Sequence[Mapping[str, Any]]
    ) -> set[UUID]:
        """Which of these calls (rows with id, caller_number) are of a number whose access
        request is still open: the answer must show what was held when it was asked."""
        numbers = {r["number_hmac"] for r in await conn.fetch(
            "SELECT number_hmac FROM privacy_requests WHERE kind = 'access' "
            "AND closed_at IS NULL")}
        if not numbers:
            return set()
        hasher = self._hasher_for_deletion("an access request is open")
        return {c["id"] for c in calls if hasher.of_stored(c["caller_number"]) in numbers}

    def _hasher_for_deletion(self, why: str) -> NumberHasher:
        """The number hasher, where deleting calls must tell a number's calls apart (`why`);
        without the key nothing is deleted (fail safe)."""
        if self._hasher is None:
            raise NotConfigured(f"{why} and CALLREC_SECRET_KEY (or CALLREC_SECRET_KEY_FILE) "
                                "is not set: nothing is deleted until it is")
        return self._hasher

    async def _held(
        self, conn: asyncpg.Connection, calls: Sequence[Mapping[str, Any]]
    ) -> dict[UUID, list[int]]:
        """Which of these calls (rows with id, caller_number) are held, and by which holds."""
        holds = await conn.fetch(
            "SELECT id, call_id, number_hmac FROM legal_holds WHERE released_at IS NULL"
        )
        by_call: dict[UUID, list[int]] = {}
        by_number: dict[str, list[int]] = {}
        for h in holds:
            if h["call_id"] is not None:
                by_call.setdefault(h["call_id"], []).append(h["id"])
            else:
                by_number.setdefault(h["number_hmac"], []).append(h["id"])
        hasher = (self._hasher_for_deletion("a hold on a phone number is in force")
                  if by_number else None)
        held: dict[UUID, list[int]] = {}
        for call in calls:
            ids = list(by_call.get(call["id"], []))
            if hasher is not None:
                ids += by_number.get(hasher.of_stored(call["caller_number"]), [])
            if ids:
                held[call["id"]] = sorted(ids)
        return held
