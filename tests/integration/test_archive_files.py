"""RecordingArchiver with real files, a real PostgreSQL and a real Asterisk 22: recordings
are files in the bare stack's own recording spool, fetched over ARI (`ari`) or read there
(`spool`), as the service does on either kind of host. Faults are real too: a network
connection cut midway (a proxy between the client and Asterisk), a full filesystem (a small
tmpfs), a recording Asterisk is still making (a real call)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import stat
import subprocess
import threading
import uuid
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callrec.archive.errors import ArchiveDiskFull, CallPurged, CorruptRecording
from callrec.archive.files import RecordingArchiver, relative_path
from callrec.archive.spool import SpoolRecordings
from callrec.archive.store import CallStore
from callrec.ari.client import AriClient
from callrec.ari.errors import AriUnavailable
from callrec.ari.events import RecordingFinished, RecordingStarted, StasisStart
from callrec.calls.machine import recording_name_for
from callrec.privacy import purge
from devstack.sipp import Caller
from devstack.stack import Stack
from tests.dbfixtures import ScratchDatabase
from tests.integration.test_ari_client import SERVICE_NUMBER, client, start_events

pytestmark = [pytest.mark.db, pytest.mark.stack]
STARTED = dt.datetime(2026, 11, 28, 23, 30, tzinfo=dt.UTC)


def _wav_bytes(tmp: Path, seconds: float) -> bytes:
    path = tmp / "src.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x01\x02" * int(8000 * seconds))
    return path.read_bytes()


@dataclass
class Asterisk:
    """The real Asterisk's recordings: its spool directory and its ARI client."""

    ari: AriClient
    directory: Path
    # where set, the archiver reads the spool itself (the local stack); else it fetches
    # and deletes over ARI (Docker)
    spool: SpoolRecordings | None

    def store(self, data: bytes, call_id: uuid.UUID | None = None) -> tuple[uuid.UUID, str]:
        """A finished recording of a new call (or of `call_id`), as Asterisk leaves it."""
        call_id = call_id or uuid.uuid4()
        name = recording_name_for(call_id)
        self.path(name).write_bytes(data)
        return call_id, name

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.wav"

    def holds(self, name: str) -> bool:
        return self.path(name).exists()

    def archiver(self, root: Path, store: CallStore) -> RecordingArchiver:
        return RecordingArchiver(root, store, spool=self.spool)

    def counting_archiver(self, root: Path, store: CallStore
                          ) -> tuple[RecordingArchiver, Any, Counted]:
        """An archiver whose downloads, from the spool or over ARI, are counted: it, the
        source to pass it as the call's, and the count."""
        counted = Counted(self.spool or self.ari)
        if self.spool is not None:
            return RecordingArchiver(root, store, spool=counted), self.ari, counted
        return RecordingArchiver(root, store), counted, counted


@pytest.fixture(params=["ari", "spool"])
async def asterisk(bare_stack: Stack, request: pytest.FixtureRequest
                   ) -> AsyncIterator[Asterisk]:
    async with client(bare_stack, f"archive-{uuid.uuid4().hex[:8]}") as ari:
        directory = bare_stack.asterisk.recordings
        spool = SpoolRecordings(directory) if request.param == "spool" else None
        yield Asterisk(ari, directory, spool)


class Counted:
    """A source that counts the downloads that delivered a file; everything else is the
    real source's."""

    def __init__(self, source: Any) -> None:
        self.source, self.downloads = source, 0

    async def download_recording(self, name: str, dest: Path) -> int:
        result: int = await self.source.download_recording(name, dest)
        self.downloads += 1
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)


class CuttingProxy:
    """TCP between the ARI client and Asterisk that, when told, cuts a connection once it
    has carried `cut_after` bytes of Asterisk's answers."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after: int | None = None
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        tasks = [asyncio.create_task(self._pump(reader, up_writer, answers=False)),
                 asyncio.create_task(self._pump(up_reader, writer, answers=True))]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)
            for w in (writer, up_writer):
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    answers: bool) -> None:
        carried = 0
        while data := await reader.read(4096):
            if answers and self.cut_after is not None and carried + len(data) > self.cut_after:
                writer.write(data[: self.cut_after - carried])
                await writer.drain()
                self.cuts += 1
                return  # both directions close: the client sees its answer cut short
            carried += len(data)
            writer.write(data)
            await writer.drain()


@contextlib.contextmanager
def small_filesystem(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs at `path` (`size=`, `nr_inodes=`: room for little), unmounted afterwards."""
    path.mkdir(mode=0o750)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"mode=0750,{options}", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def grow(path: Path, options: str) -> None:
    """Room again, without unmounting: what an operator freeing space does."""
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


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
    db: ScratchDatabase, tmp_path: Path, asterisk: Asterisk
) -> None:
    data = _wav_bytes(tmp_path, 2.5)
    call_id, name = asterisk.store(data)
    root = tmp_path / "archive"
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        await _start_call(store, call_id)
        archiver = asterisk.archiver(root, store)
        result = await archiver.archive(asterisk.ari, call_id, name, STARTED)
        again = await archiver.archive(asterisk.ari, call_id, name, STARTED)  # idempotent
    assert result is not None and again == result
    assert result.path == f"2026/11/28/{call_id}.wav" == str(relative_path(call_id, STARTED))
    file = root / result.path
    assert file.read_bytes() == data
    assert stat.S_IMODE(file.stat().st_mode) == 0o640
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (result.bytes, result.duration_ms) == (len(data), 2500)
    assert not asterisk.holds(name)
    assert name not in {r.name for r in await asterisk.ari.list_stored_recordings()}
    row = await _recording_row(db.app_dsn, call_id)
    assert row is not None and row["sha256"] == result.sha256 and row["duration_ms"] == 2500
    assert not list(file.parent.glob(".*partial"))


async def test_one_recording_asked_for_twice_at_once_is_archived_once_and_whole(
    db: ScratchDatabase, tmp_path: Path, asterisk: Asterisk
) -> None:
    # The retries and the sweep after a reconnection can ask together. Two downloads into
    # one file once made a garbled recording whose header was then "repaired" to fit.
    data = _wav_bytes(tmp_path, 2.5)
    call_id, name = asterisk.store(data)
    root = tmp_path / "archive"
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        await _start_call(store, call_id)
        archiver, source, counted = asterisk.counting_archiver(root, store)
        first, second = await asyncio.gather(
            archiver.archive(source, call_id, name, STARTED),
            archiver.archive(source, call_id, name, STARTED))
    assert first is not None and second == first
    assert (root / first.path).read_bytes() == data
    assert first.sha256 == hashlib.sha256(data).hexdigest()
    assert counted.downloads == 1  # the second found Asterisk's copy gone, the file archived
    assert not asterisk.holds(name)
    assert archiver.bytes_archived == len(data)  # counted once
    assert not archiver._locks  # nothing kept once both are done
    row = await _recording_row(db.app_dsn, call_id)
    assert row is not None and row["sha256"] == first.sha256


async def test_a_download_cut_short_leaves_no_partial_file_and_is_retried(
    db: ScratchDatabase, tmp_path: Path, bare_stack: Stack
) -> None:
    # 90 s (1.44 MB): cut after the client has written its first piece (1 MiB) to the file
    data = _wav_bytes(tmp_path, 90)
    async with (
        CuttingProxy(int(bare_stack.cfg.ari_port)) as proxy,
        AriClient(proxy.url, bare_stack.ari_user, bare_stack.ari_password, "archive-cut") as ari,
    ):
        asterisk = Asterisk(ari, bare_stack.asterisk.recordings, None)
        call_id, name = asterisk.store(data)
        root = tmp_path / "archive"
        async with CallStore(db.app_dsn, tmp_path / "journal") as store:
            await _start_call(store, call_id)
            archiver = asterisk.archiver(root, store)
            proxy.cut_after = 1_200_000
            with pytest.raises(AriUnavailable):
                await archiver.archive(ari, call_id, name, STARTED)
            assert proxy.cuts == 1
            day = root / relative_path(call_id, STARTED).parent
            assert list(day.iterdir()) == []  # no partial file, no file
            assert archiver.pending == 1 and asterisk.holds(name)
            proxy.cut_after = None
            assert await archiver.retry_pending() == 1
    assert (root / relative_path(call_id, STARTED)).read_bytes() == data
    assert not asterisk.holds(name)


async def test_an_archive_cancelled_during_its_copy_leaves_no_partial_file(
    db: ScratchDatabase, tmp_path: Path, bare_stack: Stack
) -> None:
    """The copy from Asterisk's spool runs in a thread, which a cancellation cannot stop: the
    cleanup once ran before the thread had made the partial file, which then stayed."""
    data = _wav_bytes(tmp_path, 1.0)
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

    directory = bare_stack.asterisk.recordings
    async with client(bare_stack, "archive-cancel") as ari:
        asterisk = Asterisk(ari, directory, SpoolRecordings(directory, run_blocking=gated))
        call_id, name = asterisk.store(data)
        root = tmp_path / "archive"
        async with CallStore(db.app_dsn, tmp_path / "journal") as store:
            await _start_call(store, call_id)
            archiver = asterisk.archiver(root, store)
            task = asyncio.create_task(archiver.archive(ari, call_id, name, STARTED))
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
            assert asterisk.holds(name), "Asterisk's copy kept for a retry"
            assert await archiver.archive(ari, call_id, name, STARTED) is not None
    assert (root / relative_path(call_id, STARTED)).read_bytes() == data


async def test_no_room_for_the_days_folder_is_a_disk_full_alarm(
    db: ScratchDatabase, tmp_path: Path, asterisk: Asterisk
) -> None:
    # The first recording of a day makes its folder: on a full disk that failed as a plain
    # error, with no alarm and no retry. A filesystem with no inode left for a folder.
    data = _wav_bytes(tmp_path, 1)
    call_id, name = asterisk.store(data)
    with small_filesystem(tmp_path / "archive", "size=1m,nr_inodes=1") as root:
        async with CallStore(db.app_dsn, tmp_path / "journal") as store:
            await _start_call(store, call_id)
            archiver, source, counted = asterisk.counting_archiver(root, store)
            with pytest.raises(ArchiveDiskFull):
                await archiver.archive(source, call_id, name, STARTED)
            assert archiver.disk_full and archiver.pending == 1
            assert counted.downloads == 0 and asterisk.holds(name)
            grow(root, "nr_inodes=1000")
            assert await archiver.retry_pending() == 1
            assert not archiver.disk_full
        assert not asterisk.holds(name)
        assert (root / relative_path(call_id, STARTED)).read_bytes() == data


async def test_disk_full_raises_an_alarm_keeps_asterisks_copy_and_recovers(
    db: ScratchDatabase, tmp_path: Path, asterisk: Asterisk
) -> None:
    calls = dict(asterisk.store(_wav_bytes(tmp_path, seconds)) for seconds in (1.0, 2.0))
    names = {name: call_id for call_id, name in calls.items()}
    # room for the folders, not for a second of audio (16 kB)
    with small_filesystem(tmp_path / "archive", "size=12k") as root:
        async with CallStore(db.app_dsn, tmp_path / "journal") as store:
            archiver = asterisk.archiver(root, store)
            for name, call_id in names.items():
                await _start_call(store, call_id)
                with pytest.raises(ArchiveDiskFull):
                    await archiver.archive(asterisk.ari, call_id, name, STARTED)
            assert archiver.disk_full and archiver.pending == 2
            assert all(asterisk.holds(name) for name in names)  # Asterisk keeps both
            assert list(root.rglob("*.wav*")) == []  # nothing half-written stays
            assert await _recording_row(db.app_dsn, next(iter(calls))) is None

            grow(root, "size=1m")  # space is back
            assert await archiver.retry_pending() == 2
            assert not archiver.disk_full and archiver.pending == 0
        assert not any(asterisk.holds(name) for name in names)
        for call_id in calls:
            row = await _recording_row(db.app_dsn, call_id)
            assert row is not None and (root / row["path"]).is_file()


async def test_corrupt_recording_is_refused_and_left_in_the_spool(
    db: ScratchDatabase, tmp_path: Path, asterisk: Asterisk
) -> None:
    call_id, name = asterisk.store(b"RIFF\x00\x00\x00\x00not a wave at all")
    root = tmp_path / "archive"
    try:
        async with CallStore(db.app_dsn, tmp_path / "journal") as store:
            await _start_call(store, call_id)
            with pytest.raises(CorruptRecording):
                await asterisk.archiver(root, store).archive(asterisk.ari, call_id, name,
                                                             STARTED)
        assert asterisk.holds(name)
        assert list(root.rglob("*")) == [p for p in root.rglob("*") if p.is_dir()]
        assert await _recording_row(db.app_dsn, call_id) is None
    finally:
        asterisk.path(name).unlink(missing_ok=True)  # an operator's to look at, not the next test's


async def test_missing_recording_is_reported_as_none(
    db: ScratchDatabase, tmp_path: Path, asterisk: Asterisk
) -> None:
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        archiver = asterisk.archiver(tmp_path / "archive", store)
        call_id = uuid.uuid4()
        assert await archiver.archive(asterisk.ari, call_id, recording_name_for(call_id),
                                      STARTED) is None


async def test_recording_cut_by_an_asterisk_crash_is_repaired_not_refused(
    db: ScratchDatabase, tmp_path: Path, asterisk: Asterisk
) -> None:
    whole = _wav_bytes(tmp_path, 1.5)
    cut = bytearray(whole)
    cut[4:8] = b"\x00\x00\x00\x00"  # what Asterisk leaves when it dies mid-recording
    cut[40:44] = b"\x00\x00\x00\x00"
    call_id, name = asterisk.store(bytes(cut))
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        await _start_call(store, call_id)
        result = await asterisk.archiver(tmp_path / "archive", store).archive(
            asterisk.ari, call_id, name, STARTED)
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
    db: ScratchDatabase, tmp_path: Path, asterisk: Asterisk
) -> None:
    # Asterisk away at the call's end: the recording waits while the caller's erasure runs.
    # Archived afterwards, it once stayed as a file no row pointed at, never purged.
    call_id, name = asterisk.store(_wav_bytes(tmp_path, 1))
    root = tmp_path / "archive"
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        await _start_call(store, call_id)
        await _purge(db.app_dsn, root, call_id)
        assert await store.was_purged(call_id)
        assert not await store.was_purged(uuid.uuid4())
        archiver = asterisk.archiver(root, store)
        with pytest.raises(CallPurged):
            await archiver.archive(asterisk.ari, call_id, name, STARTED)
        assert store.journal_backlog == 0  # not kept for a retry either
    assert not (root / relative_path(call_id, STARTED)).exists()
    assert not asterisk.holds(name)  # nor in Asterisk
    assert await _recording_row(db.app_dsn, call_id) is None


async def test_a_recording_archived_while_its_call_is_queued_for_deletion_goes_with_it(
    db: ScratchDatabase, tmp_path: Path, asterisk: Asterisk
) -> None:
    call_id, name = asterisk.store(_wav_bytes(tmp_path, 1))
    root = tmp_path / "archive"
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        await _start_call(store, call_id)
        await _purge(db.app_dsn, root, call_id, finish=False)  # queued with no file yet
        result = await asterisk.archiver(root, store).archive(
            asterisk.ari, call_id, name, STARTED)
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
    db: ScratchDatabase, tmp_path: Path, bare_stack: Stack
) -> None:
    """Taken at a call's end guard while Asterisk still wrote it, its zero sizes were
    "repaired" to the length so far: archived as whole, and Asterisk's copy deleted. A real
    call's recording, read from the spool while Asterisk writes it."""
    directory = bare_stack.asterisk.recordings
    call_id = uuid.uuid4()
    name = recording_name_for(call_id)
    root = tmp_path / "archive"
    async with (client(bare_stack, "callrec") as ari,
                CallStore(db.app_dsn, tmp_path / "journal") as store):
        running = await start_events(ari)
        caller = Caller(sip_port=bare_stack.sip_port, service_number=SERVICE_NUMBER,
                        caller_number="0401234567", talk_seconds=30).start()
        try:
            start = await running.log.wait(StasisStart, lambda e: e.args == (SERVICE_NUMBER,))
            await ari.answer(start.channel.id)
            asterisk = Asterisk(ari, directory, SpoolRecordings(directory))
            await _start_call(store, call_id)
            archiver = asterisk.archiver(root, store)
            await ari.record_channel(start.channel.id, name)
            await running.log.wait(RecordingStarted, lambda e: e.recording.name == name)
            await asyncio.sleep(1)  # the caller's audio flows into the file meanwhile
            with pytest.raises(AriUnavailable, match="still being recorded"):
                await archiver.archive(ari, call_id, name, STARTED)
            assert archiver.pending == 1 and asterisk.holds(name)
            assert not (root / relative_path(call_id, STARTED)).exists()
            # Asterisk closes it, whole
            await ari.stop_recording(name)
            await running.log.wait(RecordingFinished, lambda e: e.recording.name == name)
            closed = asterisk.path(name).read_bytes()
            assert await archiver.retry_pending() == 1
            row = await _recording_row(db.app_dsn, call_id)
            await ari.hangup(start.channel.id)
        finally:
            running.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running.task
            caller.stop()
    assert row is not None and row["duration_ms"] >= 1000 and not asterisk.holds(name)
    assert (root / row["path"]).read_bytes() == closed
    assert row["duration_ms"] == (len(closed) - 44) * 1000 // 16000


async def test_a_crash_cut_recording_is_repaired_and_one_cut_under_its_header_refused(
    db: ScratchDatabase, tmp_path: Path, asterisk: Asterisk
) -> None:
    data = _wav_bytes(tmp_path, 3.0)
    # sizes never written, not being made (Asterisk crashed): every sample kept
    crashed = asterisk.store(_unwritten_sizes(data))
    # a whole header, half the audio: no repair may make it pass for whole
    short = asterisk.store(data[: 44 + 8000 * 2 * 3 // 2])
    try:
        async with CallStore(db.app_dsn, tmp_path / "journal") as store:
            for call_id, _ in (crashed, short):
                await _start_call(store, call_id)
            archiver = asterisk.archiver(tmp_path / "archive", store)
            result = await archiver.archive(asterisk.ari, *crashed, STARTED)
            assert result is not None and result.duration_ms == 3000
            with pytest.raises(CorruptRecording, match="cut short"):
                await archiver.archive(asterisk.ari, *short, STARTED)
        assert not asterisk.holds(crashed[1])
        assert asterisk.holds(short[1]), "the cut one stays in Asterisk's spool"
        assert await _recording_row(db.app_dsn, short[0]) is None
    finally:
        asterisk.path(short[1]).unlink(missing_ok=True)
