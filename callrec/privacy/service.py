"""The privacy service layer (§8-§11), shared by the CLI and the web console.

Construct with an asyncpg pool connected as the service's role (callrec_app), the archive
root and the secret key: `PrivacyService(pool, archive_root, secret_key)`; nothing happens
until a method is awaited. Every method takes the acting `Actor`, re-checks its account and
roles in the database, audits a denial and raises `Forbidden` (403)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from callrec.errors import ConfigError
from callrec.privacy import audit, chain, clips, passwords, purge
from callrec.privacy.bundles import BundleWriter, sha256_file
from callrec.privacy.deadlines import due_date, is_overdue, received_date
from callrec.privacy.errors import (
    AuthenticationFailed,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Unavailable,
)
from callrec.privacy.numbers import NumberHasher, canonical_number, number_target, number_variants
from callrec.privacy.roles import Actor, Operation, Role, parse_roles, permits

log = structlog.get_logger(__name__)

USERNAME_PATTERN = r"^[a-z][a-z0-9._-]{1,31}$"
_BOOTSTRAP_LOCK = 0x75736572


def _text(value: str | None, what: str, limit: int = 500) -> str:
    """A required free-text field: trimmed, non-empty, bounded, no control characters."""
    cleaned = (value or "").strip()
    if not cleaned:
        raise Invalid(f"{what} is required")
    if len(cleaned) > limit:
        raise Invalid(f"{what} may have at most {limit} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in cleaned):
        raise Invalid(f"{what} must not contain control characters")
    return cleaned


def _username(value: str) -> str:
    name = value.strip().lower()
    if not re.match(USERNAME_PATTERN, name):
        raise Invalid("a username is 2-32 characters: a-z first, then a-z 0-9 . _ -")
    return name


def _uuid(value: str | UUID) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value.strip())
    except (ValueError, AttributeError):
        raise Invalid(f"not a call id: {str(value)[:40]!r}") from None


def expiry_from_date(day: date) -> datetime:
    """An account 'valid through' a date expires at the end of that day (UTC)."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


@dataclass(frozen=True)
class UserInfo:
    username: str
    full_name: str
    roles: tuple[str, ...]
    can_listen: bool
    expires_at: datetime | None
    disabled: bool
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> UserInfo:
        return cls(
            row["username"], row["full_name"], tuple(sorted(row["roles"])), row["can_listen"],
            row["expires_at"], row["disabled"], row["created_at"],
        )


@dataclass(frozen=True)
class CallSummary:
    call_id: UUID
    caller_number: str
    service_number: str
    agent_name: str | None
    started_at: datetime
    ended_at: datetime | None
    duration_ms: int | None
    has_recording: bool


@dataclass(frozen=True)
class RecordingFile:
    call_id: UUID
    path: Path
    sha256: str
    duration_ms: int
    format: str


@dataclass(frozen=True)
class Hold:
    id: int
    call_id: UUID | None
    by_number: bool
    reason: str
    created_by: str
    created_at: datetime
    released_by: str | None
    released_at: datetime | None
    release_reason: str | None


@dataclass(frozen=True)
class Case:
    id: int
    kind: str
    number_hmac: str
    received_on: date
    due_on: date
    verified_by: str
    verification_method: str
    opened_by: str
    status: str
    closed_at: datetime | None
    refusal_reason: str | None
    result: dict[str, Any]
    overdue: bool


@dataclass(frozen=True)
class ExportResult:
    case_id: int
    out: Path
    calls: int
    files: int
    missing: tuple[str, ...]
    zip_sha256: str


@dataclass(frozen=True)
class RetentionReport:
    dry_run: bool
    months: int
    cutoff: datetime
    purged: tuple[UUID, ...]
    held_skipped: int
    resumed: int  # calls queued by an interrupted earlier run, finished now
    oldest_remaining_ended_at: datetime | None
    audit_seq: int | None = None


@dataclass(frozen=True)
class Disclosure:
    id: int
    call_id: UUID
    out: Path
    from_ms: int
    to_ms: int
    start_sample: int
    end_sample: int
    original_sha256: str
    clip_sha256: str


_CALL_COLUMNS = (
    "c.id, c.caller_number, c.caller_name, c.service_number, c.service_name, c.agent_name, "
    "c.started_at, c.answered_at, c.ended_at, c.end_reason, c.notice_prompt, "
    "c.notice_language, c.notice_completed, r.path, r.sha256, r.duration_ms, r.bytes"
)
_EXPORT_FIELDS = (
    "call_id", "caller_number", "caller_name", "started_at", "answered_at", "ended_at",
    "service_number", "service_name", "agent_name", "notice_version", "notice_language",
    "notice_completed", "recording_file", "recording_status", "recording_sha256", "duration_ms",
)


class PrivacyService:
    """Accounts, audit, holds, requests, retention and disclosures over one asyncpg pool."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        archive_root: Path | None,
        secret_key: bytes | None,
        *,
        retention_months: int = 12,
        lockout_failures: int = 5,
        lockout_window: timedelta = timedelta(minutes=15),
    ) -> None:
        if not 1 <= retention_months <= 1200:
            raise ConfigError("retention months must be between 1 and 1200")
        self._pool = pool
        self._root = archive_root
        self._hasher = NumberHasher(secret_key) if secret_key is not None else None
        self.retention_months = retention_months
        self._lockout_failures = lockout_failures
        self._lockout_window = lockout_window

    # -- plumbing ------------------------------------------------------------------------
    @property
    def archive_root(self) -> Path:
        if self._root is None or not self._root.is_dir():
            raise ConfigError("CALLREC_ARCHIVE_DIR is not set or not a directory")
        return self._root

    @property
    def hasher(self) -> NumberHasher:
        if self._hasher is None:
            raise ConfigError("CALLREC_SECRET_KEY or CALLREC_SECRET_KEY_FILE is not set")
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

    async def _active_user(self, conn: asyncpg.Connection, username: str, role: Role) -> str:
        """A named colleague (verifier, approver) who must hold `role` right now."""
        name = _username(username)
        row = await conn.fetchrow(
            "SELECT roles, disabled, expires_at, now() AS now FROM users WHERE username = $1",
            name,
        )
        if (
            row is None or row["disabled"] or role.value not in row["roles"]
            or (row["expires_at"] is not None and row["expires_at"] <= row["now"])
        ):
            raise Invalid(f"{name} is not an active account with the {role.value} role")
        return name

    async def _today(self, conn: asyncpg.Connection) -> date:
        value: date = await conn.fetchval("SELECT current_date")
        return value

    # -- accounts (§10) ------------------------------------------------------------------
    async def has_users(self) -> bool:
        async with self._pool.acquire() as conn:
            return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users)"))

    async def bootstrap_admin(self, username: str, password: str, full_name: str = "") -> UserInfo:
        """Create the first account (an admin); refused once any account exists."""
        name = _username(username)
        passwords.check_policy(password, name)
        hashed = await asyncio.to_thread(passwords.hash_password, password)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _BOOTSTRAP_LOCK)
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users)"):
                raise Conflict("accounts exist already: log in as an admin to add more")
            row = await conn.fetchrow(
                "INSERT INTO users (username, full_name, password_hash, roles)"
                " VALUES ($1, $2, $3, ARRAY['admin']) RETURNING *",
                name, _text(full_name or name, "full name", 200), hashed,
            )
            await audit.append(
                conn, actor="bootstrap", action="user_change", target=f"user:{name}",
                reason="first admin account", details={"change": "add", "roles": ["admin"]},
            )
        return UserInfo.from_row(row)

    async def authenticate(self, username: str, password: str) -> Actor:
        """The actor for these credentials; every success and failure is audited.

        After `lockout_failures` failures within `lockout_window` the name is locked until
        the oldest failure leaves the window, whatever password is given."""
        name = username.strip().lower()[:64] or "(empty)"
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", name)
            await conn.execute(
                "DELETE FROM login_failures WHERE at < now() - $1::interval",
                self._lockout_window,
            )
            failures = await conn.fetchval(
                "SELECT count(*) FROM login_failures WHERE username = $1", name
            )
            row = await conn.fetchrow(
                "SELECT *, now() AS now FROM users WHERE username = $1", name
            )
            stored = row["password_hash"] if row is not None else None
            ok = await asyncio.to_thread(passwords.verify_password, stored, password)
            problem = ""
            if failures >= self._lockout_failures:
                problem = "locked out"
            elif not ok or row is None:
                problem = "bad credentials"
            elif row["disabled"]:
                problem = "disabled"
            elif row["expires_at"] is not None and row["expires_at"] <= row["now"]:
                problem = "expired"
            if problem:
                if problem != "locked out":
                    await conn.execute(
                        "INSERT INTO login_failures (username) VALUES ($1)", name
                    )
                await audit.append(
                    conn, actor=name, action="login_failed", target=f"user:{name}",
                    reason=problem, details={"recent_failures": failures + 1},
                )
            else:
                assert row is not None and stored is not None
                await conn.execute("DELETE FROM login_failures WHERE username = $1", name)
                if passwords.needs_rehash(stored):
                    await conn.execute(
                        "UPDATE users SET password_hash = $2 WHERE id = $1", row["id"],
                        await asyncio.to_thread(passwords.hash_password, password),
                    )
                await audit.append(conn, actor=name, action="login", target=f"user:{name}")
        if problem:
            log.warning("login_failed", username=name, reason=problem)
            raise AuthenticationFailed()
        assert row is not None
        return Actor(
            username=name, roles=frozenset(Role(r) for r in row["roles"]), user_id=row["id"],
            can_listen=row["can_listen"], expires_at=row["expires_at"],
        )

    async def add_user(
        self,
        actor: Actor,
        username: str,
        password: str,
        roles: Sequence[str] | str,
        *,
        full_name: str = "",
        expires_at: datetime | None = None,
        can_listen: bool = False,
    ) -> UserInfo:
        name = _username(username)
        role_set = self._roles(roles)
        self._check_expiry(role_set, expires_at)
        passwords.check_policy(password, name)
        hashed = await asyncio.to_thread(passwords.hash_password, password)
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.USERS_MANAGE, f"user:{name}")
            async with conn.transaction():
                try:
                    row = await conn.fetchrow(
                        "INSERT INTO users (username, full_name, password_hash, roles, can_listen,"
                        " expires_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                        name, _text(full_name or name, "full name", 200), hashed,
                        sorted(r.value for r in role_set), can_listen, expires_at,
                    )
                except asyncpg.UniqueViolationError:
                    raise Conflict(f"user {name} exists already") from None
                await audit.append(
                    conn, actor=actor.username, action="user_change", target=f"user:{name}",
                    details={
                        "change": "add", "roles": sorted(r.value for r in role_set),
                        "can_listen": can_listen, "expires_at": _iso(expires_at),
                    },
                )
        return UserInfo.from_row(row)

    @staticmethod
    def _roles(roles: Sequence[str] | str) -> frozenset[Role]:
        try:
            return parse_roles(roles if isinstance(roles, str) else list(roles))
        except ValueError as exc:
            raise Invalid(f"roles: {exc}") from None

    @staticmethod
    def _check_expiry(roles: frozenset[Role], expires_at: datetime | None) -> None:
        if Role.PROCESSOR in roles and expires_at is None:
            raise Invalid("a processor account needs an expiry date")
        if expires_at is not None and expires_at <= datetime.now(UTC):
            raise Invalid("the expiry date is in the past")

    async def list_users(self, actor: Actor) -> list[UserInfo]:
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.USERS_LIST, "users")
            rows = await conn.fetch("SELECT * FROM users ORDER BY username")
        return [UserInfo.from_row(r) for r in rows]

    async def set_disabled(self, actor: Actor, username: str, disabled: bool) -> UserInfo:
        name = _username(username)
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.USERS_MANAGE, f"user:{name}")
            if disabled and name == actor.username:
                raise Conflict("you cannot disable your own account")
            async with conn.transaction():
                row = await conn.fetchrow(
                    "UPDATE users SET disabled = $2, updated_at = now() WHERE username = $1"
                    " RETURNING *",
                    name, disabled,
                )
                if row is None:
                    raise NotFound(f"no user {name}")
                await audit.append(
                    conn, actor=actor.username, action="user_change", target=f"user:{name}",
                    details={"change": "disable" if disabled else "enable"},
                )
        return UserInfo.from_row(row)

    async def change_password(self, actor: Actor, username: str, new_password: str) -> None:
        """Anyone may change their own password; an admin may set anyone's."""
        name = _username(username)
        passwords.check_policy(new_password, name)
        hashed = await asyncio.to_thread(passwords.hash_password, new_password)
        async with self._pool.acquire() as conn:
            if name != actor.username or actor.is_system:
                await self._authorize(conn, actor, Operation.USERS_MANAGE, f"user:{name}")
            else:
                await self._authorize_self(conn, actor)
            async with conn.transaction():
                done = await conn.execute(
                    "UPDATE users SET password_hash = $2, password_changed_at = now(),"
                    " updated_at = now() WHERE username = $1",
                    name, hashed,
                )
                if done.endswith(" 0"):
                    raise NotFound(f"no user {name}")
                await audit.append(
                    conn, actor=actor.username, action="user_change", target=f"user:{name}",
                    details={"change": "password"},
                )

    async def _authorize_self(self, conn: asyncpg.Connection, actor: Actor) -> None:
        ok = await conn.fetchval(
            "SELECT NOT disabled AND (expires_at IS NULL OR expires_at > now()) FROM users"
            " WHERE id = $1 AND username = $2",
            actor.user_id, actor.username,
        )
        if not ok:
            async with conn.transaction():
                await audit.append(
                    conn, actor=actor.username, action="denied", target=f"user:{actor.username}",
                    reason="password change", details={"why": "account inactive"},
                )
            raise Forbidden("the account is not active")

    async def set_roles(
        self,
        actor: Actor,
        username: str,
        roles: Sequence[str] | str,
        *,
        expires_at: datetime | None = None,
        can_listen: bool | None = None,
    ) -> UserInfo:
        """Replace an account's roles (and optionally its expiry and listening grant)."""
        name = _username(username)
        role_set = self._roles(roles)
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.USERS_MANAGE, f"user:{name}")
            async with conn.transaction():
                current = await conn.fetchrow(
                    "SELECT * FROM users WHERE username = $1 FOR UPDATE", name
                )
                if current is None:
                    raise NotFound(f"no user {name}")
                new_expiry = expires_at if expires_at is not None else current["expires_at"]
                if expires_at is not None:
                    self._check_expiry(role_set, expires_at)
                elif Role.PROCESSOR in role_set and new_expiry is None:
                    raise Invalid("a processor account needs an expiry date")
                if name == actor.username and Role.ADMIN not in role_set:
                    raise Conflict("you cannot remove your own admin role")
                listen = current["can_listen"] if can_listen is None else can_listen
                row = await conn.fetchrow(
                    "UPDATE users SET roles = $2, expires_at = $3, can_listen = $4,"
                    " updated_at = now() WHERE username = $1 RETURNING *",
                    name, sorted(r.value for r in role_set), new_expiry, listen,
                )
                await audit.append(
                    conn, actor=actor.username, action="user_change", target=f"user:{name}",
                    details={
                        "change": "roles", "from": sorted(current["roles"]),
                        "to": sorted(r.value for r in role_set), "can_listen": listen,
                        "expires_at": _iso(new_expiry),
                    },
                )
        return UserInfo.from_row(row)

    # -- audit log -----------------------------------------------------------------------
    async def audit_show(self, actor: Actor, flt: audit.AuditFilter) -> list[chain.Entry]:
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.AUDIT_SHOW, "audit")
            try:
                entries = await audit.show(conn, flt)
            except ValueError as exc:
                raise Invalid(str(exc)) from None
            async with conn.transaction():
                await audit.append(
                    conn, actor=actor.username, action="audit_view", target="audit",
                    details={
                        "actor": flt.actor, "action": flt.action, "target": flt.target,
                        "since": _iso(flt.since), "until": _iso(flt.until),
                        "results": len(entries),
                    },
                )
        return entries

    async def audit_verify(
        self, actor: Actor, anchors: Mapping[int, str] | None = None
    ) -> chain.Verdict:
        """Verify the chain; `anchors` are (seq -> hash) heads kept outside the database."""
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.AUDIT_VERIFY, "audit")
            verdict = await audit.verify(conn, anchors)
            if verdict.ok:
                # a broken chain cannot be extended (the head no longer matches): log only
                async with conn.transaction():
                    await audit.append(
                        conn, actor=actor.username, action="audit_verify", target="audit",
                        details={"entries": verdict.entries, "head_seq": verdict.head_seq,
                                 "head_hash": verdict.head_hash},
                    )
            else:
                log.error("audit_chain_broken", problems=list(verdict.problems))
        return verdict

    # -- reviewers: search and listen (§5) -----------------------------------------------
    async def search_calls(
        self,
        actor: Actor,
        *,
        number: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[CallSummary]:
        variants: tuple[str, ...] | None = None
        target = "calls"
        if number is not None:
            canonical = canonical_number(number)
            variants = number_variants(canonical)
            target = number_target(self.hasher.digest(canonical))
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.CALL_SEARCH, target)
            async with conn.transaction():
                rows = await conn.fetch(
                    f"""SELECT {_CALL_COLUMNS} FROM calls c
                        LEFT JOIN recordings r ON r.call_id = c.id
                        WHERE ($1::text[] IS NULL OR c.caller_number = ANY($1::text[]))
                          AND ($2::timestamptz IS NULL OR c.started_at >= $2)
                          AND ($3::timestamptz IS NULL OR c.started_at < $3)
                          AND NOT EXISTS (SELECT 1 FROM purge_queue q WHERE q.call_id = c.id)
                        ORDER BY c.started_at DESC LIMIT $4""",  # noqa: S608 (fixed columns)
                    list(variants) if variants else None, since, until,
                    max(1, min(limit, 1000)),
                )
                await audit.append(
                    conn, actor=actor.username, action="search", target=target,
                    details={"since": _iso(since), "until": _iso(until), "results": len(rows)},
                )
        return [
            CallSummary(
                r["id"], r["caller_number"], r["service_number"], r["agent_name"],
                r["started_at"], r["ended_at"], r["duration_ms"], r["path"] is not None,
            )
            for r in rows
        ]

    async def open_recording(
        self, actor: Actor, call_id: str | UUID, *, purpose: str, download: bool = False
    ) -> RecordingFile:
        """Where one call's recording is, for listening or download; audited with purpose."""
        cid = _uuid(call_id)
        why = _text(purpose, "purpose")
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.CALL_LISTEN, f"call:{cid}")
            async with conn.transaction():
                row = await conn.fetchrow(
                    "SELECT r.* FROM recordings r JOIN calls c ON c.id = r.call_id"
                    " WHERE r.call_id = $1 AND NOT EXISTS"
                    " (SELECT 1 FROM purge_queue q WHERE q.call_id = r.call_id)",
                    cid,
                )
                if row is None:
                    raise NotFound(f"no recording for call {cid}")
                path = purge.archive_file(self.archive_root, row["path"])
                if not path.is_file():
                    raise Unavailable(f"the recording file of call {cid} is missing on disk")
                await audit.append(
                    conn, actor=actor.username, action="download" if download else "listen",
                    target=f"call:{cid}", reason=why,
                )
        return RecordingFile(cid, path, row["sha256"], row["duration_ms"], row["format"])

    # -- legal holds ---------------------------------------------------------------------
    async def add_hold(
        self,
        actor: Actor,
        *,
        reason: str,
        call_id: str | UUID | None = None,
        number: str | None = None,
    ) -> Hold:
        """Hold one call, or every call of a number (present and future), until released."""
        if (call_id is None) == (number is None):
            raise Invalid("give exactly one of a call id or a number")
        why = _text(reason, "reason")
        cid = _uuid(call_id) if call_id is not None else None
        digest = self.hasher.digest(canonical_number(number)) if number is not None else None
        target = f"call:{cid}" if cid is not None else number_target(digest or "")
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.HOLD_MANAGE, target)
            async with conn.transaction():
                if cid is not None:
                    if not await conn.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM calls WHERE id = $1 FOR UPDATE)", cid
                    ):
                        raise NotFound(f"no call {cid}")
                    if await purge.queued_ids(conn, [cid]):
                        raise Conflict(f"call {cid} is being deleted")
                else:
                    # lock the number's calls so a purge cannot queue them mid-way
                    await conn.execute(
                        "SELECT 1 FROM calls WHERE caller_number = ANY($1::text[]) FOR UPDATE",
                        list(number_variants(canonical_number(number or ""))),
                    )
                row = await conn.fetchrow(
                    "INSERT INTO legal_holds (call_id, number_hmac, reason, created_by)"
                    " VALUES ($1, $2, $3, $4) RETURNING *",
                    cid, digest, why, actor.username,
                )
                await audit.append(
                    conn, actor=actor.username, action="hold", target=target, reason=why,
                    details={"hold": row["id"]},
                )
        return self._hold(row)

    @staticmethod
    def _hold(row: Mapping[str, Any]) -> Hold:
        return Hold(
            row["id"], row["call_id"], row["number_hmac"] is not None, row["reason"],
            row["created_by"], row["created_at"], row["released_by"], row["released_at"],
            row["release_reason"],
        )

    async def release_hold(self, actor: Actor, hold_id: int, *, reason: str) -> Hold:
        why = _text(reason, "reason")
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.HOLD_MANAGE, f"hold:{hold_id}")
            async with conn.transaction():
                row = await conn.fetchrow(
                    "UPDATE legal_holds SET released_at = now(), released_by = $2,"
                    " release_reason = $3 WHERE id = $1 AND released_at IS NULL RETURNING *",
                    hold_id, actor.username, why,
                )
                if row is None:
                    exists = await conn.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM legal_holds WHERE id = $1)", hold_id
                    )
                    raise Conflict(f"hold {hold_id} is already released") if exists else \
                        NotFound(f"no hold {hold_id}")
                await audit.append(
                    conn, actor=actor.username, action="hold_release", target=f"hold:{hold_id}",
                    reason=why,
                    details={"call": str(row["call_id"]) if row["call_id"] else None},
                )
        return self._hold(row)

    async def list_holds(self, actor: Actor, *, include_released: bool = False) -> list[Hold]:
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.HOLD_LIST, "holds")
            rows = await conn.fetch(
                "SELECT * FROM legal_holds WHERE $1 OR released_at IS NULL ORDER BY id",
                include_released,
            )
        return [self._hold(r) for r in rows]

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
        held: dict[UUID, list[int]] = {}
        for call in calls:
            ids = list(by_call.get(call["id"], []))
            if by_number:
                ids += by_number.get(self.hasher.of_stored(call["caller_number"]), [])
            if ids:
                held[call["id"]] = sorted(ids)
        return held

    # -- requests (§11) ------------------------------------------------------------------
    @staticmethod
    def _case(row: Mapping[str, Any], today: date) -> Case:
        return Case(
            row["id"], row["kind"], row["number_hmac"], row["received_on"], row["due_on"],
            row["verified_by"], row["verification_method"], row["opened_by"], row["status"],
            row["closed_at"], row["refusal_reason"], json.loads(row["result"]),
            row["closed_at"] is None and is_overdue(row["due_on"], today),
        )

    async def open_access_request(
        self,
        actor: Actor,
        *,
        number: str,
        verified_by: str,
        method: str,
        received: str | None = None,
    ) -> Case:
        canonical = canonical_number(number)
        digest = self.hasher.digest(canonical)
        how = _text(method, "verification method")
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.REQUEST_OPEN, number_target(digest))
            verifier = await self._active_user(conn, verified_by, Role.PRIVACY)
            today = await self._today(conn)
            got = received_date(received, today)
            async with conn.transaction():
                row = await conn.fetchrow(
                    "INSERT INTO privacy_requests (kind, number_hmac, number, received_on, due_on,"
                    " verified_by, verification_method, opened_by, status)"
                    " VALUES ('access', $1, $2, $3, $4, $5, $6, $7, 'open') RETURNING *",
                    digest, canonical, got, due_date(got), verifier, how, actor.username,
                )
                await audit.append(
                    conn, actor=actor.username, action="request", target=number_target(digest),
                    reason="access request",
                    details={"case": row["id"], "verified_by": verifier, "method": how,
                             "received": got.isoformat(), "due": row["due_on"].isoformat()},
                )
        return self._case(row, today)

    async def list_requests(self, actor: Actor, *, include_closed: bool = False) -> list[Case]:
        """Open cases, overdue first then by due date; closed ones after if asked."""
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.REQUEST_LIST, "requests")
            today = await self._today(conn)
            rows = await conn.fetch(
                """SELECT * FROM privacy_requests WHERE $1 OR closed_at IS NULL
                   ORDER BY closed_at IS NOT NULL, due_on, id""",
                include_closed,
            )
        return [self._case(r, today) for r in rows]

    async def export_access(self, actor: Actor, case_id: int, out: Path) -> ExportResult:
        """Write every call of the case's number (recordings, JSON+CSV metadata, manifest)
        to `out` atomically; the case is answered and the clear number dropped from it."""
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.REQUEST_EXPORT, f"case:{case_id}")
            async with conn.transaction():
                case = await conn.fetchrow(
                    "SELECT * FROM privacy_requests WHERE id = $1 FOR UPDATE", case_id
                )
                if case is None or case["kind"] != "access":
                    raise NotFound(f"no access request {case_id}")
                if case["status"] != "open":
                    raise Conflict(f"access request {case_id} is {case['status']} already")
                if case["number"] is None:
                    raise Conflict(f"the number of access request {case_id} has been erased")
                # FOR SHARE: a purge or erasure cannot queue these calls until we commit
                rows = await conn.fetch(
                    f"""SELECT {_CALL_COLUMNS} FROM calls c
                        LEFT JOIN recordings r ON r.call_id = c.id
                        WHERE c.caller_number = ANY($1::text[])
                        ORDER BY c.started_at, c.id FOR SHARE OF c""",  # noqa: S608
                    list(number_variants(case["number"])),
                )
                leaving = await purge.queued_ids(conn, [r["id"] for r in rows])
                rows = [r for r in rows if r["id"] not in leaving]
                result = await asyncio.to_thread(
                    self._write_export, out, case_id, case["number_hmac"], actor.username, rows
                )
                await conn.execute(
                    "UPDATE privacy_requests SET status = 'answered', closed_at = now(),"
                    " number = NULL, result = $2::jsonb WHERE id = $1",
                    case_id,
                    json.dumps({"calls": result.calls, "files": result.files,
                                "missing": list(result.missing), "zip_sha256": result.zip_sha256}),
                )
                await audit.append(
                    conn, actor=actor.username, action="export", target=f"case:{case_id}",
                    reason="access request",
                    details={"number": number_target(case["number_hmac"]),
                             "calls": [str(r["id"]) for r in rows],
                             "missing": list(result.missing), "zip_sha256": result.zip_sha256},
                )
        log.info("access_export", case=case_id, calls=result.calls, missing=len(result.missing))
        return result

    def _write_export(
        self, out: Path, case_id: int, number_hmac: str, actor: str,
        rows: Sequence[Mapping[str, Any]],
    ) -> ExportResult:
        root = self.archive_root
        records: list[dict[str, Any]] = []
        missing: list[str] = []
        with BundleWriter(out) as bundle:
            for r in rows:
                status, name = "none", None
                if r["path"] is not None:
                    try:
                        source = purge.archive_file(root, r["path"])
                        name = f"recordings/{r['id']}.wav"
                        bundle.add_file(name, source, call_id=str(r["id"]),
                                        archived_sha256=r["sha256"])
                        status = "included"
                    except (OSError, Unavailable):
                        status, name = "missing", None
                        missing.append(str(r["id"]))
                records.append({
                    "call_id": str(r["id"]), "caller_number": r["caller_number"],
                    "caller_name": r["caller_name"], "started_at": _iso(r["started_at"]),
                    "answered_at": _iso(r["answered_at"]), "ended_at": _iso(r["ended_at"]),
                    "service_number": r["service_number"], "service_name": r["service_name"],
                    "agent_name": r["agent_name"], "notice_version": r["notice_prompt"],
                    "notice_language": r["notice_language"],
                    "notice_completed": r["notice_completed"], "recording_file": name,
                    "recording_status": status, "recording_sha256": r["sha256"],
                    "duration_ms": r["duration_ms"],
                })
            bundle.add_bytes(
                "metadata.json",
                json.dumps({"calls": records}, indent=2, ensure_ascii=False).encode(),
            )
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=_EXPORT_FIELDS, lineterminator="\r\n")
            writer.writeheader()
            for rec in records:
                # a leading =,+,-,@ would run as a formula in a spreadsheet
                writer.writerow({
                    k: ("'" + v if isinstance(v, str) and v[:1] in "=+-@" and k != "caller_number"
                        else v)
                    for k, v in rec.items()
                })
            bundle.add_bytes("metadata.csv", text.getvalue().encode("utf-8"))
            bundle.add_manifest({
                "kind": "access-export", "case": case_id,
                "generated_at": _iso(datetime.now(UTC)), "generated_by": actor,
                "calls": len(records), "files": bundle.files, "missing_recordings": missing,
                "number_hmac": number_hmac,
            })
            files = sum(1 for rec in records if rec["recording_status"] == "included")
            bundle.commit()
        return ExportResult(case_id, out, len(records), files, tuple(missing), sha256_file(out))

    async def erase_number(
        self,
        actor: Actor,
        *,
        number: str,
        verified_by: str,
        method: str,
        received: str | None = None,
        refuse_ground: str | None = None,
    ) -> Case:
        """Open and carry out an erasure request: every call of the number is deleted
        (files first) unless held; held calls, or a recorded legal ground, refuse it."""
        canonical = canonical_number(number)
        digest = self.hasher.digest(canonical)
        target = number_target(digest)
        how = _text(method, "verification method")
        ground = _text(refuse_ground, "refusal ground") if refuse_ground is not None else None
        root = self.archive_root
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.REQUEST_ERASE, target)
            verifier = await self._active_user(conn, verified_by, Role.PRIVACY)
            today = await self._today(conn)
            got = received_date(received, today)
            async with conn.transaction():
                calls = await conn.fetch(
                    "SELECT id, caller_number FROM calls WHERE caller_number = ANY($1::text[])"
                    " ORDER BY started_at FOR UPDATE",
                    list(number_variants(canonical)),
                )
                held = await self._held(conn, calls)
                erasable = [c["id"] for c in calls if c["id"] not in held]
                if ground is not None:
                    final, refusal, erasable = "refused", ground, []
                elif held:
                    hold_ids = sorted({h for ids in held.values() for h in ids})
                    reasons = await conn.fetch(
                        "SELECT id, reason FROM legal_holds WHERE id = ANY($1::bigint[])"
                        " ORDER BY id", hold_ids,
                    )
                    refusal = "legal hold: " + "; ".join(
                        f"#{h['id']} {h['reason']}" for h in reasons
                    )
                    final = "partially_refused" if erasable else "refused"
                else:
                    final, refusal = "erased", None
                status = "erasing" if erasable else final
                result = {
                    "final_status": final, "erased_calls": [str(i) for i in erasable],
                    "held_calls": [str(i) for i in held], "matched_calls": len(calls),
                }
                case = await conn.fetchrow(
                    "INSERT INTO privacy_requests (kind, number_hmac, received_on, due_on,"
                    " verified_by, verification_method, opened_by, status, refusal_reason,"
                    " result, closed_at) VALUES ('erasure', $1, $2, $3, $4, $5, $6, $7, $8,"
                    " $9::jsonb, CASE WHEN $7 = 'erasing' THEN NULL ELSE now() END) RETURNING *",
                    digest, got, due_date(got), verifier, how, actor.username, status, refusal,
                    json.dumps(result),
                )
                if erasable:
                    await purge.enqueue(conn, erasable, "erasure", case["id"])
                    # no open access case may keep the number in clear after erasure
                    await conn.execute(
                        "UPDATE privacy_requests SET number = NULL WHERE number_hmac = $1",
                        digest,
                    )
                await audit.append(
                    conn, actor=actor.username,
                    action="erase" if final == "erased" else "erase_refused",
                    target=target, reason=refusal or "erasure request",
                    details={"case": case["id"], "verified_by": verifier, "method": how,
                             "erase": result["erased_calls"], "held": result["held_calls"],
                             "final_status": final},
                )
        if erasable:
            await purge.finish(self._pool, root, actor=actor.username, case_id=case["id"])
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM privacy_requests WHERE id = $1", case["id"])
        log.info("erasure", case=case["id"], status=row["status"], erased=len(erasable))
        return self._case(row, today)

    # -- retention (§9) ------------------------------------------------------------------
    async def run_retention(
        self,
        actor: Actor,
        *,
        dry_run: bool = False,
        now: datetime | None = None,
        progress: purge.Progress | None = None,
        batch_size: int = 100,
    ) -> RetentionReport:
        """Delete calls that ended more than `retention_months` calendar months before `now`
        (held calls are skipped and counted), finishing anything an interrupted run queued,
        then write a receipt to the audit log."""
        op = Operation.RETENTION_PREVIEW if dry_run else Operation.RETENTION_RUN
        months = self.retention_months
        root = self.archive_root
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, op, "retention")
            # one run at a time; the lock is the session's, released when we are done
            if not dry_run and not await conn.fetchval(
                "SELECT pg_try_advisory_lock($1)", _RETENTION_LOCK
            ):
                raise Conflict("a retention run is already in progress")
            try:
                return await self._retention(conn, actor, months, root, dry_run, now, progress,
                                             batch_size)
            finally:
                if not dry_run:
                    await conn.execute("SELECT pg_advisory_unlock($1)", _RETENTION_LOCK)

    async def _retention(
        self, conn: asyncpg.Connection, actor: Actor, months: int, root: Path, dry_run: bool,
        now: datetime | None, progress: purge.Progress | None, batch_size: int,
    ) -> RetentionReport:
        async with conn.transaction():
            cutoff: datetime = await conn.fetchval(
                "SELECT coalesce($1::timestamptz, now()) - make_interval(months => $2)",
                now, months,
            )
            resumed = await conn.fetchval("SELECT count(*) FROM purge_queue")
            lock = "" if dry_run else "FOR UPDATE OF c"
            calls = await conn.fetch(
                f"""SELECT c.id, c.caller_number FROM calls c
                    WHERE c.ended_at < $1
                      AND NOT EXISTS (SELECT 1 FROM purge_queue q WHERE q.call_id = c.id)
                    ORDER BY c.ended_at, c.id {lock}""",  # noqa: S608 (fixed clause)
                cutoff,
            )
            held = await self._held(conn, calls)
            due = [c["id"] for c in calls if c["id"] not in held]
            if dry_run:
                oldest = await self._oldest_remaining(conn, exclude=due)
                await audit.append(
                    conn, actor=actor.username, action="retention", target="retention",
                    details={"dry_run": True, "months": months, "cutoff": _iso(cutoff),
                             "would_purge": len(due), "held_skipped": len(held),
                             "queued_from_earlier_run": resumed},
                )
                return RetentionReport(True, months, cutoff, tuple(due), len(held), resumed,
                                       oldest)
            await purge.enqueue(conn, due, "retention")
        finished = await purge.finish(
            self._pool, root, actor=actor.username, batch_size=batch_size, progress=progress
        )
        async with conn.transaction():
            oldest = await self._oldest_remaining(conn)
            seq = await audit.append(
                conn, actor=actor.username, action="retention", target="retention",
                details={
                    "dry_run": False, "months": months, "cutoff": _iso(cutoff),
                    "count": len(finished.call_ids),
                    "call_ids": [str(i) for i in finished.call_ids],
                    "held_skipped": len(held), "held_call_ids": [str(i) for i in held],
                    "resumed_from_earlier_run": resumed,
                    "oldest_remaining_ended_at": _iso(oldest),
                },
            )
        log.info("retention_run", purged=len(finished.call_ids), held_skipped=len(held),
                 resumed=resumed, cutoff=_iso(cutoff))
        return RetentionReport(False, months, cutoff, finished.call_ids, len(held), resumed,
                               oldest, seq)

    @staticmethod
    async def _oldest_remaining(
        conn: asyncpg.Connection, exclude: Sequence[UUID] = ()
    ) -> datetime | None:
        value: datetime | None = await conn.fetchval(
            "SELECT min(ended_at) FROM calls c WHERE NOT (c.id = ANY($1::uuid[]))"
            " AND NOT EXISTS (SELECT 1 FROM purge_queue q WHERE q.call_id = c.id)",
            list(exclude),
        )
        return value

    # -- disclosure (§8) -----------------------------------------------------------------
    async def disclose(
        self,
        actor: Actor,
        *,
        call_id: str | UUID,
        from_offset: str,
        to_offset: str,
        recipient: str,
        legal_basis: str,
        approved_by: str,
        out: Path,
    ) -> Disclosure:
        """Cut [from, to) of one recording into a zip with a manifest; register and audit."""
        cid = _uuid(call_id)
        from_ms, to_ms = clips.parse_offset(from_offset), clips.parse_offset(to_offset)
        to_whom = _text(recipient, "recipient")
        basis = _text(legal_basis, "legal basis", 1000)
        root = self.archive_root
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.DISCLOSE, f"call:{cid}")
            approver = await self._active_user(conn, approved_by, Role.PRIVACY)
            async with conn.transaction():
                call = await conn.fetchrow(
                    f"SELECT {_CALL_COLUMNS} FROM calls c LEFT JOIN recordings r"  # noqa: S608
                    " ON r.call_id = c.id WHERE c.id = $1 FOR SHARE OF c",
                    cid,
                )
                if call is None or await purge.queued_ids(conn, [cid]):
                    raise NotFound(f"no call {cid}")
                if call["path"] is None:
                    raise NotFound(f"call {cid} has no recording")
                source = purge.archive_file(root, call["path"])
                if not source.is_file():
                    raise Unavailable(f"the recording file of call {cid} is missing on disk")
                info = await asyncio.to_thread(clips.probe, source)
                rng = clips.clip_range(from_ms, to_ms, info.sample_rate, info.frames)
                with tempfile.TemporaryDirectory(prefix="callrec-clip-") as tmp:
                    clip_path = Path(tmp) / "clip.wav"
                    original_sha, clip_sha = await asyncio.to_thread(
                        self._cut, source, clip_path, rng
                    )
                    register = await conn.fetchrow(
                        "INSERT INTO disclosures (call_id, from_ms, to_ms, start_sample,"
                        " end_sample, sample_rate, recipient, legal_basis, approved_by,"
                        " created_by, original_sha256, clip_sha256) VALUES ($1, $2, $3, $4, $5,"
                        " $6, $7, $8, $9, $10, $11, $12) RETURNING id, created_at",
                        cid, rng.from_ms, rng.to_ms, rng.start_sample, rng.end_sample,
                        rng.sample_rate, to_whom, basis, approver, actor.username, original_sha,
                        clip_sha,
                    )
                    manifest = {
                        "kind": "disclosure", "disclosure": register["id"],
                        "created_at": _iso(register["created_at"]), "created_by": actor.username,
                        "approved_by": approver, "recipient": to_whom, "legal_basis": basis,
                        "call": {"call_id": str(cid), "started_at": _iso(call["started_at"]),
                                 "ended_at": _iso(call["ended_at"]),
                                 "service_number": call["service_number"]},
                        "original": {"sha256": original_sha, "archived_sha256": call["sha256"],
                                     "sample_rate": info.sample_rate, "frames": info.frames,
                                     "duration_ms": info.frames * 1000 // info.sample_rate},
                        "clip": {"file": "clip.wav", "sha256": clip_sha, "from_ms": rng.from_ms,
                                 "to_ms": rng.to_ms, "from": clips.format_offset(rng.from_ms),
                                 "to": clips.format_offset(rng.to_ms),
                                 "start_sample": rng.start_sample, "end_sample": rng.end_sample,
                                 "duration_ms": rng.duration_ms},
                    }
                    await audit.append(
                        conn, actor=actor.username, action="disclose", target=f"call:{cid}",
                        reason=basis,
                        details={"disclosure": register["id"], "recipient": to_whom,
                                 "approved_by": approver, "from_ms": rng.from_ms,
                                 "to_ms": rng.to_ms, "original_sha256": original_sha,
                                 "clip_sha256": clip_sha},
                    )
                    # the zip appears only once everything above succeeded; the register row
                    # and audit entry commit right after it
                    await asyncio.to_thread(self._bundle_disclosure, out, clip_path, manifest)
        log.info("disclosure", call=str(cid), disclosure=register["id"])
        return Disclosure(register["id"], cid, out, rng.from_ms, rng.to_ms, rng.start_sample,
                          rng.end_sample, original_sha, clip_sha)

    @staticmethod
    def _cut(source: Path, clip_path: Path, rng: clips.ClipRange) -> tuple[str, str]:
        original_sha = sha256_file(source)
        clips.cut_clip(source, clip_path, rng)
        return original_sha, sha256_file(clip_path)

    @staticmethod
    def _bundle_disclosure(out: Path, clip_path: Path, manifest: dict[str, Any]) -> None:
        with BundleWriter(out) as bundle:
            bundle.add_file("clip.wav", clip_path)
            bundle.add_manifest({**manifest, "files": bundle.files})
            bundle.commit()


_RETENTION_LOCK = 0x72657465


def report_dict(report: RetentionReport) -> dict[str, Any]:
    data = asdict(report)
    data["purged"] = [str(i) for i in report.purged]
    data["cutoff"] = _iso(report.cutoff)
    data["oldest_remaining_ended_at"] = _iso(report.oldest_remaining_ended_at)
    return data


async def run_retention(
    pool: asyncpg.Pool,
    archive_root: Path,
    secret_key: bytes | None,
    *,
    months: int = 12,
) -> RetentionReport:
    """The daily job: one retention run as the service itself (actor `system:retention`)."""
    service = PrivacyService(pool, archive_root, secret_key, retention_months=months)
    return await service.run_retention(Actor.system("retention"))
