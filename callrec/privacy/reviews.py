"""Reviewers' access to calls (§5): search and listen, each audited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from uuid import UUID

from callrec.privacy import audit, purge
from callrec.privacy.core import (
    CALL_COLUMNS,
    ServiceCore,
    iso,
    parse_call_id,
    text_field,
)
from callrec.privacy.errors import (
    NotFound,
    Unavailable,
)
from callrec.privacy.numbers import canonical_number, number_target, number_variants
from callrec.privacy.roles import Actor, Operation


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


class ReviewsMixin(ServiceCore):
    """Search calls and open recordings for quality review and training."""

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
                    f"""SELECT {CALL_COLUMNS} FROM calls c
                        LEFT JOIN recordings r ON r.call_id = c.id
                        WHERE ($1::text[] IS NULL
                               OR caller_number_key(c.caller_number) = ANY($1::text[]))
                          AND ($2::timestamptz IS NULL OR c.started_at >= $2)
                          AND ($3::timestamptz IS NULL OR c.started_at < $3)
                          AND NOT EXISTS (SELECT 1 FROM purge_queue q WHERE q.call_id = c.id)
                        ORDER BY c.started_at DESC LIMIT $4""",  # noqa: S608 (fixed columns)
                    list(variants) if variants else None, since, until,
                    max(1, min(limit, 1000)),
                )
                await audit.append(
                    conn, actor=actor.username, action="search", target=target,
                    # which calls were shown: who saw a person's call can be told later
                    details={"since": iso(since), "until": iso(until), "results": len(rows),
                             "calls": [str(r["id"]) for r in rows]},
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
        cid = parse_call_id(call_id)
        why = text_field(purpose, "purpose")
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
