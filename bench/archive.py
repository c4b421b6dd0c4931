"""The archive at size: millions of synthetic calls loaded with COPY into a throwaway
PostgreSQL cluster, then a caller-number lookup and a day's search through the privacy
service (as a reviewer, audited like in production), and a retention purge of calls with
real files on disk while new calls keep being written through the call store."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import shutil
import tempfile
import time
import uuid
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.stats import summarize
from callrec.archive.files import relative_path
from callrec.archive.migrate import migrate
from callrec.archive.store import CallStore
from callrec.privacy.roles import Actor
from callrec.privacy.service import PrivacyService, run_retention
from devstack.ports import free_block
from devstack.postgres import Postgres

CALL_COLUMNS = ("id", "caller_number", "caller_name", "service_number", "service_name",
                "language", "agent_id", "agent_name", "agent_endpoint", "started_at",
                "notice_started_at", "answered_at", "ended_at", "end_reason", "notice_prompt",
                "notice_language", "notice_completed", "state")
RECORDING_COLUMNS = ("call_id", "path", "sha256", "bytes", "duration_ms", "format")
AGENTS = ("Aino Agentti", "Bertil Agent", "Cecilia Agent", "Dora Agent", "Eino Agentti")
SERVICES = (("0103808000", "Ajanvaraus", "fi"), ("0103808001", "Tidsbokning", "sv"))
DISTINCT_CALLERS = 400_000
BATCH = 50_000


@dataclass(frozen=True)
class ArchiveShape:
    calls: int = 5_000_000
    purge: int = 20_000  # calls past retention, each with a real file on disk
    lookups: int = 300
    day_searches: int = 100
    writer_rate: float = 20.0  # new calls per second written during the purge


def _number(i: int) -> str:
    return f"040{i:07d}"


def _csv_calls(rng: random.Random, start: int, count: int, now: datetime, old: bool
               ) -> tuple[bytes, bytes]:
    """CSV text of `count` calls and their recordings. Old calls ended 13 months ago (past
    retention); the others are spread over the last eleven months."""
    calls: list[str] = []
    recs: list[str] = []
    for i in range(start, start + count):
        cid = uuid.UUID(int=rng.getrandbits(128), version=4)
        if old:
            started = now - timedelta(days=400, seconds=rng.randrange(86400 * 5))
        else:
            started = now - timedelta(seconds=rng.randrange(86400 * 335) + 3600)
        wait = rng.randrange(5, 90)
        talk = rng.randrange(30, 600)
        answered = started + timedelta(seconds=wait)
        ended = answered + timedelta(seconds=talk)
        number, name, lang = SERVICES[i % 2]
        agent = AGENTS[i % len(AGENTS)]
        calls.append(
            f'{cid},{_number(rng.randrange(DISTINCT_CALLERS))},"",{number},{name},{lang},'
            f"agent{i % 5 + 1},{agent},PJSIP/agent{i % 5 + 1},{started.isoformat()},"
            f"{(started + timedelta(seconds=1)).isoformat()},{answered.isoformat()},"
            f"{ended.isoformat()},completed,notice-{lang}-0123456789ab,{lang},t,done\n")
        recs.append(f"{cid},{relative_path(cid, started)},{secrets.token_hex(32)},"
                    f"{talk * 16000 + 44},{talk * 1000},wav\n")
    return "".join(calls).encode(), "".join(recs).encode()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 1 << 20):
        yield data[i:i + (1 << 20)]


async def load(owner_dsn: str, shape: ArchiveShape, say: Callable[[str], None]) -> dict[str, Any]:
    """COPY the synthetic calls in; the secondary indexes are dropped during the load and
    rebuilt from their own definitions afterwards (how one bulk-loads any PostgreSQL table)."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    conn = await asyncpg.connect(owner_dsn)
    try:
        defs = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
            "AND tablename IN ('calls', 'recordings') AND indexname NOT LIKE '%pkey' "
            "AND indexdef NOT LIKE 'CREATE UNIQUE%'")
        for d in defs:
            await conn.execute(f'DROP INDEX "{d["indexname"]}"')
        t0 = time.monotonic()
        done = 0
        plan = [(shape.purge, True)] + [(min(BATCH, shape.calls - shape.purge - s), False)
                                        for s in range(0, shape.calls - shape.purge, BATCH)]
        for count, old in plan:
            calls, recs = await asyncio.to_thread(_csv_calls, rng, done, count, now, old)
            await conn.copy_to_table("calls", source=_chunks(calls), columns=CALL_COLUMNS,
                                     format="csv")
            await conn.copy_to_table("recordings", source=_chunks(recs),
                                     columns=RECORDING_COLUMNS, format="csv")
            done += count
            if done % 1_000_000 < BATCH:
                say(f"  archive: {done:,} calls loaded ({time.monotonic() - t0:.0f} s)")
        copy_s = time.monotonic() - t0
        t1 = time.monotonic()
        for d in defs:
            await conn.execute(d["indexdef"])
        await conn.execute("ANALYZE calls")
        await conn.execute("ANALYZE recordings")
        index_s = time.monotonic() - t1
    finally:
        await conn.close()
    return {"calls": done, "copy_s": round(copy_s, 1), "index_s": round(index_s, 1),
            "rows_per_s": round(done / copy_s)}


def write_purge_files(root: Path, rows: list[asyncpg.Record]) -> None:
    """Real (short) WAV files for the calls retention will delete."""
    audio = b"\x00\x00" * 8000  # one second of silence
    for row in rows:
        path = root / row["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(audio)


async def _searches(service: PrivacyService, actor: Actor, shape: ArchiveShape
                    ) -> tuple[list[float], list[float]]:
    rng = random.Random(11)
    lookups: list[float] = []
    for _ in range(shape.lookups):
        number = _number(rng.randrange(DISTINCT_CALLERS))
        t = time.perf_counter()
        await service.search_calls(actor, number=number, limit=1000)
        lookups.append((time.perf_counter() - t) * 1000)
    days: list[float] = []
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for _ in range(shape.day_searches):
        day = today - timedelta(days=rng.randrange(1, 300))
        t = time.perf_counter()
        await service.search_calls(actor, since=day, until=day + timedelta(days=1), limit=100)
        days.append((time.perf_counter() - t) * 1000)
    return lookups, days


async def _writer(store: CallStore, rate: float, stop: asyncio.Event) -> int:
    """New calls arriving during the purge: a row at start, updates, the end."""
    written = 0
    while not stop.is_set():
        cid = uuid.uuid4()
        now = datetime.now(UTC)
        await store.record_call(cid, caller_number="0509999999", service_number="0103808000",
                                started_at=now, state="ringing")
        await store.record_call(cid, answered_at=now, agent_name="Aino Agentti",
                                state="conversation")
        await store.record_call(cid, ended_at=now, end_reason="completed", state="done")
        written += 1
        await asyncio.sleep(1 / rate)
    return written


def _scratch() -> Path:
    root = Path(tempfile.mkdtemp(prefix="callrec-bench-pg-"))
    root.chmod(0o755)  # the postgres user must reach its cluster below
    (root / "archive").mkdir()
    return root


async def run(shape: ArchiveShape, say: Callable[[str], None]) -> dict[str, Any]:
    root = await asyncio.to_thread(_scratch)
    pg = Postgres(root / "pg", free_block(1, start=40000, end=50000),
                  secrets.token_hex(12), secrets.token_hex(12))
    archive_root = root / "archive"
    try:
        await asyncio.to_thread(pg.start)
        await migrate(pg.url("callrec_owner"))
        loaded = await load(pg.url("callrec_owner"), shape, say)
        say(f"  archive: COPY {loaded['copy_s']} s, indexes {loaded['index_s']} s")
        key = os.urandom(32)
        pool = await asyncpg.create_pool(pg.url("callrec_app"), min_size=1, max_size=4)
        try:
            service = PrivacyService(pool, archive_root, key)
            admin_pw = secrets.token_urlsafe(18)
            await service.bootstrap_admin("benchadmin", admin_pw)
            admin = await service.authenticate("benchadmin", admin_pw)
            reviewer_pw = secrets.token_urlsafe(18)
            await service.add_user(admin, "benchreviewer", reviewer_pw, ["reviewer"])
            reviewer = await service.authenticate("benchreviewer", reviewer_pw)
            lookups, days = await _searches(service, reviewer, shape)
            async with pool.acquire() as conn:
                due = await conn.fetch(
                    "SELECT r.path FROM calls c JOIN recordings r ON r.call_id = c.id "
                    "WHERE c.ended_at < now() - interval '12 months'")
            await asyncio.to_thread(write_purge_files, archive_root, list(due))
            files_before = sum(1 for _ in archive_root.rglob("*.wav"))
            store = CallStore(pg.url("callrec_app"), root / "journal")
            await store.start()
            stop = asyncio.Event()
            writer = asyncio.create_task(_writer(store, shape.writer_rate, stop))
            try:
                t = time.perf_counter()
                report = await run_retention(pool, archive_root, key)
                purge_s = time.perf_counter() - t
            finally:
                stop.set()
                written = await writer
                await store.close()
            files_after = sum(1 for _ in archive_root.rglob("*.wav"))
            async with pool.acquire() as conn:
                remaining = await conn.fetchval("SELECT count(*) FROM calls")
        finally:
            await pool.close()
        purged = len(report.purged)
        return {
            "loaded": loaded,
            "lookup_ms": summarize(lookups).as_dict(),
            "day_search_ms": summarize(days).as_dict(),
            "purge": {"purged": purged, "seconds": round(purge_s, 2),
                      "per_s": round(purged / purge_s, 1) if purge_s > 0 else None,
                      "files_before": files_before, "files_after": files_after,
                      "calls_written_meanwhile": written, "calls_remaining": remaining},
        }
    finally:
        await asyncio.to_thread(pg.destroy)
        shutil.rmtree(root, ignore_errors=True)
