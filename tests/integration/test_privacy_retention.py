"""Retention on the real database and archive: the 12-calendar-month boundary, holds, the
receipt, and crash safety (interrupted runs leave no orphan files and are finished later)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from callrec.privacy import purge
from callrec.privacy.errors import Conflict
from callrec.privacy.roles import Actor
from callrec.privacy.service import run_retention
from tests.dbfixtures import ScratchDatabase
from tests.integration.test_privacy_support import KEY, World, world

pytestmark = pytest.mark.db

NOW = datetime(2027, 3, 31, 10, 0, tzinfo=UTC)
CUTOFF = datetime(2026, 3, 31, 10, 0, tzinfo=UTC)  # 12 calendar months before NOW


async def _receipt(w: World) -> dict[str, Any]:
    details = json.loads((await w.audit("retention"))[-1]["details"])
    assert isinstance(details, dict)
    return details


async def test_boundary_holds_and_receipt(db: ScratchDatabase, tmp_path: Path) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        just_over = await w.call(ended_at=CUTOFF - timedelta(microseconds=1))
        exactly = await w.call(ended_at=CUTOFF)
        inside = await w.call(ended_at=CUTOFF + timedelta(seconds=1))
        old = await w.call("0509999999", ended_at=CUTOFF - timedelta(days=400))
        held_call = await w.call(ended_at=CUTOFF - timedelta(days=30))
        held_by_number = await w.call("+358 44 555 0101", ended_at=CUTOFF - timedelta(days=60))
        no_file_row = await w.call(ended_at=CUTOFF - timedelta(days=5), with_file=False)
        await w.service.add_hold(dpo, call_id=held_call, reason="complaint 7/2026")
        await w.service.add_hold(dpo, number="0445550101", reason="police request 3/2027")

        preview = await w.service.run_retention(dpo, dry_run=True, now=NOW)
        assert set(preview.purged) == {just_over, old, no_file_row}
        assert preview.held_skipped == 2 and len(await w.call_ids()) == 7

        report = await w.service.run_retention(dpo, now=NOW)
        assert report.cutoff == CUTOFF
        assert set(report.purged) == {just_over, old, no_file_row}
        assert report.held_skipped == 2
        assert report.oldest_remaining_ended_at == CUTOFF - timedelta(days=60)
        assert await w.call_ids() == {exactly, inside, held_call, held_by_number}
        assert len(w.wav_files()) == 4
        assert await w.orphans() == (set(), set())

        receipt = await _receipt(w)
        assert receipt["count"] == 3 and receipt["held_skipped"] == 2
        assert set(receipt["call_ids"]) == {str(just_over), str(old), str(no_file_row)}
        assert receipt["oldest_remaining_ended_at"] == (CUTOFF - timedelta(days=60)).isoformat()
        assert receipt["cutoff"] == CUTOFF.isoformat() and receipt["months"] == 12
        purges = await w.audit("purge")
        assert {i for r in purges for i in json.loads(r["details"])["call_ids"]["retention"]} \
            == {str(just_over), str(old), str(no_file_row)}

        # a second run has nothing to do, and says so
        again = await w.service.run_retention(dpo, now=NOW)
        assert again.purged == () and again.held_skipped == 2
        # released holds no longer protect
        for hold in await w.service.list_holds(dpo):
            await w.service.release_hold(dpo, hold.id, reason="case closed")
        final = await w.service.run_retention(dpo, now=NOW)
        assert set(final.purged) == {held_call, held_by_number}
        assert (await w.service.audit_verify(dpo)).ok


async def test_months_are_calendar_months_and_configurable(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    async with world(db, tmp_path, retention_months=1) as w:
        # 31 March minus one calendar month is 28 February (not 3 March)
        cutoff = datetime(2027, 2, 28, 10, 0, tzinfo=UTC)
        gone = await w.call(ended_at=cutoff - timedelta(seconds=1))
        kept = await w.call(ended_at=cutoff)
        report = await w.service.run_retention(Actor.system("retention"), now=NOW)
        assert report.months == 1 and report.cutoff == cutoff
        assert report.purged == (gone,) and await w.call_ids() == {kept}
        assert (await w.audit("retention"))[-1]["actor"] == "system:retention"


async def test_daily_job_entry_point(db: ScratchDatabase, tmp_path: Path) -> None:
    async with world(db, tmp_path) as w:
        old = await w.call(ended_at=datetime.now(UTC) - timedelta(days=370))
        recent = await w.call(ended_at=datetime.now(UTC) - timedelta(days=300))
        # the whole run needs a single connection: a pool of one must not deadlock
        pool = await asyncpg.create_pool(db.app_dsn, min_size=1, max_size=1)
        try:
            report = await asyncio.wait_for(run_retention(pool, w.root, KEY), 30)
        finally:
            await pool.close()
        assert report.purged == (old,) and await w.call_ids() == {recent}
        assert report.audit_seq is not None


async def _old_calls(w: World, n: int) -> list[UUID]:
    return [await w.call(ended_at=CUTOFF - timedelta(days=1 + i)) for i in range(n)]


async def test_crash_after_the_file_step_then_rerun(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        reviewer = await w.user("rita", "reviewer")
        doomed = await _old_calls(w, 7)
        keeper = await w.call()
        real_delete = purge.delete_rows

        async def killed(*args: object) -> int:
            raise RuntimeError("killed between deleting files and deleting rows")

        monkeypatch.setattr(purge, "delete_rows", killed)
        with pytest.raises(RuntimeError, match="killed"):
            await w.service.run_retention(dpo, now=NOW, batch_size=3)
        # files of the first batch are gone, their rows still exist but are queued: nobody
        # sees them, and no row outside the queue points at a missing file
        assert len(w.wav_files()) == 8 - 3
        assert await w.orphans() == (set(), set())
        assert [c.call_id for c in await w.service.search_calls(reviewer)] == [keeper]

        monkeypatch.setattr(purge, "delete_rows", real_delete)
        report = await w.service.run_retention(dpo, now=NOW, batch_size=3)
        assert set(report.purged) == set(doomed) and report.resumed == 7
        assert await w.call_ids() == {keeper}
        assert await w.orphans() == (set(), set())
        assert len(w.wav_files()) == 1
        assert (await w.service.audit_verify(dpo)).ok


async def test_crash_during_the_file_step_then_rerun(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        doomed = await _old_calls(w, 5)
        real_remove = purge.remove_file
        calls = 0

        def dies_on_third(root: Path, relative: str) -> Path:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise RuntimeError("killed while removing files")
            return real_remove(root, relative)

        monkeypatch.setattr(purge, "remove_file", dies_on_third)
        with pytest.raises(RuntimeError):
            await w.service.run_retention(dpo, now=NOW)
        assert len(w.wav_files()) == 3 and len(await w.call_ids()) == 5
        assert await w.orphans() == (set(), set())
        # while the queue is unfinished, queued calls can be neither held nor disclosed
        with pytest.raises(Conflict):
            await w.service.add_hold(dpo, call_id=doomed[0], reason="too late")
        monkeypatch.setattr(purge, "remove_file", real_remove)
        report = await w.service.run_retention(dpo, now=NOW)
        assert set(report.purged) == set(doomed)
        assert w.wav_files() == set() and await w.call_ids() == set()


async def test_one_run_at_a_time(db: ScratchDatabase, tmp_path: Path) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        async with w.pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", 0x72657465)
            try:
                with pytest.raises(Conflict, match="in progress"):
                    await w.service.run_retention(dpo, now=NOW)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", 0x72657465)
        await w.service.run_retention(dpo, now=NOW)


async def _daily_run(db: ScratchDatabase, w: World, tmp_path: Path,
                     gone: set[UUID]) -> Any:
    """The service's own retention loop until exactly `gone` is deleted; its log lines."""
    from structlog.testing import capture_logs

    from callrec.service import _retention_loop, build_service
    from callrec.settings import Settings

    settings = Settings.from_env({
        "CALLREC_DATABASE_URL": db.app_dsn, "CALLREC_ARI_URL": "http://127.0.0.1:9",
        "CALLREC_ARI_USER": "x", "CALLREC_ARI_PASSWORD": "x",
        "CALLREC_ARCHIVE_DIR": str(w.root), "CALLREC_CONFIG": str(tmp_path / "r.toml"),
    })
    svc = build_service(settings)  # no I/O: only the retention loop runs below
    svc.retention_first_delay = 0.0
    before = await w.call_ids()
    receipts = len(await w.audit("retention"))
    with capture_logs() as logs:
        task = asyncio.create_task(_retention_loop(svc))
        try:
            deadline = asyncio.get_running_loop().time() + 20
            while not (len(await w.audit("retention")) > receipts or any(
                    e["event"] == "retention_run_failed" for e in logs)):
                assert asyncio.get_running_loop().time() < deadline, "retention did not run"
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert await w.call_ids() == before - gone
    assert svc.retention_runs.purged_total == len(gone)
    return logs


async def test_the_services_daily_run_needs_no_secret_key_without_number_holds(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a hold on a number needs the key (to match it): a service started without the
    key (the console then says what it cannot do) still deletes what is due."""
    monkeypatch.delenv("CALLREC_SECRET_KEY", raising=False)
    monkeypatch.delenv("CALLREC_SECRET_KEY_FILE", raising=False)
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        old = await w.call(ended_at=datetime.now(UTC) - timedelta(days=400))
        held = await w.call(ended_at=datetime.now(UTC) - timedelta(days=400))
        await w.call(ended_at=datetime.now(UTC) - timedelta(days=10))
        await w.service.add_hold(dpo, reason="complaint 12/2026", call_id=str(held))
        await _daily_run(db, w, tmp_path, {old})
        assert (await _receipt(w))["held_skipped"] == 1


async def test_the_services_daily_run_matches_number_holds_with_the_key(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLREC_SECRET_KEY", KEY.decode())
    monkeypatch.delenv("CALLREC_SECRET_KEY_FILE", raising=False)
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        old = await w.call("0409999999", ended_at=datetime.now(UTC) - timedelta(days=400))
        await w.call("0401234567", ended_at=datetime.now(UTC) - timedelta(days=400))
        await w.service.add_hold(dpo, reason="police request", number="040 123 4567")
        await _daily_run(db, w, tmp_path, {old})
        assert (await _receipt(w))["held_skipped"] == 1

        # the same without the key: nothing is deleted (no call can be told from the held
        # number's), and the run says why
        monkeypatch.delenv("CALLREC_SECRET_KEY")
        await w.call("0409999998", ended_at=datetime.now(UTC) - timedelta(days=400))
        logs = await _daily_run(db, w, tmp_path, set())
        assert any(e["event"] == "retention_run_failed" for e in logs)


async def test_a_file_that_cannot_be_removed_holds_up_no_other_deletion(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    """Once one such file failed the run, and every run after it, at the same first call:
    nothing more was ever deleted."""
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        old = CUTOFF - timedelta(days=30)
        blocked = await w.call(ended_at=old - timedelta(days=2))  # the oldest: queued first
        outside = await w.call(ended_at=old - timedelta(days=1))
        fine = [await w.call(ended_at=old + timedelta(minutes=i)) for i in range(3)]
        # and a row whose path leaves the archive
        owner = await w.owner()
        try:
            await owner.execute("UPDATE recordings SET path = '../elsewhere.wav'"
                                " WHERE call_id = $1", outside)
        finally:
            await owner.close()

        async with w.unremovable(blocked):
            report = await w.service.run_retention(dpo, now=NOW, batch_size=2)
        assert set(report.purged) == set(fine) and report.not_removed == 2
        assert await w.call_ids() == {blocked, outside}  # their rows stay, queued (hidden)
        async with w.pool.acquire() as conn:
            queued = {r["call_id"] for r in await conn.fetch("SELECT call_id FROM purge_queue")}
        assert queued == {blocked, outside}
        receipt = await _receipt(w)
        errors = {e["call_id"]: e["error"] for e in receipt["not_removed"]}
        assert set(errors) == {str(blocked), str(outside)}
        assert "directory" in errors[str(blocked)] and "outside" in errors[str(outside)]

        # fixed on disk (leaving the block above): the next run finishes it
        report = await w.service.run_retention(dpo, now=NOW)
        assert report.resumed == 2 and report.not_removed == 1
        async with w.pool.acquire() as conn:
            assert await conn.fetchval("SELECT array_agg(call_id) FROM purge_queue") == [outside]


async def test_a_batchs_removals_are_synced_once_per_folder_before_its_rows_go(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder fsync per file held the purge to the disk's pace (1,700 calls/s on a day's
    disk, under the 2,000 goal); once per folder and batch keeps each removal durable before
    the rows go."""
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        day = CUTOFF - timedelta(days=3)
        doomed = [await w.call(ended_at=day + timedelta(minutes=i)) for i in range(5)]
        events: list[str] = []
        real_sync, real_delete = purge.sync_folders, purge.delete_rows

        def sync(folders: set[Path]) -> None:
            events.append(f"sync {len(folders)}")
            real_sync(folders)

        async def delete(conn: Any, ids: Any) -> int:
            events.append(f"delete {len(ids)}")
            return await real_delete(conn, ids)

        monkeypatch.setattr(purge, "sync_folders", sync)
        monkeypatch.setattr(purge, "delete_rows", delete)
        report = await w.service.run_retention(dpo, now=NOW, batch_size=5)
        assert set(report.purged) == set(doomed) and w.wav_files() == set()
        assert events == ["sync 1", "delete 5"], "one folder synced, before the rows went"


async def test_an_open_access_request_keeps_its_numbers_calls_until_it_is_answered(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    # the answer shows what was held when the request was made: a run between the two once
    # deleted calls the requester was about to be given
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        asker = [await w.call("0401234567", ended_at=CUTOFF - timedelta(days=3)),
                 await w.call("+358 40 123 4567", ended_at=CUTOFF - timedelta(days=2))]
        other = await w.call("0409999999", ended_at=CUTOFF - timedelta(days=3))
        recent = await w.call("0401234567", ended_at=CUTOFF + timedelta(days=3))
        case = await w.service.open_access_request(
            dpo, number="040 123 4567", verified_by="dpo", method="passport at the desk")
        preview = await w.service.run_retention(dpo, dry_run=True, now=NOW)
        assert set(preview.purged) == {other} and preview.awaiting_access == 2
        report = await w.service.run_retention(dpo, now=NOW)
        assert set(report.purged) == {other} and report.awaiting_access == 2
        assert report.held_skipped == 0
        receipt = await _receipt(w)
        assert receipt["awaiting_access_skipped"] == 2
        assert set(receipt["awaiting_access_call_ids"]) == {str(c) for c in asker}
        assert await w.call_ids() == {*asker, recent}

        result = await w.service.export_access(dpo, case.id, tmp_path / "case.zip")
        assert result.calls == 3  # the old ones too
        after = await w.service.run_retention(dpo, now=NOW)
        assert set(after.purged) == set(asker) and after.awaiting_access == 0
        assert await w.call_ids() == {recent}
        assert await w.orphans() == (set(), set())


async def test_a_batch_is_claimed_from_the_queue_in_index_order(db: ScratchDatabase) -> None:
    """Every batch read and sorted the whole queue (a retention run of 20,000 calls spent two
    thirds of its time there, under the bench's 2,000 calls/s): the claim reads the oldest
    rows in the order of an index, whatever the queue's size."""
    conn = await asyncpg.connect(db.owner_dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                """INSERT INTO calls (id, caller_number, service_number, started_at, ended_at)
                   SELECT gen_random_uuid(), '0401234567', '0103808000', t, t
                   FROM generate_series(1, 20000) AS s(i),
                        LATERAL (SELECT now() - make_interval(days => 400, secs => i)) AS x(t)""")
            await conn.execute(
                """INSERT INTO purge_queue (call_id, path, cause, queued_at)
                   SELECT id, NULL, 'retention', ended_at FROM calls""")
            # as in a run: the queue filled just now, not yet analysed
            plan = "\n".join(r[0] for r in await conn.fetch(
                "EXPLAIN " + purge.CLAIM_BATCH, None, 100, []))
            assert "purge_queue_order_idx" in plan, plan
            assert "Sort" not in plan, plan
            claimed = await conn.fetch(purge.CLAIM_BATCH, None, 3, [])
            oldest = await conn.fetch(
                "SELECT call_id FROM purge_queue ORDER BY queued_at, call_id LIMIT 3")
            assert [r["call_id"] for r in claimed] == [r["call_id"] for r in oldest]
    finally:
        await conn.close()
