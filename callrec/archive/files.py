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
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from callrec.archive.durable import sync_folder
from callrec.archive.errors import (
    ArchiveDiskFull,
    CallPurged,
    CorruptRecording,
    RecordingNotStored,
)
from callrec.archive.store import CallStore
from callrec.ari.errors import AriNotFound, AriUnavailable
from callrec.tasks import BlockingRunner, to_the_end

log = structlog.get_logger(__name__)

_NOT_STORED = (AriNotFound, RecordingNotStored)
FILE_MODE = 0o640
DIR_MODE = 0o750


class RecordingSource(Protocol):
    """What the archiver needs of the ARI client (or of Asterisk's spool): a missing
    recording raises `AriNotFound` or `RecordingNotStored`."""

    async def download_recording(self, name: str, dest: Path) -> int: ...
    async def delete_stored_recording(self, name: str) -> None: ...


class RecordingHost(RecordingSource, Protocol):
    """The ARI client: a source that also tells whether a recording is still being made."""

    async def recording_is_live(self, name: str) -> bool: ...


class RecordingStillLive(AriUnavailable):
    """Asterisk has not closed the recording's file yet: archived once it has (a file taken
    now would be cut short, and Asterisk's copy deleted while it still writes)."""

    default_message = "the recording is still being made"


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


# Sizes a header holds before Asterisk closes the file (it writes them then).
_UNWRITTEN = (0, 0xFFFFFFFF)


def unfinished_header(path: Path) -> bool:
    """Whether the file is a canonical PCM WAV whose sizes Asterisk has not written: a
    recording still being made, or cut by a crash of Asterisk."""
    with open(path, "rb") as f:
        head = f.read(44)
    return _canonical(head) and int.from_bytes(head[40:44], "little") in _UNWRITTEN


def _canonical(head: bytes) -> bool:
    return not (len(head) < 44 or head[:4] != b"RIFF" or head[8:16] != b"WAVEfmt "
                or head[36:40] != b"data" or int.from_bytes(head[16:20], "little") != 16)


def repair_wav_header(path: Path) -> bool:
    """Fix the RIFF and data sizes of a canonical 44-byte-header PCM WAV whose sizes were
    never written, from the file's length: a recording cut by an Asterisk crash keeps zeros
    there, though every sample before the crash is in the file (the caller has made sure it
    is not still being made). A header that claims more audio than the file holds is a file
    cut short: CorruptRecording, never "repaired" into one that passes for whole.
    Returns True if the header was changed; leaves anything else to `inspect_wav`."""
    with open(path, "r+b") as f:
        head = f.read(44)
        if not _canonical(head):
            return False
        f.seek(0, os.SEEK_END)
        size = f.tell()
        block = max(1, int.from_bytes(head[32:34], "little"))
        data = (size - 44) // block * block
        riff_size, data_size = int.from_bytes(head[4:8], "little"), int.from_bytes(
            head[40:44], "little")
        if data_size == data and riff_size == size - 8:
            return False
        if data_size not in _UNWRITTEN:
            if data_size > data:
                raise CorruptRecording(f"{path.name}: the header holds {data_size} bytes of "
                                       f"audio, the file {data}: cut short")
            return False  # more than the header says (trailing bytes): the header's length
        f.seek(4)
        f.write((size - 8).to_bytes(4, "little"))
        f.seek(40)
        f.write(data.to_bytes(4, "little"))
    return True


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
    def __init__(
        self, root: Path, store: CallStore, *, spool: RecordingSource | None = None,
        run_blocking: BlockingRunner = asyncio.to_thread,
    ) -> None:
        self.root = root
        self._run_blocking = run_blocking
        self.store = store
        # Where set, recordings are read from Asterisk's spool, not from the ARI client the
        # call passes in (callrec.archive.spool).
        self.spool = spool
        self.disk_full = False  # raised alarm, cleared by the next successful write
        self.bytes_archived = 0
        # Recordings Asterisk still holds because archiving them failed for a reason that
        # passes (disk full, Asterisk unreachable): retried by `run_retries`.
        self._pending: dict[str, tuple[RecordingHost, uuid.UUID, dt.datetime]] = {}
        # per recording being archived, its lock; an entry goes when no caller holds the lock
        # or waits for it
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def run_retries(self, interval: float = 5.0) -> None:
        """Retry pending recordings every `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            if self._pending:
                await self.retry_pending()

    async def retry_pending(self) -> int:
        """Archive what is pending; stops at the first failure. Returns how many succeeded."""
        done = 0
        for name, (ari, call_id, started_at) in list(self._pending.items()):
            try:
                await self.archive(ari, call_id, name, started_at)
            except (ArchiveDiskFull, AriUnavailable):
                break
            except Exception:  # one broken recording must not block the others
                log.exception("recording_retry_failed", recording=name, call_id=str(call_id))
                self._pending.pop(name, None)
                continue
            done += 1
        return done

    async def archive(
        self, ari: RecordingHost, call_id: uuid.UUID, recording_name: str,
        started_at: dt.datetime,
    ) -> ArchivedRecording | None:
        """Fetch, store and register one recording, then delete Asterisk's copy.

        Safe to repeat: a recording already archived is registered again (idempotent) and
        only then is Asterisk's copy deleted. None if neither side has it. A failure that
        passes (disk full, Asterisk unreachable) is raised and the recording kept for retry.
        One recording is archived by one caller at a time: the retries and the sweep after
        a reconnection can ask for the same one together, and two downloads into one file
        would make a garbled recording that passes for whole."""
        source = self.spool or ari
        lock = self._locks.get(recording_name)
        if lock is None:
            lock = self._locks[recording_name] = asyncio.Lock()
        try:
            async with lock:
                result = await self._archive(source, call_id, recording_name, started_at,
                                             live=ari.recording_is_live)
        except (ArchiveDiskFull, AriUnavailable):
            self._pending[recording_name] = (ari, call_id, started_at)
            raise
        self._pending.pop(recording_name, None)
        return result

    async def _archive(
        self, ari: RecordingSource, call_id: uuid.UUID, recording_name: str,
        started_at: dt.datetime, *, live: Callable[[str], Awaitable[bool]],
    ) -> ArchivedRecording | None:
        rel = relative_path(call_id, started_at)
        dest = self.root / rel
        partial = dest.with_name(f".{dest.name}.partial")
        fresh = True  # False: archived by an earlier attempt, registered again
        try:
            await self._run_blocking(_make_dirs, dest.parent)
            # (to the end: the copy's thread, once cancelled, could make the partial file
            # again after the cleanup below)
            await to_the_end(ari.download_recording(recording_name, partial))
            # sizes not written: cut by a crash of Asterisk (repaired below), or still being
            # made (archived once Asterisk has closed it: a call's end guard can ask first)
            if await self._run_blocking(unfinished_header, partial) and await live(
                    recording_name):
                raise RecordingStillLive(f"{recording_name}: still being recorded")
            repaired, (sha256, size, duration_ms) = await to_the_end(self._run_blocking(
                _check_and_commit, partial, dest))
            if repaired:
                log.warning("recording_header_repaired", call_id=str(call_id),
                            recording=recording_name, reason="sizes not written (cut short)")
        except _NOT_STORED:
            if not dest.exists():
                log.warning("recording_missing", call_id=str(call_id), recording=recording_name)
                return None
            # Archived by an earlier attempt that stopped before Asterisk's copy was deleted
            # (or by the caller that held the lock before us).
            fresh = False
            sha256, size, duration_ms = await self._run_blocking(inspect_wav, dest)
        except CorruptRecording:
            log.error("recording_corrupt", call_id=str(call_id), recording=recording_name,
                      action="left in Asterisk's spool for an operator")
            raise
        except OSError as exc:
            self._raise_if_full(call_id, exc)
            raise
        finally:
            # whatever stopped it (a download cut short, a cancellation): no half file stays;
            # after the commit the name is free already
            partial.unlink(missing_ok=True)
        result = ArchivedRecording(str(rel), sha256, size, duration_ms)
        try:
            await self.store.record_recording(
                call_id, path=result.path, sha256=sha256, bytes=size,
                duration_ms=duration_ms, format="wav",
            )
        except OSError as exc:  # the database away and the journal's disk full
            self._raise_if_full(call_id, exc)
            raise
        except CallPurged:
            # an erasure (or retention) came first: nothing of the call may stay
            await self._run_blocking(dest.unlink, True)
            with contextlib.suppress(*_NOT_STORED):
                await ari.delete_stored_recording(recording_name)
            log.warning("recording_of_deleted_call_discarded", call_id=str(call_id),
                        recording=recording_name)
            raise
        with contextlib.suppress(*_NOT_STORED):
            await ari.delete_stored_recording(recording_name)
        if self.disk_full:
            log.info("archive_disk_space_recovered", root=str(self.root))
        self.disk_full = False
        if fresh:
            self.bytes_archived += size
            log.info("recording_archived", call_id=str(call_id), path=result.path, bytes=size,
                     duration_ms=duration_ms)
        return result

    def _raise_if_full(self, call_id: uuid.UUID, exc: OSError) -> None:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            self._alarm(call_id, exc)
            raise ArchiveDiskFull(f"no space left in {self.root}") from exc

    def _alarm(self, call_id: uuid.UUID, exc: OSError) -> None:
        self.disk_full = True
        log.critical("archive_disk_full", root=str(self.root), call_id=str(call_id),
                     error=str(exc), action="Asterisk keeps the recording; retried later")


def _make_dirs(path: Path) -> None:
    """The day's folder, each new level's entry made durable in its parent: the file renamed
    into it is fsync'd with its folder, but a folder not yet on disk itself could take the
    day's first recording with it in a power cut, after Asterisk's copy was deleted."""
    missing = []
    level = path
    while not level.is_dir():
        missing.append(level)
        level = level.parent
    for new in reversed(missing):
        try:
            new.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile (another recording of the day): its maker syncs it
        sync_folder(new.parent)


def _check_and_commit(partial: Path, dest: Path) -> tuple[bool, tuple[str, int, int]]:
    """Repair and inspect the downloaded file, then move it into place (one thread hop).
    Checked before it takes its place: a file in the archive is always whole."""
    repaired = repair_wav_header(partial)
    facts = inspect_wav(partial)
    _commit(partial, dest)
    return repaired, facts


def _commit(partial: Path, dest: Path) -> None:
    """fsync, set mode, rename into place, fsync the directory: never a half file."""
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(partial, FILE_MODE)
    os.replace(partial, dest)
    sync_folder(dest.parent)
