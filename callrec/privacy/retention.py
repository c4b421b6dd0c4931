"""Retention (§9): calls are deleted 12 calendar months after they ended."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from callrec.privacy import audit, purge
from callrec.privacy.core import (
    ServiceCore,
    iso,
)
from callrec.privacy.errors import (
    Conflict,
)
from callrec.privacy.roles import Actor, Operation

log = structlog.get_logger(__name__)


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
    not_removed: int = 0  # queued calls whose file could not be removed: tried again later
    # calls of numbers whose access request is open: kept until it is answered
    awaiting_access: int = 0


_RETENTION_LOCK = 0x72657465


class RetentionMixin(ServiceCore):
    """Crash-safe retention runs with a receipt in the audit log."""

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
            # in id order, as everywhere (README "Lock order"): by end time it crossed an
            # export's or an erasure's order on calls of one number that overlapped
            calls = await conn.fetch(
                f"""SELECT c.id, c.caller_number FROM calls c
                    WHERE c.ended_at < $1
                      AND NOT EXISTS (SELECT 1 FROM purge_queue q WHERE q.call_id = c.id)
                    ORDER BY c.id {lock}""",  # noqa: S608 (fixed clause)
                cutoff,
            )
            held = await self._held(conn, calls)
            # An access request is answered with what was held when it was made: the
            # requester's calls wait for the answer (deleted by the first run after it).
            awaiting = await self._awaiting_access(
                conn, [c for c in calls if c["id"] not in held])
            due = [c["id"] for c in calls if c["id"] not in held and c["id"] not in awaiting]
            if dry_run:
                oldest = await self._oldest_remaining(conn, exclude=due)
                await audit.append(
                    conn, actor=actor.username, action="retention", target="retention",
                    details={"dry_run": True, "months": months, "cutoff": iso(cutoff),
                             "would_purge": len(due), "held_skipped": len(held),
                             "awaiting_access_skipped": len(awaiting),
                             "queued_from_earlier_run": resumed},
                )
                return RetentionReport(True, months, cutoff, tuple(due), len(held), resumed,
                                       oldest, awaiting_access=len(awaiting))
            await purge.enqueue(conn, due, "retention")
        finished = await purge.finish(
            conn, root, actor=actor.username, batch_size=batch_size, progress=progress
        )
        async with conn.transaction():
            oldest = await self._oldest_remaining(conn)
            seq = await audit.append(
                conn, actor=actor.username, action="retention", target="retention",
                details={
                    "dry_run": False, "months": months, "cutoff": iso(cutoff),
                    "count": len(finished.call_ids),
                    "call_ids": [str(i) for i in finished.call_ids],
                    "held_skipped": len(held), "held_call_ids": [str(i) for i in held],
                    "awaiting_access_skipped": len(awaiting),
                    "awaiting_access_call_ids": sorted(str(i) for i in awaiting),
                    "resumed_from_earlier_run": resumed,
                    "oldest_remaining_ended_at": iso(oldest),
                    "not_removed": [{"call_id": str(i), "error": why}
                                    for i, why in finished.stuck],
                },
            )
        log.info("retention_run", purged=len(finished.call_ids), held_skipped=len(held),
                 awaiting_access=len(awaiting), resumed=resumed, cutoff=iso(cutoff),
                 not_removed=len(finished.stuck))
        return RetentionReport(False, months, cutoff, finished.call_ids, len(held), resumed,
                               oldest, seq, not_removed=len(finished.stuck),
                               awaiting_access=len(awaiting))

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


def report_dict(report: RetentionReport) -> dict[str, Any]:
    data = asdict(report)
    data["purged"] = [str(i) for i in report.purged]
    data["cutoff"] = iso(report.cutoff)
    data["oldest_remaining_ended_at"] = iso(report.oldest_remaining_ended_at)
    return data
