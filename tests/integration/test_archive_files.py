"""RecordingArchiver with real files and a real PostgreSQL. The recording source is a small
stand-in for the ARI client's two download/delete calls (the real client is exercised on the
real stack by the call-flow tests); here it lets the disk fill up on cue."""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import hashlib
import stat
import threading
import uuid
import wave
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callrec.archive import files as files_module
from callrec.archive.errors import ArchiveDiskFull, CallPurged, CorruptRecording
from callrec.archive.files import RecordingArchiver, relative_path
from callrec.archive.spool import SpoolRecordings
from callrec.archive.store import CallStore
from callrec.ari.errors import AriNotFound, AriUnavailable
from callrec.privacy import purge
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
        self.downloads = 0
        # >1: written as the ARI client writes a download, piece by piece (first "wb", then
        # "ab"), other tasks running between pieces
        self.pieces = 1
        self.cut_after_piece: int | None = None  # the download fails after this piece
        self.live: set[str] = set()  # recordings Asterisk is still making

    async def recording_is_live(self, name: str) -> bool:
        return name in self.live

    async def download_recording(self, name: str, dest: Path) -> int:
        if name not in self.files:
            raise AriNotFound(f"no recording {name}")
        self.downloads += 1
        if self.pieces > 1 or self.cut_after_piece is not None:
            return await self._in_pieces(self.files[name], dest)
        if self.full_for:
            self.full_for -= 1
            await asyncio.to_thread(dest.write_bytes, self.files[name][:100])  # partly written
            raise OSError(errno.ENOSPC, "No space left on device")
        await asyncio.to_thread(dest.write_bytes, self.files[name])
        return len(self.files[name])

    async def _in_pieces(self, data: bytes, dest: Path) -> int:
        size = -(-len(data) // self.pieces)
        for i in range(self.pieces):
            with dest.open("wb" if i == 0 else "ab") as f:
                f.write(data[i * size:(i + 1) * size])
            if i == self.cut_after_piece:
                raise AriUnavailable("GET /ari/recordings/stored/x/file: connection reset")
            await asyncio.sleep(0.01)
        return len(data)

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


async def test_one_recording_asked_for_twice_at_once_is_archived_once_and_whole(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    # The retries and the sweep after a reconnection can ask together. Two downloads into
    # one file once made a garbled recording whose header was then "repaired" to fit.
    data = _wav_bytes(tmp_path, 2.5)
    spool = Spool({"callrec-x": data})
    spool.pieces = 4
    call_id = uuid.uuid4()
    root = tmp_path / "archive"
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        await _start_call(store, call_id)
        archiver = RecordingArchiver(root, store)
        first, second = await asyncio.gather(
            archiver.archive(spool, call_id, "callrec-x", STARTED),
            archiver.archive(spool, call_id, "callrec-x", STARTED))
    assert first is not None and second == first
    assert (root / first.path).read_bytes() == data
    assert first.sha256 == hashlib.sha256(data).hexdigest()
    assert spool.downloads == 1  # the second found it archived
    assert spool.deleted == ["callrec-x"]
    assert archiver.bytes_archived == len(data)  # counted once
    assert not archiver._locks  # nothing kept once both are done
    row = await _recording_row(db.app_dsn, call_id)
    assert row is not None and row["sha256"] == first.sha256


async def test_a_download_cut_short_leaves_no_partial_file_and_is_retried(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    data = _wav_bytes(tmp_path, 2.5)
    spool = Spool({"callrec-x": data})
    spool.pieces, spool.cut_after_piece = 3, 1
    call_id = uuid.uuid4()
    root = tmp_path / "archive"
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        await _start_call(store, call_id)
        archiver = RecordingArchiver(root, store)
        with pytest.raises(AriUnavailable):
            await archiver.archive(spool, call_id, "callrec-x", STARTED)
        day = root / relative_path(call_id, STARTED).parent
        assert list(day.iterdir()) == []  # no partial file, no file
        assert archiver.pending == 1
        spool.cut_after_piece = None
        assert await archiver.retry_pending() == 1
    assert (root / relative_path(call_id, STARTED)).read_bytes() == data


async def test_an_archive_cancelled_during_its_copy_leaves_no_partial_file(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    """The copy from Asterisk's spool runs in a thread, which a cancellation cannot stop: the
    cleanup once ran before the thread had made the partial file, which then stayed."""
    data = _wav_bytes(tmp_path, 1.0)
    name = "callrec-x"
    at_gate, go, copied = threading.Event(), threading.Event(), threading.Event()

    async def gated(fn: Any, /, *args: Any) -> Any:
        def run() -> Any:
            at_gate.set()
            go.wait(10)
            try:
                return fn(*args)
            finally:
                copied.set()
        return await asyncio.to_thread(run)

    spool = SpoolRecordings(tmp_path / "spool", run_blocking=gated)
    spool.directory.mkdir()
    (spool.directory / f"{name}.wav").write_bytes(data)
    call_id = uuid.uuid4()
    root = tmp_path / "archive"
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        await _start_call(store, call_id)
        archiver = RecordingArchiver(root, store, spool=spool)
        task = asyncio.create_task(archiver.archive(Spool({}), call_id, name, STARTED))
        day = root / relative_path(call_id, STARTED).parent
        assert await asyncio.to_thread(at_gate.wait, 10), "the copy's thread at its gate"
        task.cancel()
        # not a timing check: it lets the old code's cleanup run while the thread is held
        await asyncio.sleep(0.05)
        go.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(copied.wait, 10)
        assert list(day.iterdir()) == [], "no partial file, no file"
        assert (spool.directory / f"{name}.wav").exists(), "Asterisk's copy kept for a retry"
        assert await archiver.archive(Spool({}), call_id, name, STARTED) is not None
    assert (root / relative_path(call_id, STARTED)).read_bytes() == data


async def test_no_room_for_the_days_folder_is_a_disk_full_alarm(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first recording of a day makes its folder: on a full disk that failed as a plain
    # error, with no alarm and no retry.
    data = _wav_bytes(tmp_path, 1)
    spool = Spool({"callrec-x": data})
    call_id = uuid.uuid4()
    root = tmp_path / "archive"

    def no_room(path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        await _start_call(store, call_id)
        archiver = RecordingArchiver(root, store)
        with monkeypatch.context() as patch:
            patch.setattr(files_module, "_make_dirs", no_room)
            with pytest.raises(ArchiveDiskFull):
                await archiver.archive(spool, call_id, "callrec-x", STARTED)
        assert archiver.disk_full and archiver.pending == 1
        assert spool.downloads == 0 and spool.deleted == []
        assert await archiver.retry_pending() == 1
        assert not archiver.disk_full
    assert spool.deleted == ["callrec-x"]
    assert (root / relative_path(call_id, STARTED)).read_bytes() == data


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


async def _purge(dsn: str, root: Path, call_id: uuid.UUID, *, finish: bool = True) -> None:
    """Delete the call as retention or an erasure does (queue, then files and rows)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM calls WHERE id = $1 FOR UPDATE", call_id)
            await purge.enqueue(conn, [call_id], "erasure")
        if finish:
            await purge.finish(conn, root, actor="dpo")
    finally:
        await conn.close()


async def test_a_recording_of_a_call_erased_before_it_was_archived_is_discarded(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    # Asterisk away at the call's end: the recording waits while the caller's erasure runs.
    # Archived afterwards, it once stayed as a file no row pointed at, never purged.
    data = _wav_bytes(tmp_path, 1)
    spool = Spool({"callrec-x": data})
    call_id = uuid.uuid4()
    root = tmp_path / "archive"
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        await _start_call(store, call_id)
        await _purge(db.app_dsn, root, call_id)
        assert await store.was_purged(call_id)
        assert not await store.was_purged(uuid.uuid4())
        archiver = RecordingArchiver(root, store)
        with pytest.raises(CallPurged):
            await archiver.archive(spool, call_id, "callrec-x", STARTED)
        assert store.journal_backlog == 0  # not kept for a retry either
    assert not (root / relative_path(call_id, STARTED)).exists()
    assert spool.deleted == ["callrec-x"]  # nor in Asterisk
    assert await _recording_row(db.app_dsn, call_id) is None


async def test_a_recording_archived_while_its_call_is_queued_for_deletion_goes_with_it(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    data = _wav_bytes(tmp_path, 1)
    spool = Spool({"callrec-x": data})
    call_id = uuid.uuid4()
    root = tmp_path / "archive"
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        await _start_call(store, call_id)
        await _purge(db.app_dsn, root, call_id, finish=False)  # queued with no file yet
        result = await RecordingArchiver(root, store).archive(
            spool, call_id, "callrec-x", STARTED)
        assert result is not None and (root / result.path).exists()
    conn = await asyncpg.connect(db.app_dsn)
    try:
        await purge.finish(conn, root, actor="dpo")
    finally:
        await conn.close()
    assert not (root / relative_path(call_id, STARTED)).exists()


def _unwritten_sizes(data: bytes) -> bytes:
    """The header of a file Asterisk has not closed: sizes still zero."""
    return data[:4] + b"\0\0\0\0" + data[8:40] + b"\0\0\0\0" + data[44:]


async def test_a_recording_still_being_made_is_archived_once_asterisk_has_closed_it(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    """Taken at a call's end guard while Asterisk still wrote it, its zero sizes were
    "repaired" to the length so far: archived as whole, and Asterisk's copy deleted."""
    data = _wav_bytes(tmp_path, 3.0)
    spool = Spool({"callrec-x": _unwritten_sizes(data[: 44 + 8000 * 2])})  # 1 s so far
    spool.live.add("callrec-x")
    call_id = uuid.uuid4()
    root = tmp_path / "archive"
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        await _start_call(store, call_id)
        archiver = RecordingArchiver(root, store)
        with pytest.raises(AriUnavailable, match="still being recorded"):
            await archiver.archive(spool, call_id, "callrec-x", STARTED)
        assert archiver.pending == 1 and spool.deleted == []
        assert not (root / relative_path(call_id, STARTED)).exists()
        # Asterisk closes it, whole
        spool.files["callrec-x"], spool.live = data, set()
        assert await archiver.retry_pending() == 1
        row = await _recording_row(db.app_dsn, call_id)
    assert row is not None and row["duration_ms"] == 3000 and spool.deleted == ["callrec-x"]


async def test_a_crash_cut_recording_is_repaired_and_one_cut_under_its_header_refused(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    data = _wav_bytes(tmp_path, 3.0)
    # sizes never written, not being made (Asterisk crashed): every sample kept
    crashed = _unwritten_sizes(data)
    # a whole header, half the audio: no repair may make it pass for whole
    short = data[: 44 + 8000 * 2 * 3 // 2]
    spool = Spool({"callrec-crashed": crashed, "callrec-short": short})
    ids = uuid.uuid4(), uuid.uuid4()
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        for call_id in ids:
            await _start_call(store, call_id)
        archiver = RecordingArchiver(tmp_path / "archive", store)
        result = await archiver.archive(spool, ids[0], "callrec-crashed", STARTED)
        assert result is not None and result.duration_ms == 3000
        with pytest.raises(CorruptRecording, match="cut short"):
            await archiver.archive(spool, ids[1], "callrec-short", STARTED)
    assert spool.deleted == ["callrec-crashed"], "the cut one stays in Asterisk's spool"
    assert await _recording_row(db.app_dsn, ids[1]) is None
