"""Call metadata in PostgreSQL, written as the call progresses so that a crash of the
service loses nothing; journalled locally while the database is unreachable."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from callrec.archive.errors import ArchiveError, ArchiveUnavailable, CallPurged
from callrec.archive.journal import Journal
from callrec.tasks import BlockingRunner, cancel_and_wait

log = structlog.get_logger(__name__)

# Column names are never taken from input: only these may be written.
CALL_COLUMNS = frozenset({
    "caller_number", "caller_name", "service_number", "service_name", "language",
    "agent_id", "agent_name", "agent_endpoint", "started_at", "notice_started_at",
    "answered_at", "ended_at", "end_reason", "abandoned_phase", "notice_prompt",
    "notice_language", "notice_completed", "caller_channel_id", "agent_channel_id",
    "bridge_id", "recording_name", "state",
})
_TIMESTAMPS = frozenset({"started_at", "notice_started_at", "answered_at", "ended_at"})
RECORDING_COLUMNS = ("path", "sha256", "bytes", "duration_ms", "format")

# Errors that mean "the database is not there", as opposed to a bug in our SQL.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    # A pooled connection cut by a server shutdown can surface as a protocol-state error.
    asyncpg.InternalClientError,
)


def _refuses_writes(exc: BaseException) -> bool:
    """PostgreSQL answers but takes no writes now (a full disk, a read-only standby after a
    failover, our login refused, a table missing after a bad upgrade): the writes wait in the
    journal and health says so. Only a refusal of the write itself (its data: class 22, or a
    constraint: class 23) sets a write aside for an operator."""
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(
        exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError)


# Connections per pool. Ten: with more commits in flight, PostgreSQL flushes more of them per
# WAL write (at 20 calls/s, five connections queued the durable writes for seconds).
POOL_SIZE = 10
# Connections of each pool that only urgent writes (someone waits for them: a caller not yet
# answered) may take when the others are busy. At 24 calls/s on a saturated machine the
# writes nobody waits for held every connection and a call's first write waited up to 22 s
# for one.
URGENT_RESERVE = 3
# Seconds without contact with the database after which it is asked (`SELECT 1`).
WATCH_SECONDS = 10.0


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


class CallStore:
    """Upserts of call and recording rows; never raises because the database is down."""

    def __init__(
        self, dsn: str, journal_dir: Path, *, retry_seconds: float = 1.0,
        run_blocking: BlockingRunner = asyncio.to_thread, watch_seconds: float = WATCH_SECONDS,
    ) -> None:
        self._dsn = dsn
        self.journal = Journal(journal_dir, run_blocking=run_blocking)
        self._pool: asyncpg.Pool | None = None
        self._lazy_pool: asyncpg.Pool | None = None
        self._connecting = asyncio.Lock()
        # per pool (durable or not): how many connections writes nobody waits for may hold
        self._unhurried = {d: asyncio.Semaphore(POOL_SIZE - URGENT_RESERVE) for d in (True, False)}
        self._drainer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._retry = retry_seconds
        self.db_available = False
        self._first_failure = True
        self._watch_seconds = watch_seconds
        self._watcher: asyncio.Task[None] | None = None
        self._last_contact = time.monotonic()
        self._refusing = False  # it answers but takes no writes (see _went_away)
        self._run_blocking = run_blocking
        # journalled writes set aside for an operator (journal.rejected.jsonl) since start
        self.rejected_operations = 0

    async def start(self) -> None:
        self.journal.claim()
        try:
            await self.journal.recover()
        except BaseException:
            self.journal.release()
            raise
        try:
            await self._connect()
            self.db_available = True
        except (*_UNREACHABLE, asyncpg.PostgresError) as exc:  # the calls start all the same
            self._went_away(exc, refusing=isinstance(exc, asyncpg.PostgresError))
        self._drainer = asyncio.create_task(self._drain_forever(), name="journal-drainer")
        self._watcher = asyncio.create_task(self._watch_forever(), name="database-watch")
        self._wake.set()

    async def close(self) -> None:
        tasks = [t for t in (self._drainer, self._watcher) if t is not None]
        self._drainer = self._watcher = None
        pools = [p for p in (self._pool, self._lazy_pool) if p is not None]
        self._pool = self._lazy_pool = None
        try:
            for task in tasks:
                try:
                    await cancel_and_wait(task)
                except Exception:  # a task that had died: said here, the rest still closes
                    log.exception("store_task_failed", task=task.get_name())
        finally:
            try:
                await self.journal.settle()  # appends of writes cut short by the shutdown
                for pool in pools:
                    await pool.close()
            finally:
                self.journal.release()

    async def __aenter__(self) -> CallStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _connect(self, *, durable: bool = True) -> asyncpg.Pool:
        ready = self._pool if durable else self._lazy_pool
        if ready is not None:
            return ready
        # One lock: concurrent first writes must not each create (and leak) a pool.
        async with self._connecting:
            if self._pool is None:
                self._pool = await self._new_pool()
            if durable:
                return self._pool
            if self._lazy_pool is None:
                # Commits that do not wait for the WAL to reach the disk. They survive a crash
                # of this process (PostgreSQL has them); only a crash of PostgreSQL itself can
                # lose the last fraction of a second of them, and the call's durable last
                # write carries the whole row again.
                self._lazy_pool = await self._new_pool(synchronous_commit="off")
            return self._lazy_pool

    async def _new_pool(self, **server_settings: str) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            self._dsn, min_size=1, max_size=POOL_SIZE, timeout=5, command_timeout=10,
            server_settings=server_settings or None, reset=_keep_session,
        )

    async def _watch_forever(self) -> None:
        """Ask the database now and then while nothing else does: health and metrics say
        whether it is there from the last contact, which an idle service does not renew."""
        while True:
            await asyncio.sleep(self._watch_seconds)
            if time.monotonic() - self._last_contact >= self._watch_seconds:
                try:
                    await self.ping()
                except Exception:  # the watcher must outlive anything: health depends on it
                    log.exception("database_watch_failed")

    async def ping(self) -> bool:
        """Whether the database answers a `SELECT 1` (within 5 s) and takes writes (it is
        not a read-only standby)."""
        try:
            pool = await self._connect()
            async with asyncio.timeout(5), pool.acquire() as conn:
                read_only = await conn.fetchval("SELECT current_setting('transaction_read_only')")
            if read_only == "on":
                raise asyncpg.ReadOnlySQLTransactionError("the database takes no writes")
        except (*_UNREACHABLE, asyncpg.PostgresError) as exc:
            self._went_away(exc)
            return False
        if self.journal_backlog == 0 or not self._refusing:
            self._came_back()
        return True

    def _came_back(self) -> None:
        self._last_contact = time.monotonic()
        if not self.db_available:
            log.info("database_reachable")
        self.db_available = True
        self._refusing = False

    @property
    def journal_backlog(self) -> int:
        return self.journal.backlog()

    # ---- writes
    async def record_call(
        self, call_id: uuid.UUID, *, durable: bool = True, urgent: bool = False, **fields: Any
    ) -> None:
        """Upsert these columns of the call's row. `durable=False`: returns before the commit
        is on disk (for the steps between a call's first and last writes, which would
        otherwise hold up the call flow behind the disk under load). `urgent`: someone waits
        for this write (a call's first); it may take the connections kept from the others."""
        unknown = set(fields) - CALL_COLUMNS
        if unknown:
            raise ArchiveError(f"not a call column: {', '.join(sorted(unknown))}")
        await self._write({"op": "call", "id": str(call_id),
                           "fields": {k: _encode(v) for k, v in fields.items()}},
                          durable=durable, urgent=urgent)

    async def record_recording(
        self, call_id: uuid.UUID, *, path: str, sha256: str, bytes: int, duration_ms: int,
        format: str,
    ) -> None:
        await self._write({"op": "recording", "id": str(call_id), "fields": {
            "path": path, "sha256": sha256, "bytes": bytes, "duration_ms": duration_ms,
            "format": format}})

    async def _write(
        self, op: dict[str, Any], *, durable: bool = True, urgent: bool = False
    ) -> None:
        # While anything waits in the journal, new writes queue behind it: order per call
        # is what makes the upserts correct.
        if self.journal_backlog == 0:
            try:
                pool = await self._connect(durable=durable)
                gate: contextlib.AbstractAsyncContextManager[Any] = (
                    contextlib.nullcontext() if urgent else self._unhurried[durable])
                async with gate, pool.acquire() as conn:
                    await _apply(conn, op)
                self._came_back()
                return
            except asyncio.CancelledError:
                # cut short (a shutdown): committed or not, it is journalled, since replaying
                # an upsert is harmless and losing a call's record is not (the journal's
                # append finishes even if this task is cancelled again)
                await self.journal.append(op)
                self._wake.set()
                raise
            except _UNREACHABLE as exc:
                self._went_away(exc)
            except Exception as exc:
                if (isinstance(exc, asyncpg.ForeignKeyViolationError) and op["op"] == "recording"
                        and await self._purged(op["id"])):
                    raise CallPurged(f"call {op['id']}: deleted before its recording") from exc
                if _refuses_writes(exc):
                    self._went_away(exc, refusing=True)
                else:
                    # Whatever stopped this write, the call's record must not be lost:
                    # journal it. The drainer retries it, and sets it aside for an operator
                    # if the database keeps refusing it.
                    log.error("call_write_deferred", error=repr(exc), op=op["op"],
                              call_id=op["id"])
        await self.journal.append(op)
        self._wake.set()

    def _went_away(self, exc: BaseException, *, refusing: bool = False) -> None:
        """`refusing`: PostgreSQL answered but took no write; it counts as back only once
        the journal drains, not when it next answers a ping."""
        self._last_contact = time.monotonic()
        if self.db_available or self._first_failure:
            self._first_failure = False
            log.error("database_unreachable" if not refusing else "database_refuses_writes",
                      error=repr(exc), action="journalling writes")
        self.db_available = False
        self._refusing = self._refusing or refusing

    async def _drain_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.journal_backlog:
                try:
                    if not await self.drain() and self.journal.recount():
                        # counted but nothing readable: wait, never spin on the event loop
                        await asyncio.sleep(self._retry)
                except _UNREACHABLE as exc:
                    self._went_away(exc)
                    await asyncio.sleep(self._retry)
                except asyncpg.PostgresError as exc:  # answers, takes no writes: kept
                    self._went_away(exc, refusing=True)
                    await asyncio.sleep(self._retry)
                except Exception:
                    # the drainer must outlive a bug: without it the journal only grows
                    log.exception("journal_drain_failed", retry_s=self._retry)
                    await asyncio.sleep(self._retry)

    async def drain(self) -> int:
        """Apply journalled operations in order; returns how many reached the database."""
        if await self._run_blocking(self.journal.is_empty):
            return 0  # nothing to connect for (a count gone wrong is set right by the caller)
        pool = await self._connect()
        done = 0
        try:
            async with pool.acquire() as conn:
                # read once connected, in a thread: while the database is away the journal
                # grows, and reading it on the event loop at every retry stalled the calls
                ops = await self._run_blocking(self.journal.read)
                for op in ops:
                    try:
                        await _apply(conn, op)
                    except _UNREACHABLE:
                        raise
                    except Exception as exc:
                        if _refuses_writes(exc):
                            raise  # not this write's fault: it stays first in the journal
                        # A write the database refuses, or a line that is not one of ours
                        # (no call id, say), would block the journal forever: keep it aside
                        # for an operator instead.
                        log.error("journal_operation_rejected", error=repr(exc), op=op.get("op"),
                                  call_id=op.get("id"))
                        await self.journal.reject(op)
                        self.rejected_operations += 1
                    done += 1
            if not ops:
                return 0
            self._came_back()
        finally:
            if done:
                await self.journal.drop_first(done)
                log.info("journal_drained", operations=done, remaining=self.journal_backlog)
        return done

    # ---- reads
    async def was_purged(self, call_id: uuid.UUID) -> bool:
        """Whether retention or an erasure deleted this call (its purge is in the audit log,
        which keeps the ids of the calls it deleted)."""
        rows = await self._fetch(
            "SELECT EXISTS (SELECT 1 FROM audit_log WHERE action = 'purge'"
            " AND details::text LIKE $1) AS purged",
            f'%"{call_id}"%',
        )
        return bool(rows[0]["purged"])

    async def _purged(self, call_id: str) -> bool:
        try:
            return await self.was_purged(uuid.UUID(call_id))
        except ArchiveUnavailable:
            return False  # not known: the write is journalled and kept, as any other

    async def open_calls(self) -> list[dict[str, Any]]:
        """Calls not yet ended (for reconciliation after a restart)."""
        return await self._fetch(
            "SELECT * FROM calls WHERE ended_at IS NULL ORDER BY started_at"
        )

    async def get_call(self, call_id: uuid.UUID) -> dict[str, Any] | None:
        rows = await self._fetch("SELECT * FROM calls WHERE id = $1", call_id)
        return rows[0] if rows else None

    async def call_by_recording(self, recording_name: str) -> dict[str, Any] | None:
        rows = await self._fetch("SELECT * FROM calls WHERE recording_name = $1", recording_name)
        return rows[0] if rows else None

    async def agent_history(self, since: dt.datetime) -> list[dict[str, Any]]:
        """Per agent, the latest answer and the latest end of the calls started since
        `since`: the call routing's turns and idle times across a restart."""
        return await self._fetch(
            "SELECT agent_id, max(answered_at) AS last_answered, max(ended_at) AS last_ended "
            "FROM calls WHERE agent_id IS NOT NULL AND started_at >= $1 GROUP BY agent_id",
            since,
        )

    async def _fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        try:
            pool = await self._connect()
            async with pool.acquire() as conn:
                rows = [dict(r) for r in await conn.fetch(sql, *args)]
            self._came_back()
            return rows
        except _UNREACHABLE as exc:
            self._went_away(exc)
            raise ArchiveUnavailable() from exc


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset of the store's connections: nothing to undo.

    asyncpg's default reset is one more round trip per release (`RESET ALL`, `UNLISTEN *`,
    ...), doubling the cost of every row write; the store's statements never set, listen,
    lock or leave cursors open, and asyncpg still rolls back a transaction left open."""


# The columns of `calls` that are NOT NULL without a default.
_INSERT_NEEDS = frozenset({"service_number", "started_at"})


async def _apply(conn: asyncpg.Connection, op: dict[str, Any]) -> None:
    call_id = uuid.UUID(op["id"])
    fields: dict[str, Any] = dict(op["fields"])
    if op["op"] == "call":
        for key in _TIMESTAMPS & fields.keys():
            if isinstance(fields[key], str):
                fields[key] = dt.datetime.fromisoformat(fields[key])
        cols = [c for c in fields if c in CALL_COLUMNS]
        if not cols:
            return
        values = [fields[c] for c in cols]
        # Column names come from the fixed allow-list above; values are parameters.
        # UPDATE first unless the write holds every NOT NULL column (a call's first write
        # does): an INSERT ... ON CONFLICT with only some columns would trip the NOT NULL
        # checks before the conflict is even looked at.
        status = "UPDATE 0"
        if not fields.keys() >= _INSERT_NEEDS:
            sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(cols, start=2))
            status = await conn.execute(
                f"UPDATE calls SET {sets}, updated_at = now() WHERE id = $1",  # noqa: S608
                call_id, *values,
            )
        if status == "UPDATE 0":
            placeholders = ", ".join(f"${i}" for i in range(2, len(cols) + 2))
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols)
            await conn.execute(
                f"INSERT INTO calls (id, {', '.join(cols)}) VALUES ($1, {placeholders}) "  # noqa: S608
                f"ON CONFLICT (id) DO UPDATE SET {updates}, updated_at = now()",
                call_id, *values,
            )
    elif op["op"] == "recording":
        await conn.execute(
            "INSERT INTO recordings (call_id, path, sha256, bytes, duration_ms, format) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (call_id) DO UPDATE SET "
            "path = EXCLUDED.path, sha256 = EXCLUDED.sha256, bytes = EXCLUDED.bytes, "
            "duration_ms = EXCLUDED.duration_ms, format = EXCLUDED.format",
            call_id, fields["path"], fields["sha256"], int(fields["bytes"]),
            int(fields["duration_ms"]), fields["format"],
        )
    else:
        log.error("journal_unknown_operation", op=op.get("op"))
