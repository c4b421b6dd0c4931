"""The audit log on the real database: append-only even for the owner, and verify detects
edits and deletions made by the owner or a superuser with the triggers switched off."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import asyncpg
import pytest

from callrec.privacy import audit, chain
from callrec.privacy.audit import AuditFilter
from tests.dbfixtures import ScratchDatabase
from tests.integration.test_privacy_support import World, world

pytestmark = pytest.mark.db


async def _some_history(w: World) -> None:
    reviewer = await w.user("rita", "reviewer")
    for _ in range(3):
        await w.service.open_recording(reviewer, await w.call(), purpose="quality review")


def _as_superuser(db: ScratchDatabase, sql: str) -> None:
    # a superuser can switch the protective triggers off: verify must still notice
    db.cluster.psql(
        "BEGIN; ALTER TABLE audit_log DISABLE TRIGGER USER; "
        f"{sql}; ALTER TABLE audit_log ENABLE TRIGGER USER; COMMIT;",
        db.name,
    )


async def test_owner_cannot_edit_or_delete_entries(db: ScratchDatabase, tmp_path: Path) -> None:
    async with world(db, tmp_path) as w:
        await _some_history(w)
        conn = await w.owner()
        try:
            for sql in ("UPDATE audit_log SET reason = 'x' WHERE seq = 2",
                        "DELETE FROM audit_log WHERE seq = 2", "TRUNCATE audit_log"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                    await conn.execute(sql)
        finally:
            await conn.close()
        dpo = await w.user("dpo", "privacy")
        verdict = await w.service.audit_verify(dpo)
        assert verdict.ok and verdict.entries >= 8


@pytest.mark.parametrize("sql,problem", [
    ("UPDATE audit_log SET reason = 'nothing happened' WHERE seq = 5",
     "entry 5 was altered (hash mismatch)"),
    ("UPDATE audit_log SET actor = 'someone_else', target = 'call:x' WHERE seq = 3",
     "entry 3 was altered (hash mismatch)"),
    ("UPDATE audit_log SET details = '{\"results\": 0}' WHERE seq = 4",
     "entry 4 was altered (hash mismatch)"),
    ("DELETE FROM audit_log WHERE seq = 4", "entries 4..4 are missing"),
    ("DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)",
     "after the last one are missing"),
])
async def test_verify_detects_superuser_tampering(
    db: ScratchDatabase, tmp_path: Path, sql: str, problem: str
) -> None:
    async with world(db, tmp_path) as w:
        await _some_history(w)
        dpo = await w.user("dpo", "privacy")
        assert (await w.service.audit_verify(dpo)).ok
        _as_superuser(db, sql)
        verdict = await w.service.audit_verify(dpo)
        assert not verdict.ok
        assert any(problem in p for p in verdict.problems), verdict.problems


async def test_owner_rewriting_an_entry_with_a_fresh_hash_is_detected(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    async with world(db, tmp_path) as w:
        await _some_history(w)
        dpo = await w.user("dpo", "privacy")
        # the owner role can disable its own table's triggers; recomputing the edited entry's
        # hash still breaks the link to the next entry
        conn = await w.owner()
        try:
            entry = next(e for e in await audit.show(conn, AuditFilter(limit=1000))
                         if e.seq == 3)
            forged = dataclasses.replace(entry, reason="forged")
            await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change")
            await conn.execute("UPDATE audit_log SET reason = $1, hash = $2 WHERE seq = 3",
                               forged.reason, chain.entry_hash(forged))
            await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change")
        finally:
            await conn.close()
        verdict = await w.service.audit_verify(dpo)
        assert verdict.problems == ("entry 4 does not follow its predecessor (prev_hash)",)


async def test_concurrent_appends_keep_one_chain(db: ScratchDatabase, tmp_path: Path) -> None:
    async with world(db, tmp_path) as w:
        reviewer = await w.user("rita", "reviewer")
        calls = [await w.call() for _ in range(6)]
        await asyncio.gather(*(
            w.service.open_recording(reviewer, c, purpose="training") for c in calls * 3
        ), *(w.service.search_calls(reviewer) for _ in range(10)))
        dpo = await w.user("dpo", "privacy")
        verdict = await w.service.audit_verify(dpo)
        assert verdict.ok, verdict.problems
        seqs = [r["seq"] for r in await w.audit()]
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(await w.audit("listen")) == 18


async def test_show_filters(db: ScratchDatabase, tmp_path: Path) -> None:
    async with world(db, tmp_path) as w:
        reviewer = await w.user("rita", "reviewer")
        call = await w.call()
        await w.service.open_recording(reviewer, call, purpose="training")
        await w.service.search_calls(reviewer, number="040 1234567")
        dpo = await w.user("dpo", "privacy")
        show = w.service.audit_show
        assert [e.action for e in await show(dpo, AuditFilter(actor="rita"))] == [
            "search", "listen", "login"]
        by_target = await show(dpo, AuditFilter(target=f"call:{call}"))
        assert [(e.actor, e.action, e.reason) for e in by_target] == [
            ("rita", "listen", "training")]
        searches = await show(dpo, AuditFilter(action="search"))
        assert searches[0].target.startswith("number:") and "401234567" not in searches[0].target
        assert await show(dpo, AuditFilter(until=by_target[0].at, target=f"call:{call}")) == []
        assert len(await show(dpo, AuditFilter(limit=2))) == 2
        assert (await w.audit("audit_view"))[-1]["actor"] == "dpo"


async def test_anchor_catches_a_superuser_who_cuts_the_tail_and_rewinds_the_head(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    async with world(db, tmp_path) as w:
        await _some_history(w)
        dpo = await w.user("dpo", "privacy")
        before = await w.service.audit_verify(dpo)
        anchor = {before.head_seq: before.head_hash}  # written down outside the database
        cut = before.head_seq - 2
        _as_superuser(
            db,
            f"DELETE FROM audit_log WHERE seq > {cut}; "  # noqa: S608 (an int we computed)
            f"UPDATE audit_head SET seq = {cut}, hash = (SELECT hash FROM audit_log "
            f"WHERE seq = {cut})",
        )
        assert (await w.service.audit_verify(dpo)).ok  # the database alone cannot tell
        verdict = await w.service.audit_verify(dpo, anchor)
        assert verdict.problems == (f"anchored entry {before.head_seq} is missing",)
