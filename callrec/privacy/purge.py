"""Deleting calls crash-safely: queue, remove the file, then remove the rows.

A queued call is hidden from every reader. The file goes before the rows, so a crash at any
moment leaves at worst a queued row whose file is already gone — never an orphan file in the
archive — and the next run (or the daily job) finishes the queue."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import asyncpg
import structlog

from callrec.archive.durable import sync_folder
from callrec.privacy import audit
from callrec.privacy.errors import Unavailable

log = structlog.get_logger(__name__)

Progress = Callable[[int, int], None]


def archive_file(root: Path, relative: str) -> Path:
    """The absolute path of a stored relative path; refuses anything escaping the root."""
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root.resolve()) or os.path.isabs(relative):
        raise Unavailable("a recording path points outside the archive")
    return candidate


async def queued_ids(conn: asyncpg.Connection, call_ids: Sequence[UUID]) -> set[UUID]:
    """Which of these calls are queued for deletion (a fresh look: call after locking)."""
    rows = await conn.fetch(
        "SELECT call_id FROM purge_queue WHERE call_id = ANY($1::uuid[])", list(call_ids)
    )
    return {r["call_id"] for r in rows}


async def enqueue(
    conn: asyncpg.Connection, call_ids: Sequence[UUID], cause: str, case_id: int | None = None
) -> None:
    """Queue calls (their rows must be locked FOR UPDATE by the caller's transaction)."""
    await conn.execute(
        """INSERT INTO purge_queue (call_id, path, cause, case_id)
           SELECT c.id, r.path, $2, $3 FROM calls c LEFT JOIN recordings r ON r.call_id = c.id
           WHERE c.id = ANY($1::uuid[])
           ON CONFLICT (call_id) DO UPDATE
               SET case_id = coalesce(purge_queue.case_id, EXCLUDED.case_id)""",
        list(call_ids), cause, case_id,
    )


def remove_file(root: Path, relative: str) -> Path:
    """Remove one queued recording file (a seam the crash tests interrupt); returns its
    folder, which the caller syncs (`sync_folders`) before the rows go."""
    path = archive_file(root, relative)
    # FileNotFoundError: an earlier, interrupted run already removed it
    path.unlink(missing_ok=True)
    return path.parent


def sync_folders(folders: set[Path]) -> None:
    """Make the removals in these folders durable: once per folder and batch, not per file
    (a batch's calls mostly share a day's folder: one fsync instead of a hundred, which held
    the purge to the disk's pace). Done before the rows are deleted, so a power cut never
    brings back a file whose rows are gone."""
    for folder in sorted(folders):
        sync_folder(folder)


async def delete_rows(conn: asyncpg.Connection, call_ids: Sequence[UUID]) -> int:
    """Delete calls (recordings and queue rows cascade); returns how many went."""
    result = await conn.execute("DELETE FROM calls WHERE id = ANY($1::uuid[])", list(call_ids))
    return int(result.split()[-1])


# A batch: the queue's oldest rows (of one case, or any), less those whose file could not be
# removed, skipping rows another worker holds. In the order of purge_queue_order_idx: without
# it every batch read and sorted the whole queue.
CLAIM_BATCH = """
    SELECT q.call_id, coalesce(r.path, q.path) AS path, q.cause, q.case_id
    FROM purge_queue q LEFT JOIN recordings r ON r.call_id = q.call_id
    WHERE ($1::bigint IS NULL OR q.case_id = $1) AND NOT (q.call_id = ANY($3::uuid[]))
    ORDER BY q.queued_at, q.call_id LIMIT $2 FOR UPDATE OF q SKIP LOCKED"""


@dataclass(frozen=True)
class Finished:
    call_ids: tuple[UUID, ...]
    case_ids: tuple[int, ...]
    # calls whose file could not be removed (the error for each): left queued, hidden from
    # every reader, tried again by the next run; the others are not held up by them
    stuck: tuple[tuple[UUID, str], ...] = ()


async def finish(
    conn: asyncpg.Connection,
    root: Path,
    *,
    actor: str,
    case_id: int | None = None,
    batch_size: int = 100,
    progress: Progress | None = None,
) -> Finished:
    """Work through the queue (or one case's part of it) in batches; audit each batch.

    Runs on the caller's connection, outside any transaction of its own."""
    done: list[UUID] = []
    cases: set[int] = set()
    stuck: dict[UUID, str] = {}
    total = await conn.fetchval(
        "SELECT count(*) FROM purge_queue WHERE $1::bigint IS NULL OR case_id = $1", case_id
    )
    if progress:
        progress(0, total)
    while True:
        # one transaction per batch: claim the rows (skipping any another worker holds),
        # remove the files, delete the rows. A crash before commit leaves the rows queued.
        async with conn.transaction():
            # the recording's path as of now: one archived after the call was queued
            # (Asterisk was away, say) has its file removed too
            batch = await conn.fetch(CLAIM_BATCH, case_id, batch_size, list(stuck))
            if not batch:
                break
            removed = []
            folders: set[Path] = set()
            for row in batch:
                try:
                    if row["path"]:
                        folders.add(remove_file(root, row["path"]))
                except (OSError, Unavailable) as exc:
                    # one file that cannot go (a wrong owner, a read-only disk, a path
                    # outside the archive) must not stop every deletion queued after it
                    why = exc.message if isinstance(exc, Unavailable) else (
                        exc.strerror or str(exc))
                    stuck[row["call_id"]] = why
                    log.error("purge_file_not_removed", call_id=str(row["call_id"]),
                              path=row["path"], error=why)
                    continue
                removed.append(row)
            sync_folders(folders)
            if not removed:
                continue
            batch = removed
            ids = [r["call_id"] for r in batch]
            await delete_rows(conn, ids)
            by_cause: dict[str, list[str]] = {}
            for r in batch:
                by_cause.setdefault(r["cause"], []).append(str(r["call_id"]))
            batch_cases = sorted({r["case_id"] for r in batch if r["case_id"] is not None})
            await audit.append(
                conn, actor=actor, action="purge", target="calls",
                details={"call_ids": by_cause, "cases": batch_cases},
            )
        done.extend(ids)
        cases.update(batch_cases)
        log.info("purge_batch", calls=len(ids), done=len(done), total=total)
        if progress:
            progress(min(len(done), total), max(total, len(done)))
    # every erasing case whose queue is empty, not only this run's: one whose calls another
    # run took (or whose last batch a crash cut off before this step) is closed too
    await close_erasure_cases(conn)
    return Finished(tuple(done), tuple(sorted(cases)), tuple(stuck.items()))


async def close_erasure_cases(conn: asyncpg.Connection) -> None:
    """Give erasure cases their final status once their queue is empty and none of the
    calls they erase is left (one queued under another case first, whose file could not be
    removed yet, say: the later case was closed as erased while the call was still there)."""
    await conn.execute(
        """UPDATE privacy_requests p
           SET status = p.result->>'final_status', closed_at = now()
           WHERE p.status = 'erasing'
             AND NOT EXISTS (SELECT 1 FROM purge_queue q WHERE q.case_id = p.id)
             AND NOT EXISTS (
                 SELECT 1 FROM calls c WHERE c.id::text IN (
                     SELECT jsonb_array_elements_text(p.result->'erased_calls')))"""
    )
