"""The local journal's file handling: a write cut short (a crash, a full disk) loses neither
the operations around it nor itself, and never stops the store."""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from callrec.archive import journal as journal_module
from callrec.archive.journal import Journal, split_lines
from callrec.archive.store import CallStore
from tests.polling import eventually

pytestmark = pytest.mark.timeout(20)

# a port nothing listens on: the store journals every write
DEAD_DSN = "postgresql://callrec_app@127.0.0.1:9/callrec"


def op(call_id: str, **fields: Any) -> dict[str, Any]:
    return {"op": "call", "id": call_id, "fields": fields}


def line(o: dict[str, Any]) -> bytes:
    return json.dumps(o).encode() + b"\n"


A, B, C = op("a", state="notice"), op("b", caller_number="0401234567"), op("c", state="done")
TORN = line(B)[:25]  # a write cut short


@pytest.mark.parametrize(
    ("raw", "settled", "ops", "torn"),
    [
        (line(A) + line(C), False, [A, C], []),
        (line(A) + TORN + b"\n" + line(C), False, [A, C], [TORN]),
        # an unfinished last line may be an append under way, unless none can be
        (line(A) + TORN, False, [A], []),
        (line(A) + TORN, True, [A], [TORN]),
        (line(A) + line(C)[:-1], False, [A, C], []),  # whole but for its newline
        (line(A) + b"[1, 2]\n", True, [A], [b"[1, 2]"]),  # JSON, not an operation
        (line(A) + '{"caller_name": "Äi'.encode()[:-1] + b"\n", True, [A],
         ['{"caller_name": "Äi'.encode()[:-1]]),  # UTF-8 cut mid-character
        (b"", True, [], []),
        (b"\n\n", True, [], []),
    ],
)
def test_lines_are_operations_or_torn(
    raw: bytes, settled: bool, ops: list[dict[str, Any]], torn: list[bytes]
) -> None:
    assert split_lines(raw, settled=settled) == (ops, torn)


async def test_an_append_after_a_torn_tail_is_not_glued_to_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.path.write_bytes(line(A) + TORN)
    await journal.append(C)
    assert journal.read() == [A, C]
    assert journal.backlog() == 2
    await journal.drop_first(1)
    assert journal.read() == [C]
    assert journal.backlog() == 1
    # the torn line is kept for an operator, word for word
    rejected = [json.loads(x) for x in journal.rejected_path.read_text().splitlines()]
    assert rejected == [{"op": "torn", "text": TORN.decode()}]


async def test_recover_sets_torn_lines_aside_and_keeps_the_rest(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.path.write_bytes(line(A) + TORN + b"\n" + line(C) + TORN)
    assert await journal.recover() == 2
    assert journal.path.read_bytes() == b"".join(
        json.dumps(o, separators=(",", ":")).encode() + b"\n" for o in (A, C))
    assert journal.backlog() == 2
    assert len(journal.rejected_path.read_text().splitlines()) == 2
    assert await journal.recover() == 0  # nothing more to move: the file is left alone


async def test_a_write_the_disk_cuts_short_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path)
    await journal.append(A)
    real_write = os.write
    room = [10]  # bytes left on the "disk"

    def filling_disk(fd: int, data: bytes | memoryview) -> int:
        # what the kernel does as a disk fills: a short write, then ENOSPC
        if room[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = real_write(fd, bytes(data[: room[0]]))
        room[0] -= written
        return written

    monkeypatch.setattr(journal_module.os, "write", filling_disk)
    with pytest.raises(OSError, match="No space"):
        await journal.append(B)
    assert journal.backlog() == 1  # B is not counted: its caller was told it failed
    room[0] = 1 << 20  # space again, handed out in pieces
    await journal.append(C)
    assert journal.read() == [A, C]
    await journal.drop_first(2)
    assert journal.backlog() == 0
    assert not journal.path.exists()
    rejected = [json.loads(x) for x in journal.rejected_path.read_text().splitlines()]
    written = json.dumps(B, separators=(",", ":"))  # as the journal writes it
    assert rejected == [{"op": "torn", "text": written[:10]}]


async def test_short_writes_are_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    monkeypatch.setattr(journal_module.os, "write",
                        lambda fd, data: real_write(fd, bytes(data[:7])))
    journal = Journal(tmp_path)
    await journal.append(A)
    await journal.append(B)
    assert journal.read() == [A, B]


async def test_any_text_a_write_holds_is_journalled(tmp_path: Path) -> None:
    # a lone surrogate cannot be encoded as UTF-8: it once made the write fail, and the
    # call's row was lost; the database may still refuse it, then it is set aside
    odd = op("d", caller_name="x\ud800y", service_number="Äänekoski")
    journal = Journal(tmp_path)
    await journal.append(odd)
    assert journal.path.read_bytes().isascii()
    assert journal.read() == [odd]


async def _responsive(seconds: float) -> float:
    """How long a sleep of `seconds` took: far longer if the event loop is held."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(seconds)
    return loop.time() - start


async def test_a_store_started_on_a_torn_journal_keeps_running(tmp_path: Path) -> None:
    # A crash during the very first journalled write: once, the drainer spun on it for ever.
    (tmp_path / "journal.jsonl").write_bytes(TORN)
    async with CallStore(DEAD_DSN, tmp_path, retry_seconds=0.1) as store:
        assert await _responsive(0.2) < 1.0
        assert store.journal_backlog == 0
        await store.record_call(
            uuid.UUID(int=7), service_number="0103808000",
            started_at=dt.datetime(2026, 11, 30, 9, tzinfo=dt.UTC), state="notice")
        assert store.journal_backlog == 1
    assert json.loads(store.journal.rejected_path.read_text()) == {
        "op": "torn", "text": TORN.decode()}


async def test_a_wrong_count_does_not_spin_the_drainer(tmp_path: Path) -> None:
    async with CallStore(DEAD_DSN, tmp_path, retry_seconds=0.1) as store:
        store.journal._count = 3  # counted, but nothing in the file
        store._wake.set()
        assert await _responsive(0.2) < 1.0
        assert store.journal_backlog == 0


async def test_the_journal_is_not_read_while_the_database_is_away(tmp_path: Path) -> None:
    """Read at every retry, on the event loop, a journal grown during an outage (12 MB at
    50,000 writes) stalled the calls for half a second a second."""
    async with CallStore(DEAD_DSN, tmp_path, retry_seconds=0.05) as store:
        for n in range(3):
            await store.record_call(uuid.UUID(int=n + 1), service_number="0103808000")
        reads = 0
        real = store.journal.read

        def counting() -> list[dict[str, Any]]:
            nonlocal reads
            reads += 1
            return real()

        store.journal.read = counting  # type: ignore[method-assign]
        attempts = 0
        real_connect = store._connect

        async def connect(**kw: Any) -> Any:
            nonlocal attempts
            attempts += 1
            return await real_connect(**kw)

        store._connect = connect  # type: ignore[method-assign]
        store._wake.set()

        async def retried() -> bool:
            return attempts >= 5  # five retries of the drain, each failing to connect

        await eventually(retried, timeout=10, interval=0.02, what="five drain attempts")
        assert reads == 0 and store.journal_backlog == 3


async def test_an_append_whose_caller_is_cancelled_is_written_whole_before_a_rewrite(
    tmp_path: Path,
) -> None:
    """The cancelled caller let go of the lock while its thread still wrote: the drain's
    rewrite of the file then replaced it under the append, and that operation was lost."""
    slow = threading.Event()

    async def run_blocking(fn: Any, *args: Any) -> Any:
        def later() -> Any:
            if fn.__name__ == "_append_sync" and not slow.is_set():
                slow.set()
                time.sleep(0.3)  # a disk slow to take it
            return fn(*args)

        return await asyncio.to_thread(later)

    journal = Journal(tmp_path, run_blocking=run_blocking)
    slow.set()  # the first two go at once
    await journal.append(op("a"))
    await journal.append(op("b"))
    slow.clear()
    cut = asyncio.create_task(journal.append(op("c")))
    await asyncio.sleep(0.05)  # its thread is writing
    cut.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cut
    await journal.drop_first(1)  # "a" reached the database
    await journal.settle()
    assert [o["id"] for o in journal.read()] == ["b", "c"]
    assert journal.backlog() == 2


async def test_the_journal_file_coming_and_going_is_made_durable_in_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a file's fsync does not cover its name: a new journal lost in a power cut takes its
    # writes with it, and one coming back after it was drained writes them a second time
    synced: list[Path] = []
    monkeypatch.setattr(journal_module, "sync_folder", synced.append)
    journal = Journal(tmp_path / "journal")
    await journal.append(A)
    assert synced == [tmp_path / "journal"]
    await journal.append(B)
    assert synced == [tmp_path / "journal"]  # there already: the file's own fsync is enough
    await journal.drop_first(1)  # rewritten: a new file renamed over the old one
    assert synced == [tmp_path / "journal"] * 2
    await journal.drop_first(1)  # drained: removed
    assert not journal.path.exists()
    assert synced == [tmp_path / "journal"] * 3
    await journal.reject(C)
    assert synced == [tmp_path / "journal"] * 4
    await journal.reject(C)
    assert synced == [tmp_path / "journal"] * 4
    assert journal.rejected_path.read_bytes().count(b"\n") == 2


def test_a_folder_sync_reaches_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from callrec.archive import durable

    seen: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        seen.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(durable.os, "fsync", fsync)
    durable.sync_folder(tmp_path)
    assert seen == [tmp_path.stat().st_ino]
    not_a_folder = tmp_path / "journal.jsonl"
    not_a_folder.touch()
    with pytest.raises(NotADirectoryError):  # a wrong path is an error, not a silent no-op
        durable.sync_folder(not_a_folder)


def test_a_second_writer_of_one_journal_is_refused_until_the_first_lets_go(
    tmp_path: Path,
) -> None:
    # its lock against a rewrite under an append is per process: two services draining one
    # file would lose each other's appends
    from callrec.archive.errors import JournalInUse

    first, second = Journal(tmp_path / "journal"), Journal(tmp_path / "journal")
    first.claim()
    first.claim()  # a second claim of the holder's is a no-op
    with pytest.raises(JournalInUse) as refused:
        second.claim()
    assert f"pid {os.getpid()}" in refused.value.message
    assert "CALLREC_JOURNAL_DIR" in refused.value.message
    first.release()
    second.claim()
    second.release()
    second.release()  # nothing held: nothing to do


async def test_a_store_that_cannot_claim_its_journal_does_not_start(tmp_path: Path) -> None:
    from callrec.archive.errors import JournalInUse

    holder = Journal(tmp_path / "journal")
    holder.claim()
    store = CallStore(DEAD_DSN, tmp_path / "journal")
    with pytest.raises(JournalInUse):
        await store.start()
    holder.release()
    store = CallStore(DEAD_DSN, tmp_path / "journal", retry_seconds=0.05)
    await store.start()
    try:
        with pytest.raises(JournalInUse):
            Journal(tmp_path / "journal").claim()
    finally:
        await store.close()
    Journal(tmp_path / "journal").claim()  # closed: let go
