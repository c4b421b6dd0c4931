"""The archive's own threads: the journal and the spool's file work go on while asyncio's
default pool (shared with the console) is held by slow work."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from callrec.archive.journal import Journal
from callrec.archive.spool import SpoolRecordings
from callrec.archive.threads import ArchiveThreads
from callrec.service import build_service
from callrec.settings import Settings
from tests.unit.test_settings import BASE

pytestmark = pytest.mark.timeout(20)

DEFAULT_WORKERS = 2
NAME = "6f1c8a52-4d1e-4f0e-9a57-0c7f6d9c1b2e"  # callrec names its recordings after uuids


@pytest.fixture
async def held_default_pool() -> AsyncIterator[None]:
    """asyncio's default pool, every thread of it busy until the test ends."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(DEFAULT_WORKERS))
    release = threading.Event()
    busy = [asyncio.create_task(asyncio.to_thread(release.wait)) for _ in range(DEFAULT_WORKERS)]
    await asyncio.sleep(0.05)
    try:
        yield
    finally:
        release.set()
        await asyncio.gather(*busy)


async def test_the_journal_writes_on_its_own_threads(
    held_default_pool: None, tmp_path: Path
) -> None:
    threads = ArchiveThreads()
    try:
        journal = Journal(tmp_path / "j", run_blocking=threads.run)
        await asyncio.wait_for(journal.append({"op": "call", "id": "x", "fields": {}}), 5)
        assert journal.read() == [{"op": "call", "id": "x", "fields": {}}]
        # the same write in the shared pool waits for it (what the archive's threads avoid)
        shared = Journal(tmp_path / "k")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(shared.append({"op": "call", "id": "y", "fields": {}}), 0.5)
    finally:
        await threads.close()


async def test_a_recording_is_copied_from_the_spool_on_them(
    held_default_pool: None, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / f"{NAME}.wav").write_bytes(b"RIFF" + bytes(4000))
    threads = ArchiveThreads()
    try:
        spool = SpoolRecordings(spool_dir, run_blocking=threads.run)
        dest = tmp_path / "copy.wav"
        assert await asyncio.wait_for(spool.download_recording(NAME, dest), 5) == 4004
        assert dest.read_bytes() == (spool_dir / f"{NAME}.wav").read_bytes()
        await asyncio.wait_for(spool.delete_stored_recording(NAME), 5)
        assert not (spool_dir / f"{NAME}.wav").exists()
    finally:
        await threads.close()


CALL_ID: contextvars.ContextVar[str] = contextvars.ContextVar("call_id")


async def test_the_callers_context_goes_along_and_close_lets_work_finish() -> None:
    threads = ArchiveThreads(workers=1)
    CALL_ID.set("call-1")
    assert await threads.run(CALL_ID.get) == "call-1"
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.3)
        finished.set()

    work = asyncio.create_task(threads.run(slow))
    await asyncio.sleep(0.05)
    await threads.close()
    assert finished.is_set(), "close waited for the work under way"
    await work
    with pytest.raises(RuntimeError, match="closed"):
        await threads.run(CALL_ID.get)


def test_the_service_gives_its_file_work_the_same_threads(
    tmp_path: Path,
) -> None:
    env = {**BASE, "CALLREC_ASTERISK_RECORDINGS_DIR": str(tmp_path)}
    svc = build_service(Settings.from_env(env))  # builds, no I/O
    spool = svc.archiver.spool
    assert isinstance(spool, SpoolRecordings)
    assert svc.store.journal._run_blocking == svc.threads.run
    assert svc.archiver._run_blocking == svc.threads.run
    assert spool._run_blocking == svc.threads.run
    # and the ARI client's downloads (where callrec does not see the spool) write on them
    assert svc.ari._run_blocking == svc.threads.run
