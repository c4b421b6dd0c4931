"""The migrated schema on a real PostgreSQL: roles and constraints as designed."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from callrec.archive.migrate import available, migrate
from tests.dbfixtures import ScratchDatabase

pytestmark = pytest.mark.db


async def test_migrations_are_recorded_and_idempotent(db: ScratchDatabase) -> None:
    assert await migrate(db.owner_dsn) == []  # the template already has them all
    conn = await asyncpg.connect(db.owner_dsn)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
    finally:
        await conn.close()
    assert versions == [m.version for m in available()]


async def test_app_role_can_write_calls_but_not_change_schema(db: ScratchDatabase) -> None:
    conn = await asyncpg.connect(db.app_dsn)
    try:
        call_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO calls (id, caller_number, service_number, started_at) "
            "VALUES ($1, $2, '0103808000', now())",
            call_id, "'; DROP TABLE calls; --",
        )
        stored = await conn.fetchval("SELECT caller_number FROM calls WHERE id = $1", call_id)
        assert stored == "'; DROP TABLE calls; --"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DROP TABLE calls")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE sneaky (x int)")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE calls SET end_reason = 'bogus' WHERE id = $1", call_id)
    finally:
        await conn.close()
