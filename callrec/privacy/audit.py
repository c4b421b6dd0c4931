"""The audit log in PostgreSQL: appends under a lock, reads with filters, chain verification.

Every append happens inside the caller's transaction, so an operation and its audit entry
commit together or not at all; callers append last, just before commit, because the chain
lock is held until then."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from callrec.privacy import chain
from callrec.privacy.errors import PrivacyError

_CHAIN_LOCK = 0x61756474  # advisory lock id: one appender at a time extends the chain

ACTIONS = frozenset({
    "search", "listen", "download", "export", "erase", "erase_refused", "purge", "retention",
    "hold", "hold_release", "disclose", "login", "login_failed", "user_change",
    "config_change", "request", "audit_view", "audit_verify", "denied",
})


def _clean(text: str, limit: int = 2000) -> str:
    # PostgreSQL text cannot hold NUL; an audit entry must never fail to be written
    return text.replace("\x00", "\ufffd")[:limit]


async def append(
    conn: asyncpg.Connection,
    *,
    actor: str,
    action: str,
    target: str = "",
    reason: str = "",
    details: Mapping[str, Any] | None = None,
) -> int:
    """Append one entry in the current transaction; returns its seq."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    if not conn.is_in_transaction():
        raise RuntimeError("audit.append needs a transaction")
    clean_details = chain.canonical_details(dict(details or {}))
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _CHAIN_LOCK)
    head = await conn.fetchrow("SELECT seq, hash FROM audit_head")
    if head is None:
        raise PrivacyError("the audit chain head row is missing: the log cannot be extended")
    # microseconds: what timestamptz stores, so the hash survives the round trip
    at = datetime.now(UTC)
    entry = chain.Entry(
        seq=head["seq"] + 1, at=at, actor=_clean(actor, 200), action=action,
        target=_clean(target, 500), reason=_clean(reason), details=clean_details,
        prev_hash=head["hash"],
    )
    digest = chain.entry_hash(entry)
    await conn.execute(
        "INSERT INTO audit_log (seq, at, actor, action, target, reason, details, prev_hash, hash)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9)",
        entry.seq, entry.at, entry.actor, entry.action, entry.target, entry.reason,
        json.dumps(clean_details), entry.prev_hash, digest,
    )
    return entry.seq


def json_value(value: Any) -> Any:
    """A jsonb column as Python data, whether or not the pool has a json codec installed."""
    return json.loads(value) if isinstance(value, str) else value


_json = json_value


def _entry(row: asyncpg.Record) -> chain.Entry:
    return chain.Entry(
        seq=row["seq"], at=row["at"], actor=row["actor"], action=row["action"],
        target=row["target"], reason=row["reason"], details=_json(row["details"]),
        prev_hash=row["prev_hash"], hash=row["hash"],
    )


async def _stream(conn: asyncpg.Connection) -> AsyncIterator[chain.Entry]:
    async for row in conn.cursor("SELECT * FROM audit_log ORDER BY seq", prefetch=1000):
        yield _entry(row)


async def verify(
    conn: asyncpg.Connection, anchors: Mapping[int, str] | None = None
) -> chain.Verdict:
    """Check the whole chain against the head (and any anchors), in one snapshot."""
    walker = chain.Walker(anchors)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        head = await conn.fetchrow("SELECT seq, hash FROM audit_head")
        async for entry in _stream(conn):
            walker.feed(entry)
    if head is None:
        return chain.Verdict(False, walker.count, 0, "", ("the chain head row is missing",))
    return walker.result(head["seq"], head["hash"])


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100


async def show(conn: asyncpg.Connection, flt: AuditFilter) -> list[chain.Entry]:
    """Entries matching every given filter, newest first."""
    if flt.action is not None and flt.action not in ACTIONS:
        raise ValueError(f"unknown audit action {flt.action!r}")
    rows = await conn.fetch(
        """SELECT * FROM audit_log
           WHERE ($1::text IS NULL OR actor = $1)
             AND ($2::text IS NULL OR action = $2)
             AND ($3::text IS NULL OR target = $3)
             AND ($4::timestamptz IS NULL OR at >= $4)
             AND ($5::timestamptz IS NULL OR at < $5)
           ORDER BY seq DESC LIMIT $6""",
        flt.actor, flt.action, flt.target, flt.since, flt.until, max(1, min(flt.limit, 10000)),
    )
    return [_entry(r) for r in rows]
