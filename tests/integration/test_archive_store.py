"""CallStore against a real PostgreSQL: upserts, hostile values, journal across an outage."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path

import asyncpg
import pytest

from callrec.archive.errors import ArchiveError
from callrec.archive.store import POOL_SIZE, URGENT_RESERVE, CallStore
from tests.dbfixtures import ScratchDatabase, start_cluster
from tests.polling import eventually

pytestmark = pytest.mark.db

T0 = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)


async def _row(dsn: str, call_id: uuid.UUID) -> asyncpg.Record | None:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchrow("SELECT * FROM calls WHERE id = $1", call_id)
    finally:
        await conn.close()


async def test_progressive_upserts_build_one_row(db: ScratchDatabase, tmp_path: Path) -> None:
    call_id = uuid.uuid4()
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        await store.record_call(call_id, caller_number="'; DROP TABLE calls; --",
                                caller_name='"quoted" ../../etc/passwd 😀',
                                service_number="0103808000", started_at=T0, state="notice")
        await store.record_call(call_id, answered_at=T0 + dt.timedelta(seconds=20),
                                agent_name="Aino Agentti", state="conversation")
        await store.record_call(call_id, ended_at=T0 + dt.timedelta(seconds=80),
                                end_reason="completed", state="done")
        await store.record_call(call_id, ended_at=T0 + dt.timedelta(seconds=80),
                                end_reason="completed", state="done")  # a replay is harmless
        assert store.journal_backlog == 0
        assert [c["id"] for c in await store.open_calls()] == []
    row = await _row(db.app_dsn, call_id)
    assert row is not None
    assert row["caller_number"] == "'; DROP TABLE calls; --"
    assert row["caller_name"] == '"quoted" ../../etc/passwd 😀'
    assert row["answered_at"] == T0 + dt.timedelta(seconds=20)
    assert row["ended_at"] == T0 + dt.timedelta(seconds=80)
    assert (row["agent_name"], row["end_reason"], row["state"]) == (
        "Aino Agentti", "completed", "done")


async def test_lazy_writes_land_and_only_they_skip_waiting_for_the_disk(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    call_id = uuid.uuid4()
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        await store.record_call(call_id, service_number="0103808000", started_at=T0)
        await store.record_call(call_id, durable=False, agent_name="Aino Agentti",
                                state="conversation")
        row = await _row(db.app_dsn, call_id)  # another session sees it at once
        assert row is not None and row["agent_name"] == "Aino Agentti"
        settings = {}
        for durable in (True, False):
            pool = await store._connect(durable=durable)
            async with pool.acquire() as conn:
                settings[durable] = await conn.fetchval("SHOW synchronous_commit")
        assert settings == {True: "on", False: "off"}


async def test_urgent_writes_get_a_connection_while_the_others_wait(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    """More writes nobody waits for than the pool has connections, all stuck on row locks:
    a call's first write (urgent) still goes through at once."""
    stuck_ids = [uuid.uuid4() for _ in range(POOL_SIZE + 2)]
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        for call_id in stuck_ids:
            await store.record_call(call_id, urgent=True, durable=False,
                                    service_number="0103808000", started_at=T0)
        locker = await asyncpg.connect(db.app_dsn)
        try:
            locks = locker.transaction()
            await locks.start()
            await locker.execute("SELECT 1 FROM calls WHERE id = ANY($1) FOR UPDATE", stuck_ids)
            stuck = [asyncio.create_task(store.record_call(c, durable=False, state="ringing"))
                     for c in stuck_ids]
            # as many as may hold a connection, each waiting for its row; seen from another
            # session (one in a transaction keeps its first view of pg_stat_activity) of the
            # same role (which sees its own sessions' waits)
            watcher = await asyncpg.connect(db.app_dsn)
            try:
                await eventually(lambda: _waiting_on_locks(watcher, POOL_SIZE - URGENT_RESERVE),
                                 timeout=10, what="writes waiting on the row locks")
            finally:
                await watcher.close()
            newcomer = uuid.uuid4()
            async with asyncio.timeout(5):
                await store.record_call(newcomer, urgent=True, durable=False,
                                        service_number="0103808000", started_at=T0)
            assert not any(t.done() for t in stuck)
            await locks.commit()
            await asyncio.gather(*stuck)
        finally:
            await locker.close()
        assert store.journal_backlog == 0
    assert await _row(db.app_dsn, newcomer) is not None
    for call_id in stuck_ids:
        row = await _row(db.app_dsn, call_id)
        assert row is not None and row["state"] == "ringing"


async def _waiting_on_locks(conn: asyncpg.Connection, at_least: int) -> bool:
    waiting = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    return bool(waiting >= at_least)


async def test_unknown_column_is_refused(db: ScratchDatabase, tmp_path: Path) -> None:
    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        with pytest.raises(ArchiveError, match="not a call column"):
            await store.record_call(uuid.uuid4(), **{"id = id; --": "x"})


async def test_writes_survive_a_database_outage(tmp_path: Path) -> None:
    # A cluster of its own: this test stops it. Blocking steps run in a thread so the
    # store's drainer keeps running on the event loop meanwhile.
    cluster_gen = start_cluster()
    pg = await asyncio.to_thread(next, cluster_gen)
    try:
        dsn = pg.url("callrec_app")
        call_id = uuid.uuid4()
        async with CallStore(dsn, tmp_path / "journal", retry_seconds=0.2) as store:
            await store.record_call(call_id, caller_number="0401234567",
                                    service_number="0103808000", started_at=T0, state="notice")
            await asyncio.to_thread(pg.stop, "fast")
            await store.record_call(call_id, answered_at=T0 + dt.timedelta(seconds=5),
                                    agent_name="Bertil Agent", state="conversation")
            await store.record_call(call_id, ended_at=T0 + dt.timedelta(seconds=30),
                                    end_reason="completed", state="done")
            assert store.journal_backlog == 2
            assert not store.db_available
            await asyncio.to_thread(pg.start)

            async def landed() -> bool:
                row = await _row(dsn, call_id)
                return row is not None and row["end_reason"] == "completed"

            await eventually(landed, timeout=30, what="journalled writes in PostgreSQL")
            await eventually(lambda: _zero(store), what="journal drained")
        row = await _row(dsn, call_id)
        assert row is not None
        assert row["agent_name"] == "Bertil Agent"
        assert row["answered_at"] == T0 + dt.timedelta(seconds=5)
    finally:
        await asyncio.to_thread(cluster_gen.close)


async def test_an_idle_store_notices_the_database_going_and_coming_back(tmp_path: Path) -> None:
    # Health and metrics read the last contact: with no calls, a database that went away
    # was reported up until the next call's write.
    cluster_gen = start_cluster()
    pg = await asyncio.to_thread(next, cluster_gen)
    try:
        async with CallStore(pg.url("callrec_app"), tmp_path / "journal",
                             watch_seconds=0.2) as store:
            assert store.db_available
            await asyncio.to_thread(pg.stop, "fast")
            await eventually(lambda: _down(store), timeout=15, interval=0.1,
                             what="the database reported down")
            await asyncio.to_thread(pg.start)
            await eventually(lambda: _up(store), timeout=30, interval=0.1,
                             what="the database reported up again")
    finally:
        await asyncio.to_thread(cluster_gen.close)


async def _down(store: CallStore) -> bool:
    return not store.db_available


async def _up(store: CallStore) -> bool:
    return store.db_available


async def _zero(store: CallStore) -> bool:
    return store.journal_backlog == 0


async def test_journal_left_by_a_crash_is_drained_on_start(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    call_id = uuid.uuid4()
    journal = tmp_path / "journal"
    journal.mkdir()
    first = json.dumps({"op": "call", "id": str(call_id), "fields": {
        "service_number": "0103808001", "started_at": "2026-11-28T09:00:00+00:00",
        "caller_number": "0409999"}})
    torn = json.dumps({"op": "call", "id": str(call_id), "fields": {"end_reason": "x"}})[:40]
    # The second line was torn by the crash: set aside for an operator, not fatal.
    (journal / "journal.jsonl").write_text(first + "\n" + torn)
    async with CallStore(db.app_dsn, journal) as store:
        await eventually(lambda: _zero(store), what="journal drained")
        # and the store goes on writing
        await store.record_call(call_id, ended_at=T0, end_reason="completed", state="done")
    row = await _row(db.app_dsn, call_id)
    assert row is not None
    assert (row["caller_number"], row["end_reason"]) == ("0409999", "completed")
    assert json.loads((journal / "journal.rejected.jsonl").read_text()) == {
        "op": "torn", "text": torn}


def _rejected(journal: Path) -> list[dict[str, object]]:
    text = (journal / "journal.rejected.jsonl").read_text()
    return [json.loads(x) for x in text.splitlines()]


async def test_a_write_the_database_refuses_does_not_hold_up_the_others(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    # A refusal is not an outage: the write is set aside, the database stays "up" and the
    # next write goes straight to it instead of queueing behind the refused one.
    bad, good = uuid.uuid4(), uuid.uuid4()
    journal = tmp_path / "journal"
    async with CallStore(db.app_dsn, journal, retry_seconds=0.2) as store:
        await store.record_call(bad, service_number="0103808000", started_at=T0,
                                caller_number=12345)  # not text
        await eventually(lambda: _zero(store), what="refused write set aside")
        assert store.db_available
        await store.record_call(good, service_number="0103808000", started_at=T0,
                                caller_number="0401234567")
        assert store.journal_backlog == 0
    row = await _row(db.app_dsn, good)
    assert row is not None and row["caller_number"] == "0401234567"
    assert await _row(db.app_dsn, bad) is None
    assert [(r["op"], r["id"]) for r in _rejected(journal)] == [("call", str(bad))]


async def test_a_malformed_journal_line_is_set_aside_and_the_rest_lands(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    call_id = uuid.uuid4()
    journal = tmp_path / "journal"
    journal.mkdir()
    lines = [
        {"op": "call", "id": 5, "fields": {}},  # JSON, but no call id: once killed the drainer
        {"op": "call", "id": str(call_id), "fields": {
            "service_number": "0103808001", "started_at": "2026-11-28T09:00:00+00:00"}},
    ]
    (journal / "journal.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    async with CallStore(db.app_dsn, journal, retry_seconds=0.2) as store:
        await eventually(lambda: _zero(store), what="journal drained")
    assert await _row(db.app_dsn, call_id) is not None
    assert [r["id"] for r in _rejected(journal)] == [5]


async def test_agent_history_is_each_agents_latest_answer_and_end(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    def at(minutes: int) -> dt.datetime:
        return T0 + dt.timedelta(minutes=minutes)

    async with CallStore(db.app_dsn, tmp_path / "journal") as store:
        calls = [  # agent, started, answered, ended
            ("hist-a1", at(-30), at(-29), at(-25)),
            ("hist-a1", at(-10), at(-9), at(-5)),
            ("hist-a2", at(-20), at(-19), None),  # still in conversation
            ("hist-a3", at(-600), at(-599), at(-590)),  # before `since`
            (None, at(-8), None, at(-7)),  # nobody answered
        ]
        for agent, started, answered, ended in calls:
            await store.record_call(
                uuid.uuid4(), service_number="0103808000", started_at=started,
                agent_id=agent, answered_at=answered, ended_at=ended)
        rows = await store.agent_history(at(-60))
    history = {r["agent_id"]: (r["last_answered"], r["last_ended"]) for r in rows
               if str(r["agent_id"]).startswith("hist-")}
    assert history == {"hist-a1": (at(-9), at(-5)), "hist-a2": (at(-19), None)}


async def _end_app_sessions(db: ScratchDatabase) -> None:
    """Cut the store's connections: its pools reconnect, under the settings changed now."""
    await asyncio.to_thread(db.cluster.psql, (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"  # noqa: S608 (test's own name)
        f" WHERE datname = '{db.name}' AND usename = 'callrec_app'"), "postgres")


async def test_a_database_that_takes_no_writes_keeps_them_in_the_journal_and_says_so(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    """A read-only database (a standby after a failover; a full disk refuses the same way)
    answers, so it was taken for up; each write it refused was set aside for good."""
    call_id = uuid.uuid4()
    journal = tmp_path / "journal"
    async with CallStore(db.app_dsn, journal, retry_seconds=0.2, watch_seconds=0.2) as store:
        assert store.db_available
        await asyncio.to_thread(db.cluster.psql, (
            f"ALTER DATABASE {db.name} SET default_transaction_read_only = on"), "postgres")
        await _end_app_sessions(db)
        await store.record_call(call_id, service_number="0103808000", started_at=T0,
                                caller_number="0401234567")
        assert store.journal_backlog == 1 and not store.db_available
        reads = 0
        real_read = store.journal.read

        def counted() -> list[dict[str, object]]:
            nonlocal reads
            reads += 1
            return real_read()

        store.journal.read = counted  # type: ignore[method-assign]

        async def retried() -> bool:
            return reads >= 3

        # the drain connects, reads and is refused, again and again: nothing set aside
        await eventually(retried, what="three drain attempts")
        assert store.journal_backlog == 1 and not store.db_available
        assert not (journal / "journal.rejected.jsonl").exists()
        assert store.rejected_operations == 0

        await asyncio.to_thread(db.cluster.psql, (
            f"ALTER DATABASE {db.name} SET default_transaction_read_only = off"), "postgres")
        await _end_app_sessions(db)
        await eventually(lambda: _zero(store), what="journal drained")
        await eventually(lambda: _up(store), what="the database reported up")
    row = await _row(db.app_dsn, call_id)
    assert row is not None and row["caller_number"] == "0401234567"


async def test_a_refused_login_is_an_outage_the_watcher_survives(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    """The password changed under the service: its watcher died of the login error and the
    database stayed 'up' in health while the writes piled up in the journal."""
    call_id = uuid.uuid4()
    good = db.cluster.app_password
    try:
        async with CallStore(db.app_dsn, tmp_path / "journal", retry_seconds=0.2,
                             watch_seconds=0.2) as store:
            await asyncio.to_thread(db.cluster.psql,
                                    "ALTER ROLE callrec_app PASSWORD 'changed-elsewhere'",
                                    "postgres")
            await _end_app_sessions(db)
            await eventually(lambda: _down(store), what="the database reported down")
            await store.record_call(call_id, service_number="0103808000", started_at=T0)
            assert store.journal_backlog == 1
            pings = 0
            real_ping = store.ping

            async def counted_ping() -> bool:
                nonlocal pings
                pings += 1
                return await real_ping()

            store.ping = counted_ping  # type: ignore[method-assign]

            async def watched() -> bool:
                return pings >= 3

            await eventually(watched, what="three watches, each refused")
            assert store._watcher is not None and not store._watcher.done()
            await asyncio.to_thread(db.cluster.psql,
                                    f"ALTER ROLE callrec_app PASSWORD '{good}'", "postgres")
            await eventually(lambda: _zero(store), what="journal drained")
            await eventually(lambda: _up(store), what="the database reported up")
    finally:
        await asyncio.to_thread(db.cluster.psql,
                                f"ALTER ROLE callrec_app PASSWORD '{good}'", "postgres")
    assert await _row(db.app_dsn, call_id) is not None


async def test_a_write_cut_short_is_journalled_not_lost(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    """A shutdown cancels the writes still under way after its wait: each was lost; it is
    journalled now (committed or not: replaying an upsert is harmless)."""
    call_id = uuid.uuid4()
    async with CallStore(db.app_dsn, tmp_path / "journal", retry_seconds=0.2) as store:
        await store.record_call(call_id, service_number="0103808000", started_at=T0)
        locker = await asyncpg.connect(db.app_dsn)
        try:
            tx = locker.transaction()
            await tx.start()
            await locker.execute("SELECT 1 FROM calls WHERE id = $1 FOR UPDATE", call_id)
            write = asyncio.create_task(store.record_call(
                call_id, ended_at=T0, end_reason="interrupted", state="done"))
            await eventually(lambda: _waiting_on_locks(locker, 1), what="the write waiting")
            write.cancel()
            with pytest.raises(asyncio.CancelledError):
                await write
            assert store.journal_backlog == 1
            await tx.rollback()
        finally:
            await locker.close()
        await eventually(lambda: _zero(store), what="journal drained")
    row = await _row(db.app_dsn, call_id)
    assert row is not None and row["end_reason"] == "interrupted"
