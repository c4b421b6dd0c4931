"""Server-side login sessions in PostgreSQL (table web_sessions, migration 0200).

The browser holds only a random token (cookie `callrec_session`: HttpOnly, SameSite=Strict,
Secure over TLS); the database holds its SHA-256, the CSRF token and the expiry. A session
ends at logout, after `idle` without a request, at its absolute end, or as soon as its account
is disabled or expires. Roles are read from `users` on every request, so the console never
acts on stale roles (and the privacy layer re-checks them again for every operation)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from callrec.privacy.roles import Actor, Role

COOKIE = "callrec_session"
IDLE = timedelta(minutes=30)
ABSOLUTE = timedelta(hours=10)
_TOUCH_EVERY = timedelta(seconds=30)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    token_hash: str
    actor: Actor
    full_name: str
    csrf_token: str
    expires_at: datetime

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf_token.encode())

    def has(self, role: Role) -> bool:
        return role in self.actor.roles


class SessionStore:
    """Create, find, end sessions; listening grants hang off a session."""

    def __init__(
        self, pool: asyncpg.Pool, *, idle: timedelta = IDLE, absolute: timedelta = ABSOLUTE
    ) -> None:
        self._pool = pool
        self.idle = idle
        self.absolute = absolute

    async def create(self, actor: Actor) -> str:
        """A new session for an authenticated actor; returns the token for the cookie."""
        token = secrets.token_urlsafe(32)
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO web_sessions (token_hash, user_id, username, csrf_token, expires_at)"
                " VALUES ($1, $2, $3, $4, now() + $5::interval)",
                token_hash(token), actor.user_id, actor.username, secrets.token_urlsafe(32),
                self.absolute,
            )
        return token

    async def load(self, token: str | None) -> Session | None:
        """The live session of this token, or None (an expired one is removed)."""
        if not token or len(token) > 100:
            return None
        digest = token_hash(token)
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                """SELECT s.*, u.roles, u.can_listen, u.disabled, u.full_name,
                          u.expires_at AS account_expires, u.password_changed_at,
                          now() AS now
                   FROM web_sessions s JOIN users u ON u.id = s.user_id
                   WHERE s.token_hash = $1""",
                digest,
            )
            if row is None:
                return None
            now = row["now"]
            dead = (
                row["expires_at"] <= now
                or row["last_seen"] + self.idle <= now
                or row["disabled"]
                or (row["account_expires"] is not None and row["account_expires"] <= now)
                # a new password ends the sessions opened with the old one (a stolen cookie
                # with them)
                or row["created_at"] < row["password_changed_at"]
            )
            if dead:
                await conn.execute("DELETE FROM web_sessions WHERE token_hash = $1", digest)
                return None
            if now - row["last_seen"] >= _TOUCH_EVERY:
                await conn.execute(
                    "UPDATE web_sessions SET last_seen = now() WHERE token_hash = $1", digest
                )
        actor = Actor(
            username=row["username"], roles=frozenset(Role(r) for r in row["roles"]),
            user_id=row["user_id"], can_listen=row["can_listen"],
            expires_at=row["account_expires"],
        )
        return Session(digest, actor, row["full_name"], row["csrf_token"], row["expires_at"])

    async def end(self, token_hash_: str) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute("DELETE FROM web_sessions WHERE token_hash = $1", token_hash_)

    async def remove_expired(self) -> int:
        async with self._pool.acquire() as conn:
            done: str = await conn.execute(
                "DELETE FROM web_sessions WHERE expires_at <= now()"
                " OR last_seen + $1::interval <= now()",
                self.idle,
            )
        return int(done.split()[-1])

    async def grant(self, session: Session, call_id: UUID, mode: str, purpose: str) -> None:
        """Remember that this session stated `purpose` for listening to a call."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO web_listen_grants (token_hash, call_id, mode, purpose)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (token_hash, call_id, mode)"
                " DO UPDATE SET purpose = EXCLUDED.purpose, granted_at = now()",
                session.token_hash, call_id, mode, purpose,
            )

    async def grants(self, session: Session, call_id: UUID) -> dict[str, str]:
        """mode -> purpose of this session's grants for a call."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT mode, purpose FROM web_listen_grants"
                " WHERE token_hash = $1 AND call_id = $2",
                session.token_hash, call_id,
            )
        return {r["mode"]: r["purpose"] for r in rows}
