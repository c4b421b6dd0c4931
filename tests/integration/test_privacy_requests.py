"""Access and erasure requests on the real database and archive (§11)."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import uuid
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import soundfile

from callrec.privacy import purge
from callrec.privacy.cases import Case
from callrec.privacy.errors import Conflict, Invalid, NotFound
from callrec.privacy.holds import Hold
from callrec.privacy.numbers import NumberHasher
from callrec.privacy.retention import RetentionReport
from callrec.privacy.service import ExportResult
from tests.dbfixtures import ScratchDatabase
from tests.integration.test_privacy_support import KEY, World, world
from tests.polling import eventually

pytestmark = pytest.mark.db

NUMBER = "040 123 4567"
DIGITS = "401234567"  # what any spelling of NUMBER contains


async def _tables_mentioning(w: World, needle: str) -> dict[str, int]:
    """Every table (as the owner sees it) with rows whose text contains needle."""
    conn = await w.owner()
    try:
        tables = [r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        found = {}
        for table in tables:
            n = await conn.fetchval(
                f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE $1',  # noqa: S608
                f"%{needle}%",
            )
            if n:
                found[table] = n
        return found
    finally:
        await conn.close()


async def test_access_request_export(db: ScratchDatabase, tmp_path: Path) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        await w.user("desk", "privacy")
        mine = [
            await w.call("0401234567", freq=440),
            await w.call("+358401234567", freq=660, service_number="0103808001"),
            await w.call("00358401234567", freq=880),
            # caller ID with separators: the same number (once left out of the export)
            await w.call("040-123 4567", freq=1000),
        ]
        missing = await w.call("0401234567", with_file=False)
        others = [await w.call("0401234568"), await w.call("+46401234567")]
        case = await w.service.open_access_request(
            dpo, number=NUMBER, verified_by="desk", method="passport checked at the desk",
            received="2026-11-25",
        )
        assert case.due_on == date(2026, 12, 2) and case.status == "open"

        out = tmp_path / "case.zip"
        result = await w.service.export_access(dpo, case.id, out)
        assert (result.calls, result.files, result.missing) == (5, 4, (str(missing),))
        assert sorted(p.name for p in out.parent.iterdir()) == ["archive", "case.zip"]

        with zipfile.ZipFile(out) as z:
            names = set(z.namelist())
            manifest = json.loads(z.read("manifest.json"))
            meta = json.loads(z.read("metadata.json"))["calls"]
            rows = list(csv.DictReader(io.StringIO(z.read("metadata.csv").decode())))
            assert names == {"manifest.json", "metadata.json", "metadata.csv",
                             *(f"recordings/{c}.wav" for c in mine)}
            for f in manifest["files"]:  # every listed file matches its hash
                assert hashlib.sha256(z.read(f["name"])).hexdigest() == f["sha256"]
            assert {f["name"] for f in manifest["files"]} == names - {"manifest.json"}
            for c in mine:
                data, rate = soundfile.read(io.BytesIO(z.read(f"recordings/{c}.wav")),
                                            dtype="int16")
                assert rate == 8000 and np.array_equal(data, w.audio[c])
        assert manifest["missing_recordings"] == [str(missing)] and manifest["case"] == case.id
        ids = {m["call_id"] for m in meta}
        assert ids == {str(c) for c in [*mine, missing]}
        assert not ids & {str(c) for c in others}
        first = next(m for m in meta if m["call_id"] == str(mine[1]))
        assert first["caller_number"] == "+358401234567"
        assert first["service_number"] == "0103808001" and first["agent_name"] == "Agent Anna"
        assert first["notice_version"] == "notice-fi-v3" and first["ended_at"]
        assert {r["call_id"] for r in rows} == ids
        assert next(r for r in rows if r["call_id"] == str(missing))["recording_status"] == \
            "missing"

        (listed,) = [c for c in await w.service.list_requests(dpo, include_closed=True)]
        assert listed.status == "answered" and listed.result["calls"] == 5
        with pytest.raises(Conflict):
            await w.service.export_access(dpo, case.id, tmp_path / "again.zip")
        with pytest.raises(NotFound):
            await w.service.export_access(dpo, 999, tmp_path / "none.zip")
        # the answered case no longer holds the number; the audit never did
        assert "privacy_requests" not in await _tables_mentioning(w, DIGITS)
        assert "audit_log" not in await _tables_mentioning(w, DIGITS)
        export = (await w.audit("export"))[-1]
        assert json.loads(export["details"])["number"] == \
            "number:" + NumberHasher(KEY).digest("+358401234567")


async def test_requests_list_overdue_first_and_bad_input(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        today = datetime.now(w.service.timezone).date()  # the clinic's calendar
        fresh = await w.service.open_access_request(
            dpo, number="0501111111", verified_by="dpo", method="letter")
        late = await w.service.open_access_request(
            dpo, number="0502222222", verified_by="dpo", method="letter",
            received=(today - timedelta(days=10)).isoformat())
        cases = await w.service.list_requests(dpo)
        assert [c.id for c in cases] == [late.id, fresh.id]
        assert cases[0].overdue and not cases[1].overdue
        for kw in ({"number": "not a number"}, {"received": "31.12.2026"},
                   {"received": (today + timedelta(days=1)).isoformat()},
                   {"verified_by": "ghost"}, {"method": "  "}):
            args = {"number": "0501111111", "verified_by": "dpo", "method": "letter", **kw}
            with pytest.raises(Invalid):
                await w.service.open_access_request(dpo, **args)


async def test_request_dates_are_days_in_the_clinic(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    # 25 hours apart: these two zones never share a date
    east, west = ZoneInfo("Pacific/Kiritimati"), ZoneInfo("Pacific/Pago_Pago")
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")

        async def request(number: str, tz: ZoneInfo, **kw: str) -> Any:
            w.service.timezone = tz
            return await w.service.open_access_request(
                dpo, number=number, verified_by="dpo", method="letter", **kw)

        a = await request("0501111111", east)
        b = await request("0502222222", west)
        assert a.received_on == datetime.now(east).date()
        assert b.received_on == datetime.now(west).date()
        assert a.received_on > b.received_on and a.due_on == a.received_on + timedelta(days=7)
        # the west's tomorrow is no later than the east's today: a future date only there
        tomorrow_west = (datetime.now(west).date() + timedelta(days=1)).isoformat()
        with pytest.raises(Invalid, match="future"):
            await request("0503333333", west, received=tomorrow_west)
        assert (await request("0503333333", east, received=tomorrow_west)).status == "open"


async def test_erasure_without_hold_leaves_no_trace_of_the_number(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        reviewer = await w.user("rita", "reviewer")
        mine = [await w.call("0401234567"), await w.call("+358401234567"),
                await w.call("(040) 123-4567")]  # separators: once neither found nor erased
        other = await w.call("0407654321")
        found = await w.service.search_calls(reviewer, number=NUMBER)
        assert sorted(str(c.call_id) for c in found) == sorted(str(c) for c in mine)
        searched = json.loads((await w.audit("search"))[-1]["details"])
        assert sorted(searched["calls"]) == sorted(str(c) for c in mine)
        access = await w.service.open_access_request(
            dpo, number=NUMBER, verified_by="dpo", method="letter")
        # identity may be verified by any active colleague, e.g. at the front desk
        case = await w.service.erase_number(dpo, number=NUMBER, verified_by="rita",
                                            method="signed letter and ID")
        assert case.status == "erased" and case.closed_at is not None
        assert case.verified_by == "rita" and case.kind == "erasure"
        assert sorted(case.result["erased_calls"]) == sorted(str(c) for c in mine)
        assert await w.call_ids() == {other}
        assert w.wav_files() == {p for p in w.wav_files() if str(other) in str(p)}
        assert len(w.wav_files()) == 1
        assert await _tables_mentioning(w, DIGITS) == {}
        assert await w.orphans() == (set(), set())
        # the earlier access case is answered all the same, with what is held: nothing (it
        # once stayed open and overdue for good, its export refused)
        late = await w.service.export_access(dpo, access.id, tmp_path / "late.zip")
        assert (late.calls, late.files) == (0, 0)
        with zipfile.ZipFile(tmp_path / "late.zip") as z:
            assert "erased on request" in json.loads(z.read("manifest.json"))["note"]
        (answered,) = [c for c in await w.service.list_requests(dpo, include_closed=True)
                       if c.id == access.id]
        assert answered.status == "answered" and not answered.overdue
        assert await _tables_mentioning(w, DIGITS) == {}
        assert (await w.service.audit_verify(dpo)).ok


async def test_an_erasure_that_keeps_held_calls_keeps_the_access_case_answerable(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        held, gone = await w.call("0401234567"), await w.call("0401234567")
        await w.service.add_hold(dpo, reason="police request 5500/R/1", call_id=str(held))
        access = await w.service.open_access_request(
            dpo, number=NUMBER, verified_by="dpo", method="letter")
        case = await w.service.erase_number(dpo, number=NUMBER, verified_by="dpo",
                                            method="letter")
        assert case.status == "partially_refused"
        assert await w.call_ids() == {held}
        result = await w.service.export_access(dpo, access.id, tmp_path / "access.zip")
        assert (result.calls, result.files) == (1, 1), "the held call is the person's data"
        assert gone not in await w.call_ids()


async def test_an_erasure_with_nothing_to_erase_clears_the_number_from_open_cases(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        await w.service.open_access_request(dpo, number=NUMBER, verified_by="dpo",
                                            method="letter")
        case = await w.service.erase_number(dpo, number=NUMBER, verified_by="dpo",
                                            method="letter")
        assert case.status == "erased"
        assert await _tables_mentioning(w, DIGITS) == {}


async def test_erasure_refused_by_hold_and_by_recorded_ground(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        held = await w.call("0401234567")
        await w.call("0401234567")  # not held: erased
        hold = await w.service.add_hold(dpo, call_id=held, reason="insurance claim 5/2026")
        partial = await w.service.erase_number(dpo, number=NUMBER, verified_by="dpo",
                                               method="letter")
        assert partial.status == "partially_refused"
        assert partial.refusal_reason == f"legal hold: #{hold.id} insurance claim 5/2026"
        assert partial.result["held_calls"] == [str(held)]
        assert await w.call_ids() == {held}

        await w.service.add_hold(dpo, number=NUMBER, reason="police request 9/2026")
        again = await w.service.erase_number(dpo, number="+358401234567", verified_by="dpo",
                                             method="letter")
        assert again.status == "refused"
        assert "police request 9/2026" in (again.refusal_reason or "")
        assert await w.call_ids() == {held} and len(w.wav_files()) == 1

        other = await w.call("0409999999")
        ground = await w.service.erase_number(
            dpo, number="0409999999", verified_by="dpo", method="letter",
            refuse_ground="needed to defend a pending legal claim")
        assert ground.status == "refused"
        assert ground.refusal_reason == "needed to defend a pending legal claim"
        assert other in await w.call_ids()
        listed = {c.id: c for c in await w.service.list_requests(dpo, include_closed=True)}
        assert listed[again.id].refusal_reason == again.refusal_reason
        refused = await w.audit("erase_refused")
        assert len(refused) == 3 and all(DIGITS not in r["target"] for r in refused)


async def test_concurrent_purge_and_export_of_the_same_calls(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        old = datetime.now(UTC) - timedelta(days=400)
        for round_ in range(4):
            calls = [await w.call("0401234567", ended_at=old, seconds=3.0) for _ in range(5)]
            case = await w.service.open_access_request(
                dpo, number=NUMBER, verified_by="dpo", method="letter")
            out = tmp_path / f"race{round_}.zip"
            # an erasure of the number, not retention: retention keeps a number's calls while
            # its access request is open, so only an erasure can race the export now
            jobs = [w.service.export_access(dpo, case.id, out),
                    w.service.erase_number(dpo, number=NUMBER, verified_by="dpo",
                                           method="letter")]
            if round_ % 2:  # let each side start first in turn
                jobs.reverse()
            done = await asyncio.gather(*jobs, return_exceptions=True)
            export, erasure = done if round_ % 2 == 0 else done[::-1]
            assert isinstance(erasure, Case), erasure
            assert isinstance(export, ExportResult), export
            # either the export saw all of them whole, or none of them: never a partial call
            assert export.calls in (0, 5) and export.missing == ()
            with zipfile.ZipFile(out) as z:
                manifest = json.loads(z.read("manifest.json"))
                for f in manifest["files"]:
                    assert hashlib.sha256(z.read(f["name"])).hexdigest() == f["sha256"]
                wavs = [n for n in z.namelist() if n.endswith(".wav")]
                assert len(wavs) == export.files == export.calls
            assert set(erasure.result["erased_calls"]) == {str(c) for c in calls}
            assert not set(calls) & await w.call_ids()
            assert await w.orphans() == (set(), set())


@pytest.mark.parametrize("other", ["erasure", "retention", "number hold"])
async def test_an_export_and_another_lock_on_the_same_calls_do_not_deadlock(
    db: ScratchDatabase, tmp_path: Path, other: str
) -> None:
    """Whatever locks several calls locks them in one order (by id). Before, the export took
    them by start time then id, an erasure by start time alone (calls that started together:
    in scan order), a number hold in scan order, a retention run by end time (calls that
    overlapped: another order).
    Once both waited on a call in the middle, each then wanted one the other held
    (PostgreSQL's DeadlockDetectedError, seen once in a full test run)."""
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        old = datetime.now(UTC) - timedelta(days=400)
        ids = sorted(uuid.uuid4() for _ in range(5))
        if other != "retention":
            # started together, stored (so scanned) in the reverse of id order
            for call_id in reversed(ids):
                await w.call("0401234567", ended_at=old, call_id=call_id)
        else:
            # started in id order, ended in the reverse: each call outlasted the next one
            for k, call_id in enumerate(ids):
                await w.call("0401234567", ended_at=old - timedelta(seconds=k),
                             seconds=2 * (5 - k) + 1, call_id=call_id)
        case = await w.service.open_access_request(dpo, number=NUMBER, verified_by="dpo",
                                                   method="letter")
        out = tmp_path / "overlapping.zip"
        rival = {
            "erasure": lambda: w.service.erase_number(dpo, number=NUMBER, verified_by="dpo",
                                                      method="letter"),
            "retention": lambda: w.service.run_retention(dpo),
            "number hold": lambda: w.service.add_hold(dpo, reason="dispute", number=NUMBER),
        }[other]()
        blocker = await w.owner()
        try:
            async with blocker.transaction():
                await blocker.execute("SELECT 1 FROM calls WHERE id = $1 FOR UPDATE", ids[2])
                jobs = asyncio.gather(w.service.export_access(dpo, case.id, out), rival,
                                      return_exceptions=True)

                async def both_wait_on_a_row() -> bool:
                    # pg_locks, not pg_stat_activity: the owner does not see the app
                    # role's sessions' wait events
                    waiting = await blocker.fetchval(
                        "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted")
                    return bool(waiting == 2)

                await eventually(both_wait_on_a_row, what="export and rival both waiting")
            export, other_result = await asyncio.wait_for(jobs, 30)
        finally:
            await blocker.close()
        assert isinstance(export, ExportResult), export
        assert export.missing == ()
        if other == "number hold":
            assert isinstance(other_result, Hold), other_result
            assert other_result.by_number and other_result.released_at is None
            assert export.calls == 5 and await w.call_ids() == set(ids)
        elif other == "erasure":
            assert isinstance(other_result, Case), other_result
            assert export.calls in (0, 5)
            assert set(other_result.result["erased_calls"]) == {str(i) for i in ids}
            assert await w.call_ids() == set()
        else:
            # the open request keeps its number's calls from retention until answered: the
            # run either came first and kept them, or came after the answer and took them
            assert isinstance(other_result, RetentionReport), other_result
            assert export.calls == 5
            if other_result.awaiting_access:
                assert other_result.awaiting_access == 5 and other_result.purged == ()
                assert await w.call_ids() == set(ids)
            else:
                assert set(other_result.purged) == set(ids)
                assert await w.call_ids() == set()
        assert await w.orphans() == (set(), set())


async def test_erasure_skips_a_call_still_in_progress(db: ScratchDatabase, tmp_path: Path) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        done = await w.call("0401234567")
        ongoing = await w.call("0401234567")
        conn = await w.owner()
        try:
            await conn.execute("UPDATE calls SET ended_at = NULL WHERE id = $1", ongoing)
        finally:
            await conn.close()
        case = await w.service.erase_number(dpo, number=NUMBER, verified_by="dpo",
                                            method="letter")
        assert case.status == "partially_refused"
        assert "1 call(s) still in progress" in (case.refusal_reason or "")
        assert case.result["erased_calls"] == [str(done)]
        assert await w.call_ids() == {ongoing}


async def _queue_by_retention(w: World, call_ids: list[Any]) -> None:
    """What an interrupted retention run leaves: the calls queued, not yet deleted."""
    async with w.pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM calls WHERE id = ANY($1::uuid[]) FOR UPDATE",
                           call_ids)
        await purge.enqueue(conn, call_ids, "retention")


async def test_an_erasure_meeting_calls_queued_by_another_run_is_still_closed(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    # Its calls kept the other run's (empty) case: its own part of the queue was empty, so
    # the case stayed "erasing" for ever, shown open and overdue.
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        queued, fresh = await w.call("0401234567"), await w.call("0401234567")
        await _queue_by_retention(w, [queued])
        case = await w.service.erase_number(dpo, number=NUMBER, verified_by="dpo",
                                            method="letter")
        assert case.status == "erased"
        assert sorted(case.result["erased_calls"]) == sorted(str(c) for c in (queued, fresh))
        assert await w.call_ids() == set()
        assert await w.orphans() == (set(), set())


async def test_a_number_hold_is_refused_while_the_numbers_calls_are_being_deleted(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    # as a hold on one such call is: accepted, it would not have kept them
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        queued = await w.call("0401234567")
        await _queue_by_retention(w, [queued])
        with pytest.raises(Conflict, match="being deleted"):
            await w.service.add_hold(dpo, number=NUMBER, reason="police request 9/2026")
        assert await w.service.list_holds(dpo) == []


async def test_an_erasure_while_a_deletion_batch_runs_waits_for_it_without_deadlock(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch locks its queue rows, then the calls; the erasure locked the calls, then
    the queue rows: PostgreSQL aborted one of them."""
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        calls = [await w.call("0401234567"), await w.call("0401234567")]
        await _queue_by_retention(w, calls)
        go, deleting = asyncio.Event(), asyncio.Event()
        real = purge.delete_rows

        async def held_up(conn: Any, ids: Any) -> int:
            deleting.set()
            await go.wait()
            return await real(conn, ids)

        monkeypatch.setattr(purge, "delete_rows", held_up)

        async def batch() -> Any:
            async with w.pool.acquire() as conn:
                return await purge.finish(conn, w.root, actor="system:retention")

        running = asyncio.create_task(batch())
        await asyncio.wait_for(deleting.wait(), 10)
        erasing = asyncio.create_task(w.service.erase_number(
            dpo, number=NUMBER, verified_by="dpo", method="letter"))

        async def erasure_waits_on_a_lock() -> bool:
            async with w.pool.acquire() as conn:
                waiting: int = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'")
            return waiting >= 1

        # the two meet: the erasure waits on a lock the batch holds (with the old lock order
        # the batch's delete then waited on the erasure's, and PostgreSQL aborted one)
        await eventually(erasure_waits_on_a_lock, timeout=10, interval=0.05,
                         what="the erasure waiting on the batch")
        await asyncio.sleep(1.2)  # past PostgreSQL's deadlock_timeout (1 s)
        go.set()
        finished, case = await asyncio.wait_for(asyncio.gather(running, erasing), 20)
        assert set(finished.call_ids) == set(calls)
        assert case.status == "erased" and await w.call_ids() == set()
        assert await w.orphans() == (set(), set())


async def test_a_second_erasure_is_not_closed_while_a_call_it_erases_is_left(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        stuck = await w.call("0401234567")
        async with w.unremovable(stuck):
            first = await w.service.erase_number(dpo, number=NUMBER, verified_by="dpo",
                                                 method="letter")
            second = await w.service.erase_number(dpo, number=NUMBER, verified_by="dpo",
                                                  method="letter again")
            assert (first.status, second.status) == ("erasing", "erasing")
            assert await w.call_ids() == {stuck}
        await w.service.run_retention(dpo)  # finishes what is queued
        statuses = {c.id: c.status for c in await w.service.list_requests(
            dpo, include_closed=True)}
        assert statuses[first.id] == statuses[second.id] == "erased"
        assert await w.call_ids() == set()
