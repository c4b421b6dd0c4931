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


@pytest.mark.parametrize(("raw", "theirs"), [
    ("0401234567", True), (" 040-123 4567\t", True), ("(040) 123.4567", True),
    ("\x0b0401234567", True), ("0401234567\f", True),
    # not the number: a letter (once trimmed as if it were the vertical tab, '\v', which
    # PostgreSQL's escape strings do not have), Unicode spaces str.strip() would drop
    ("v0401234567", False), ("0401234567v", False), ("\u00a00401234567", False),
    ("0401234567\u2003", False), ("\u30000401234567", False),
])
async def test_the_database_and_the_hash_of_holds_agree_on_whose_call_it_is(
    db: ScratchDatabase, raw: str, theirs: bool
) -> None:
    """Export, erasure and search find a number's calls by caller_number_key() in SQL; holds
    by the keyed hash of stored_number_key() in Python. A call one finds and the other does
    not is erased under a hold, or left out of an export."""
    from callrec.privacy.numbers import canonical_number, number_variants, stored_number_key

    conn = await asyncpg.connect(db.app_dsn)
    try:
        key = await conn.fetchval("SELECT caller_number_key($1)", raw)
    finally:
        await conn.close()
    number = canonical_number("0401234567")
    assert (key in number_variants(number)) == theirs, key
    assert (stored_number_key(raw) == number) == theirs, stored_number_key(raw)


def test_only_the_postgres_user_reaches_the_superuser(db: ScratchDatabase) -> None:
    """The cluster's socket was open to every local user, trusted as the superuser: any
    account could read every call, or run commands as postgres."""
    import os
    import subprocess

    assert db.cluster.sock.stat().st_mode & 0o777 == 0o700
    if os.geteuid() != 0:
        return  # only root can try as another user
    probe = subprocess.run(
        ["runuser", "-u", "nobody", "--", "psql", "-h", str(db.cluster.sock), "-p",
         str(db.cluster.port), "-U", "postgres", "-c", "SELECT 1"],
        capture_output=True, text=True, timeout=30)
    assert probe.returncode != 0
    hba = (db.cluster.data / "pg_hba.conf").read_text()
    local = [line.split() for line in hba.splitlines() if line.startswith("local")]
    assert local and all(fields[-1] == "peer" for fields in local)
