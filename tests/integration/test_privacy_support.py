"""Shared set-up for the privacy integration tests: a real database (the `db` fixture), an
archive on disk with real WAV files, and accounts created through the service itself."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import soundfile

from callrec.privacy.roles import Actor
from callrec.privacy.service import PrivacyService
from tests.dbfixtures import ScratchDatabase

KEY = b"test-secret-key-" + b"0123456789abcdef" * 2
PASSWORD = "correct horse battery staple"
RATE = 8000


def tone(seconds: float, freq: float, rate: int = RATE) -> np.ndarray:
    """A 16-bit sine whose every sample is known."""
    n = round(seconds * rate)
    t = np.arange(n) / rate
    return np.round(np.sin(2 * np.pi * freq * t) * 12000).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), samples, rate, subtype="PCM_16", format="WAV")
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class World:
    db: ScratchDatabase
    root: Path
    pool: asyncpg.Pool
    service: PrivacyService
    admin_actor: Actor | None
    audio: dict[uuid.UUID, np.ndarray] = field(default_factory=dict)

    @property
    def admin(self) -> Actor:
        assert self.admin_actor is not None, "this world has no bootstrap admin"
        return self.admin_actor

    async def user(self, username: str, roles: str, **kw: Any) -> Actor:
        """An account made by the admin, logged in through authenticate()."""
        if "processor" in roles and "expires_at" not in kw:
            kw["expires_at"] = datetime.now(UTC) + timedelta(days=30)
        await self.service.add_user(self.admin, username, PASSWORD, roles, **kw)
        return await self.service.authenticate(username, PASSWORD)

    async def call(
        self,
        number: str = "0401234567",
        *,
        ended_at: datetime | None = None,
        seconds: float = 2.0,
        freq: float = 440.0,
        with_file: bool = True,
        service_number: str = "0103808000",
        agent: str = "Agent Anna",
        call_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """A finished call as the call flow stores it: rows (as the app role) and a WAV."""
        ended = ended_at or datetime.now(UTC) - timedelta(days=1)
        started = ended - timedelta(seconds=seconds + 10)
        call_id = call_id or uuid.uuid4()
        rel = f"{started:%Y/%m/%d}/{call_id}.wav"
        samples = tone(seconds, freq)
        sha = write_wav(self.root / rel, samples)
        self.audio[call_id] = samples
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO calls (id, caller_number, service_number, service_name, agent_name,"
                " started_at, answered_at, ended_at, end_reason, notice_prompt, notice_language,"
                " notice_completed, state) VALUES ($1, $2, $3, 'Ajanvaraus', $4, $5, $6, $7,"
                " 'completed', 'notice-fi-v3', 'fi', true, 'ended')",
                call_id, number, service_number, agent, started, started + timedelta(seconds=9),
                ended,
            )
            await conn.execute(
                "INSERT INTO recordings (call_id, path, sha256, bytes, duration_ms, format)"
                " VALUES ($1, $2, $3, $4, $5, 'wav')",
                call_id, rel, sha, (self.root / rel).stat().st_size, int(seconds * 1000),
            )
        if not with_file:
            (self.root / rel).unlink()
        return call_id

    @asynccontextmanager
    async def unremovable(self, call_id: uuid.UUID) -> AsyncIterator[None]:
        """The call's recording cannot be removed while inside: a directory stands where
        the file was (unlink: EISDIR; as root, what a read-only disk or a wrong owner is
        for the service). Removable again after."""
        async with self.pool.acquire() as conn:
            path = self.root / await conn.fetchval(
                "SELECT path FROM recordings WHERE call_id = $1", call_id)
        path.unlink()
        path.mkdir()
        (path / "x").write_bytes(b"")
        try:
            yield
        finally:
            (path / "x").unlink()
            path.rmdir()

    async def owner(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.db.owner_dsn)

    async def audit(self, action: str | None = None) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return list(await conn.fetch(
                "SELECT * FROM audit_log WHERE $1::text IS NULL OR action = $1 ORDER BY seq",
                action,
            ))

    async def call_ids(self) -> set[uuid.UUID]:
        async with self.pool.acquire() as conn:
            return {r["id"] for r in await conn.fetch("SELECT id FROM calls")}

    def wav_files(self) -> set[Path]:
        return {p.relative_to(self.root) for p in self.root.rglob("*.wav")}

    async def orphans(self) -> tuple[set[Path], set[str]]:
        """(files with no row, row paths with no file): both must stay empty."""
        async with self.pool.acquire() as conn:
            paths = {r["path"] for r in await conn.fetch("SELECT path FROM recordings")}
            queued = {r["path"] for r in await conn.fetch("SELECT path FROM purge_queue")}
        files = {str(p) for p in self.wav_files()}
        return {Path(p) for p in files - paths}, (paths - queued) - files


@asynccontextmanager
async def world(
    db: ScratchDatabase, tmp_path: Path, *, bootstrap: bool = True, **service_kw: Any
) -> AsyncIterator[World]:
    root = tmp_path / "archive"
    root.mkdir()
    pool = await asyncpg.create_pool(db.app_dsn, min_size=1, max_size=8)
    try:
        service = PrivacyService(pool, root, KEY, **service_kw)
        admin = None
        if bootstrap:
            await service.bootstrap_admin("root", PASSWORD, "First Admin")
            admin = await service.authenticate("root", PASSWORD)
        yield World(db, root, pool, service, admin)
    finally:
        await pool.close()


def random_number() -> str:
    return "040" + str(secrets.randbelow(10**7)).zfill(7)
