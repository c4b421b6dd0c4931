"""An append-only, fsync'd journal of archive writes made while PostgreSQL is away.

Each line is one JSON operation. Operations are idempotent upserts, so replaying a line
that had already reached the database before a crash does no harm."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from callrec.tasks import BlockingRunner


class Journal:
    def __init__(
        self, directory: Path, *, run_blocking: BlockingRunner = asyncio.to_thread
    ) -> None:
        self.path = directory / "journal.jsonl"
        self._run_blocking = run_blocking
        self._lock = asyncio.Lock()
        # Lines waiting, counted from the file once; every write checks it, so it is kept
        # in memory (this process is the journal's only writer).
        self._count: int | None = None

    def _ensure_dir(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def append(self, op: dict[str, Any]) -> None:
        line = json.dumps(op, separators=(",", ":"), ensure_ascii=False) + "\n"
        async with self._lock:
            before = self.backlog()
            await self._run_blocking(self._append_sync, line.encode())
            self._count = before + 1

    def _append_sync(self, data: bytes) -> None:
        self._ensure_dir()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def reject(self, op: dict[str, Any]) -> None:
        """Set aside an operation the database refused (kept for an operator to inspect)."""
        line = json.dumps(op, separators=(",", ":"), ensure_ascii=False) + "\n"
        rejected = self.path.with_name("journal.rejected.jsonl")

        def write() -> None:
            fd = os.open(rejected, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)

        await self._run_blocking(write)

    def read(self) -> list[dict[str, Any]]:
        """All complete operations; a torn last line (crash mid-write) is skipped."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        ops = []
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                ops.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # only a torn final write can look like this
        return ops

    def backlog(self) -> int:
        if self._count is None:
            try:
                with open(self.path, "rb") as f:
                    self._count = sum(1 for line in f if line.strip())
            except FileNotFoundError:
                self._count = 0
        return self._count

    async def drop_first(self, count: int) -> None:
        """Forget the first `count` operations (they reached the database)."""
        async with self._lock:
            await self._run_blocking(self._drop_sync, count)

    def _drop_sync(self, count: int) -> None:
        remaining = self.read()[count:]
        self._count = len(remaining)
        if not remaining:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            data = "".join(json.dumps(op, separators=(",", ":"), ensure_ascii=False) + "\n"
                           for op in remaining)
            os.write(fd, data.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
