"""Personal accounts (§10): bootstrap, login with lockout, account administration."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from callrec.privacy import audit, passwords
from callrec.privacy.core import (
    ServiceCore,
    iso,
    text_field,
    username_field,
)
from callrec.privacy.errors import (
    AuthenticationFailed,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
)
from callrec.privacy.roles import Actor, Operation, Role, parse_roles

log = structlog.get_logger(__name__)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BOOTSTRAP_LOCK = 0x75736572  # advisory lock: two bootstraps never both succeed

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


class AccountsMixin(ServiceCore):
    """Accounts: every user has their own name, password (argon2id) and roles."""

    async def has_users(self) -> bool:
        async with self._pool.acquire() as conn:
            return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users)"))

    async def bootstrap_admin(self, username: str, password: str, full_name: str = "") -> UserInfo:
        """Create the first account (an admin); refused once any account exists."""
        name = username_field(username)
        passwords.check_policy(password, name)
        hashed = await asyncio.to_thread(passwords.hash_password, password)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _BOOTSTRAP_LOCK)
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users)"):
                raise Conflict("accounts exist already: log in as an admin to add more")
            row = await conn.fetchrow(
                "INSERT INTO users (username, full_name, password_hash, roles)"
                " VALUES ($1, $2, $3, ARRAY['admin']) RETURNING *",
                name, text_field(full_name or name, "full name", 200), hashed,
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
        # no control characters (a NUL would abort the transaction, and with it the audit
        # entry and the failure's count)
        name = _CONTROL.sub("", username).strip().lower()[:64] or "(empty)"
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
                await conn.execute("DELETE FROM login_failures WHERE username = $1", name)
                if stored is not None and passwords.needs_rehash(stored):
                    await conn.execute(
                        "UPDATE users SET password_hash = $2 WHERE id = $1", row["id"],
                        await asyncio.to_thread(passwords.hash_password, password),
                    )
                await audit.append(conn, actor=name, action="login", target=f"user:{name}")
        if problem or row is None:  # (row is None implies a problem; said for the reader)
            log.warning("login_failed", username=name, reason=problem)
            raise AuthenticationFailed()
        return Actor(
            username=name, roles=frozenset(Role(r) for r in row["roles"]), user_id=row["id"],
            can_listen=row["can_listen"], expires_at=row["expires_at"],
        )

    async def actor_for(self, user_id: int) -> Actor:
        """The actor of an already authenticated session (e.g. the web console's), from the
        account's current state; raises AuthenticationFailed if it is disabled or expired."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT *, now() AS now FROM users WHERE id = $1", user_id
            )
        if (
            row is None or row["disabled"]
            or (row["expires_at"] is not None and row["expires_at"] <= row["now"])
        ):
            raise AuthenticationFailed()
        return Actor(
            username=row["username"], roles=frozenset(Role(r) for r in row["roles"]),
            user_id=row["id"], can_listen=row["can_listen"], expires_at=row["expires_at"],
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
        name = username_field(username)
        role_set = self._roles(roles)
        self._check_expiry(role_set, expires_at)
        passwords.check_policy(password, name)
        # authorised before the hash: argon2's CPU and memory are not for anyone to spend
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.USERS_MANAGE, f"user:{name}")
        hashed = await asyncio.to_thread(passwords.hash_password, password)
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    "INSERT INTO users (username, full_name, password_hash, roles, can_listen,"
                    " expires_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                    name, text_field(full_name or name, "full name", 200), hashed,
                    sorted(r.value for r in role_set), can_listen, expires_at,
                )
            except asyncpg.UniqueViolationError:
                raise Conflict(f"user {name} exists already") from None
            await audit.append(
                conn, actor=actor.username, action="user_change", target=f"user:{name}",
                details={
                    "change": "add", "roles": sorted(r.value for r in role_set),
                    "can_listen": can_listen, "expires_at": iso(expires_at),
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
        name = username_field(username)
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
        name = username_field(username)
        passwords.check_policy(new_password, name)
        # authorised before the hash, as in add_user
        async with self._pool.acquire() as conn:
            if name != actor.username or actor.is_system:
                await self._authorize(conn, actor, Operation.USERS_MANAGE, f"user:{name}")
            else:
                await self._authorize_self(conn, actor)
        hashed = await asyncio.to_thread(passwords.hash_password, new_password)
        async with self._pool.acquire() as conn, conn.transaction():
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
        name = username_field(username)
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
                        "expires_at": iso(new_expiry),
                    },
                )
        return UserInfo.from_row(row)
