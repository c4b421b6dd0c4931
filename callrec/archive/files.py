"""Recording files in the archive: fetched from Asterisk over ARI (no shared filesystem),
written atomically under a date layout, named after the call's id only."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import hashlib
import os
import uuid
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from callrec.archive.errors import ArchiveDiskFull, CorruptRecording
from callrec.archive.store import CallStore
from callrec.ari.errors import AriNotFound

log = structlog.get_logger(__name__)

FILE_MODE = 0o640
DIR_MODE = 0o750


class RecordingSource(Protocol):
    """What the archiver needs of the ARI client."""

    async def download_recording(self, name: str, dest: Path) -> int: ...
    async def delete_stored_recording(self, name: str) -> None: ...


@dataclass(frozen=True)
class ArchivedRecording:
    path: str  # relative to the archive root
    sha256: str
    bytes: int
    duration_ms: int
    format: str = "wav"


def relative_path(call_id: uuid.UUID, started_at: dt.datetime) -> Path:
    """`YYYY/MM/DD/<call id>.wav` (UTC date of the call's start): no caller text in it."""
    day = started_at.astimezone(dt.UTC)
    return Path(f"{day:%Y}", f"{day:%m}", f"{day:%d}", f"{call_id}.wav")


def inspect_wav(path: Path) -> tuple[str, int, int]:
    """SHA-256, size and duration (ms) of a WAV file; CorruptRecording if unreadable."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    try:
        with wave.open(str(path), "rb") as w:
            frames, rate = w.getnframes(), w.getframerate()
    except (wave.Error, EOFError) as exc:
        raise CorruptRecording(f"{path.name}: not a readable WAV file ({exc})") from exc
    if rate <= 0:
        raise CorruptRecording(f"{path.name}: WAV header has sample rate {rate}")
    return digest.hexdigest(), size, frames * 1000 // rate


class RecordingArchiver:
    def __init__(self, root: Path, store: CallStore) -> None:
        self.root = root
        self.store = store
        self.disk_full = False  # raised alarm, cleared by the next successful write
        self.bytes_archived = 0

    async def archive(
        self, ari: RecordingSource, call_id: uuid.UUID, recording_name: str,
        started_at: dt.datetime,
    ) -> ArchivedRecording | None:
        """Fetch, store and register one recording, then delete Asterisk's copy.

        Safe to repeat: a recording already archived is registered again (idempotent) and
        only then is Asterisk's copy deleted. None if neither side has it."""
        rel = relative_path(call_id, started_at)
        dest = self.root / rel
        partial = dest.with_name(f".{dest.name}.partial")
        await asyncio.to_thread(_make_dirs, dest.parent)
        try:
            await ari.download_recording(recording_name, partial)
        except AriNotFound:
            partial.unlink(missing_ok=True)
            if not dest.exists():
                log.warning("recording_missing", call_id=str(call_id), recording=recording_name)
                return None
        except OSError as exc:
            partial.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self._alarm(call_id, exc)
                raise ArchiveDiskFull(f"no space left in {self.root}") from exc
            raise
        else:
            try:
                await asyncio.to_thread(_commit, partial, dest)
            except OSError as exc:
                partial.unlink(missing_ok=True)
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    self._alarm(call_id, exc)
                    raise ArchiveDiskFull(f"no space left in {self.root}") from exc
                raise
        sha256, size, duration_ms = await asyncio.to_thread(inspect_wav, dest)
        result = ArchivedRecording(str(rel), sha256, size, duration_ms)
        await self.store.record_recording(
            call_id, path=result.path, sha256=sha256, bytes=size, duration_ms=duration_ms,
            format="wav",
        )
        with contextlib.suppress(AriNotFound):
            await ari.delete_stored_recording(recording_name)
        if self.disk_full:
            log.info("archive_disk_space_recovered", root=str(self.root))
        self.disk_full = False
        self.bytes_archived += size
        log.info("recording_archived", call_id=str(call_id), path=result.path, bytes=size,
                 duration_ms=duration_ms)
        return result

    def _alarm(self, call_id: uuid.UUID, exc: OSError) -> None:
        self.disk_full = True
        log.critical("archive_disk_full", root=str(self.root), call_id=str(call_id),
                     error=str(exc), action="Asterisk keeps the recording; retried later")


def _make_dirs(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)


def _commit(partial: Path, dest: Path) -> None:
    """fsync, set mode, rename into place, fsync the directory: never a half file."""
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(partial, FILE_MODE)
    os.replace(partial, dest)
    dfd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
