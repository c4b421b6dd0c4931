"""RecordingArchiver with real files and a real PostgreSQL. The recording source is a small
stand-in for the ARI client's two download/delete calls (the real client is exercised on the
real stack by the call-flow tests); here it lets the disk fill up on cue."""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import hashlib
import stat
import uuid
import wave
from pathlib import Path

import asyncpg
import pytest

from callrec.archive.errors import ArchiveDiskFull, CorruptRecording
from callrec.archive.files import RecordingArchiver, relative_path
from callrec.archive.store import CallStore
from callrec.ari.errors import AriNotFound
from tests.dbfixtures import ScratchDatabase

pytestmark = pytest.mark.db
STARTED = dt.datetime(2026, 11, 28, 23, 30, tzinfo=dt.UTC)


def _wav_bytes(tmp: Path, seconds: float) -> bytes:
    path = tmp / "src.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x01\x02" * int(8000 * seconds))
    return path.read_bytes()


class Spool:
    """Asterisk's stored recordings, as far as the archiver sees them."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.full_for = 0  # the next N downloads fail with ENOSPC
        self.deleted: list[str] = []

    async def download_recording(self, name: str, dest: Path) -> int:
        if name not in self.files:
            raise AriNotFound(f"no recording {name}")
        if self.full_for:
            self.full_for -= 1
            await asyncio.to_thread(dest.write_bytes, self.files[name][:100])  # partly written
            raise OSError(errno.ENOSPC, "No space left on device")
        await asyncio.to_thread(dest.write_bytes, self.files[name])
        return len(self.files[name])

    async def delete_stored_recording(self, name: str) -> None:
        if name not in self.files:
            raise AriNotFound(name)
        del self.files[name]
        self.deleted.append(name)


async def _start_call(store: CallStore, call_id: uuid.UUID) -> None:
    await store.record_call(call_id, service_number="0103808000", started_at=STARTED,
                            caller_number="0401234567")


async def _recording_row(dsn: str, call_id: uuid.UUID) -> asyncpg.Record | None:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchrow("SELECT * FROM recordings WHERE call_id = $1", call_id)
    finally:
        await conn.close()


async def test_archive_writes_whole_file_row_and_deletes_asterisks_copy(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    data = _wav_bytes(tmp_path, 2.5)
    spool = Spool({"callrec-x": data})
    call_id = uuid.uuid4()
    root = tmp_path / "archive"
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        await _start_call(store, call_id)
        archiver = RecordingArchiver(root, store)
        result = await archiver.archive(spool, call_id, "callrec-x", STARTED)
        again = await archiver.archive(spool, call_id, "callrec-x", STARTED)  # idempotent
    assert result is not None and again == result
    assert result.path == f"2026/11/28/{call_id}.wav" == str(relative_path(call_id, STARTED))
    file = root / result.path
    assert file.read_bytes() == data
    assert stat.S_IMODE(file.stat().st_mode) == 0o640
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (result.bytes, result.duration_ms) == (len(data), 2500)
    assert spool.deleted == ["callrec-x"]
    row = await _recording_row(db.app_dsn, call_id)
    assert row is not None and row["sha256"] == result.sha256 and row["duration_ms"] == 2500
    assert not list(file.parent.glob(".*partial"))


async def test_disk_full_raises_an_alarm_keeps_asterisks_copy_and_recovers(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    spool = Spool({"callrec-a": _wav_bytes(tmp_path, 1.0), "callrec-b": _wav_bytes(tmp_path, 2.0)})
    spool.full_for = 2
    calls = {name: uuid.uuid4() for name in spool.files}
    root = tmp_path / "archive"
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        archiver = RecordingArchiver(root, store)
        for name, call_id in calls.items():
            await _start_call(store, call_id)
            with pytest.raises(ArchiveDiskFull):
                await archiver.archive(spool, call_id, name, STARTED)
        assert archiver.disk_full and archiver.pending == 2
        assert sorted(spool.files) == ["callrec-a", "callrec-b"]  # Asterisk keeps both
        assert list(root.rglob("*.wav*")) == []  # nothing half-written stays
        assert await _recording_row(db.app_dsn, calls["callrec-a"]) is None

        assert await archiver.retry_pending() == 2  # space is back
        assert not archiver.disk_full and archiver.pending == 0
    assert spool.files == {}
    for call_id in calls.values():
        row = await _recording_row(db.app_dsn, call_id)
        assert row is not None and (root / row["path"]).is_file()


async def test_corrupt_recording_is_refused_and_left_in_the_spool(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    spool = Spool({"callrec-bad": b"RIFF\x00\x00\x00\x00not a wave at all"})
    call_id = uuid.uuid4()
    root = tmp_path / "archive"
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        await _start_call(store, call_id)
        with pytest.raises(CorruptRecording):
            await RecordingArchiver(root, store).archive(spool, call_id, "callrec-bad", STARTED)
    assert "callrec-bad" in spool.files
    assert list(root.rglob("*")) == [p for p in root.rglob("*") if p.is_dir()]
    assert await _recording_row(db.app_dsn, call_id) is None


async def test_missing_recording_is_reported_as_none(db: ScratchDatabase, tmp_path: Path) -> None:
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        archiver = RecordingArchiver(tmp_path / "archive", store)
        assert await archiver.archive(Spool({}), uuid.uuid4(), "callrec-gone", STARTED) is None


async def test_recording_cut_by_an_asterisk_crash_is_repaired_not_refused(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    whole = _wav_bytes(tmp_path, 1.5)
    cut = bytearray(whole)
    cut[4:8] = b"\x00\x00\x00\x00"  # what Asterisk leaves when it dies mid-recording
    cut[40:44] = b"\x00\x00\x00\x00"
    spool = Spool({"callrec-cut": bytes(cut)})
    call_id = uuid.uuid4()
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        await _start_call(store, call_id)
        result = await RecordingArchiver(tmp_path / "archive", store).archive(
            spool, call_id, "callrec-cut", STARTED)
    assert result is not None
    assert result.duration_ms == 1500
    assert (tmp_path / "archive" / result.path).read_bytes() == whole
