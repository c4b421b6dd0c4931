"""An append-only, fsync'd journal of archive writes made while PostgreSQL is away.

Each line is one JSON operation. Operations are idempotent upserts, so replaying a line
that had already reached the database before a crash does no harm.

A write cut short (a crash, a full disk) leaves a torn line. It never swallows the next
operation: an append after a torn tail starts on a new line. A torn line is not lost
either: it is moved to `journal.rejected.jsonl` (as `{"op": "torn", "text": ...}`) for an
operator, with a warning."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from pathlib import Path
from typing import Any

import structlog

from callrec.archive.durable import sync_folder
from callrec.archive.errors import JournalInUse
from callrec.tasks import BlockingRunner

log = structlog.get_logger(__name__)


def split_lines(raw: bytes, *, settled: bool) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The operations and the torn lines in a journal's bytes.

    An unfinished last line (no newline after it) may be a write still under way: it
    counts as torn only if `settled` (no write can be under way), unless it is whole."""
    ops: list[dict[str, Any]] = []
    torn: list[bytes] = []
    lines = raw.split(b"\n")
    final = len(lines) - 1  # b"" when the file ends with a newline, as it should
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        op = _operation(line)
        if op is not None:
            ops.append(op)
        elif i < final or settled:
            torn.append(line)
    return ops, torn


def _operation(line: bytes) -> dict[str, Any] | None:
    try:
        op = json.loads(line)
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError for cut UTF-8
        return None
    return op if isinstance(op, dict) else None


class Journal:
    def __init__(
        self, directory: Path, *, run_blocking: BlockingRunner = asyncio.to_thread
    ) -> None:
        self.path = directory / "journal.jsonl"
        self.rejected_path = self.path.with_name("journal.rejected.jsonl")
        self._run_blocking = run_blocking
        self._lock = asyncio.Lock()
        # Operations waiting, counted from the file once; every write checks it, so it is
        # kept in memory (this process is the journal's only writer).
        self._count: int | None = None
        self._appending: set[asyncio.Future[None]] = set()
        self._claim_fd: int | None = None

    def claim(self) -> None:
        """Take the journal for this process until `release`, or raise `JournalInUse`.

        Its lock against a rewrite under an append is per process: a second service given
        the same folder would drain (rewrite) the file under the first one's appends and
        lose them. The claim is a lock on a file beside it, which the kernel drops when the
        process ends, however it ends: a crash leaves nothing to clean up."""
        if self._claim_fd is not None:
            return
        self._ensure_dir()
        lock_path = self.path.with_name("journal.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise JournalInUse(
                f"the journal in {self.path.parent} is in use by another callrec process "
                f"(pid {holder}): each service needs a journal folder of its own "
                "(CALLREC_JOURNAL_DIR)") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._claim_fd = fd

    def release(self) -> None:
        """Let the journal go (after the last write)."""
        fd, self._claim_fd = self._claim_fd, None
        if fd is not None:
            os.close(fd)

    def _ensure_dir(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def append(self, op: dict[str, Any]) -> None:
        """Append one operation, durably. A caller cancelled meanwhile (a shutdown) does not
        cut it short: its thread cannot be stopped, and the lock must be held until it is
        done, or a rewrite of the file (drop_first) could replace it under the append."""
        task = asyncio.ensure_future(self._append(op))
        self._appending.add(task)
        task.add_done_callback(self._appending.discard)
        await asyncio.shield(task)

    async def _append(self, op: dict[str, Any]) -> None:
        async with self._lock:
            before = self.backlog()
            await self._run_blocking(self._append_sync, _line(op))
            self._count = before + 1

    async def settle(self) -> None:
        """Wait for appends whose callers were cancelled (before the threads close)."""
        if self._appending:
            await asyncio.wait(list(self._appending))

    def _append_sync(self, data: bytes) -> None:
        self._ensure_dir()
        fd, created = _open_appending(self.path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # after a torn tail: its own line, not glued to it
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            # the file's fsync does not cover its name: a power cut could take the new
            # journal, and the writes in it, with it
            sync_folder(self.path.parent)

    async def reject(self, op: dict[str, Any]) -> None:
        """Set aside an operation the database refused (kept for an operator to inspect)."""
        await self._run_blocking(self._reject_sync, [op])

    def _reject_sync(self, ops: list[dict[str, Any]]) -> None:
        self._ensure_dir()
        fd, created = _open_appending(self.rejected_path, os.O_WRONLY)
        try:
            _write_all(fd, b"".join(_line(op) for op in ops))
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            sync_folder(self.rejected_path.parent)

    def read(self) -> list[dict[str, Any]]:
        """All complete operations, in order (torn lines are left out)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return split_lines(raw, settled=False)[0]

    def is_empty(self) -> bool:
        """No byte in the file (cheap: no read)."""
        try:
            return self.path.stat().st_size == 0
        except FileNotFoundError:
            return True

    def backlog(self) -> int:
        if self._count is None:
            self._count = len(self.read())
        return self._count

    def recount(self) -> int:
        """Count the operations in the file again (the kept count went wrong)."""
        self._count = None
        return self.backlog()

    async def recover(self) -> int:
        """Move torn lines a crash left to the rejected file; returns how many."""
        async with self._lock:
            return await self._run_blocking(self._rewrite_sync, 0)

    async def drop_first(self, count: int) -> None:
        """Forget the first `count` operations (they reached the database)."""
        async with self._lock:
            await self._run_blocking(self._rewrite_sync, count)

    def _rewrite_sync(self, count: int) -> int:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._count = 0
            return 0
        # under the lock: no append is under way, so an unfinished last line is torn
        ops, torn = split_lines(raw, settled=True)
        if torn:
            # kept first: a crash between the two writes repeats this, it loses nothing
            self._reject_sync([{"op": "torn", "text": t.decode(errors="replace")}
                               for t in torn])
            log.warning("journal_torn_lines_set_aside", lines=len(torn),
                        kept_in=str(self.rejected_path),
                        cause="a write cut short by a crash or a full disk")
        remaining = ops[count:]
        self._count = len(remaining)
        if not torn and not count:
            return 0
        if not remaining:
            self.path.unlink(missing_ok=True)
            # durable too: after a power cut, a journal back from the dead would write its
            # operations to the database a second time
            sync_folder(self.path.parent)
            return len(torn)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, b"".join(_line(op) for op in remaining))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        sync_folder(self.path.parent)
        return len(torn)


def _open_appending(path: Path, mode: int) -> tuple[int, bool]:
    """(fd open for appending, whether the file was created by this call)."""
    try:
        return os.open(path, mode | os.O_APPEND), False
    except FileNotFoundError:
        pass
    try:
        return os.open(path, mode | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600), True
    except FileExistsError:
        return os.open(path, mode | os.O_APPEND), False


def _line(op: dict[str, Any]) -> bytes:
    # ASCII (non-ASCII escaped): a line always encodes, whatever text a caller ID held
    return json.dumps(op, separators=(",", ":")).encode() + b"\n"


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (a filling disk); the rest is written or raises."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
