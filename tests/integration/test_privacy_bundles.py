"""Export and disclosure bundles commit with their register and audit entry, or vanish:
no zip of personal data is left that the audit log does not know of, and none that the
console recorded and cannot hand out."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callrec.privacy.roles import Actor
from callrec.web.access import ConsoleService
from callrec.web.bundles import KEEP
from tests.dbfixtures import ScratchDatabase
from tests.integration.test_privacy_support import KEY, World, world

pytestmark = pytest.mark.db

# a connection terminated in a transaction surfaces as any of these, depending on the moment
DATABASE_GONE = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


def losing_the_database_after(
    w: World, write: Callable[..., Any]
) -> Callable[..., Any]:
    """`write` (a bundle writer run in a thread), then the service's connection in its open
    transaction is terminated, as when PostgreSQL dies before the commit."""
    loop = asyncio.get_running_loop()

    async def terminate() -> int:
        # as the service's own role: it sees its sessions' state and may end them
        conn = await asyncpg.connect(w.db.app_dsn)
        try:
            killed: int = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND state LIKE 'idle in transaction%'"
            )
            return killed
        finally:
            await conn.close()

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = write(*args, **kwargs)
        assert asyncio.run_coroutine_threadsafe(terminate(), loop).result(10) == 1
        return result

    return wrapped


async def _open_case(w: World, dpo: Actor) -> int:
    await w.user("desk", "privacy")
    case = await w.service.open_access_request(
        dpo, number="0401234567", verified_by="desk", method="passport at the desk")
    return case.id


async def test_an_export_whose_commit_fails_leaves_no_zip_and_can_be_done_again(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        call = await w.call("0401234567")
        case_id = await _open_case(w, dpo)
        out = tmp_path / "case.zip"
        monkeypatch.setattr(w.service, "_write_export",
                            losing_the_database_after(w, w.service._write_export))
        with pytest.raises(DATABASE_GONE):
            await w.service.export_access(dpo, case_id, out)
        assert sorted(os.listdir(tmp_path)) == ["archive"]  # neither the zip nor a temp file
        (case,) = await w.service.list_requests(dpo)
        assert case.status == "open" and await w.audit("export") == []

        monkeypatch.undo()
        result = await w.service.export_access(dpo, case_id, out)
        assert result.calls == 1 and out.is_file()
        (entry,) = await w.audit("export")
        assert str(call) in entry["details"]


async def test_a_disclosure_whose_commit_fails_leaves_no_zip(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        call = await w.call(seconds=3.0)
        out = tmp_path / "police.zip"
        args: dict[str, Any] = {
            "call_id": call, "from_offset": "00:01", "to_offset": "00:02",
            "recipient": "Police", "legal_basis": "investigation", "approved_by": "dpo",
            "out": out}
        monkeypatch.setattr(w.service, "_bundle_disclosure",
                            losing_the_database_after(w, w.service._bundle_disclosure))
        with pytest.raises(DATABASE_GONE):
            await w.service.disclose(dpo, **args)
        assert sorted(os.listdir(tmp_path)) == ["archive"]
        async with w.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM disclosures") == 0
        assert await w.audit("disclose") == []

        monkeypatch.undo()
        d = await w.service.disclose(dpo, **args)
        assert out.is_file() and (await w.audit("disclose"))[-1]["target"] == f"call:{call}"
        assert d.call_id == call


async def test_the_consoles_bundle_row_commits_with_the_export_or_not_at_all(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    async with world(db, tmp_path) as w:
        svc = ConsoleService(w.pool, w.root, KEY, bundle_dir=tmp_path / "bundles")
        dpo = await w.user("dpo", "privacy")
        await w.call("0401234567")
        case_id = await _open_case(w, dpo)
        bundle_id, out = svc.new_bundle_path("access-export")
        keep = svc.bundle_keeper(dpo, bundle_id, "access-export", out)

        async def keep_then_fail(conn: asyncpg.Connection, ref: str, sha256: str) -> None:
            await keep(conn, ref, sha256)
            raise OSError("the process is going down")

        with pytest.raises(OSError, match="going down"):
            await svc.export_access(dpo, case_id, out, keep=keep_then_fail)
        assert os.listdir(svc.bundle_dir) == []
        async with w.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM web_bundles") == 0
            assert await conn.fetchval(
                "SELECT status FROM privacy_requests WHERE id = $1", case_id) == "open"

        result = await svc.export_access(dpo, case_id, out, keep=keep)
        (made,) = await svc.bundles_by(dpo)
        assert made["id"] == bundle_id and made["kind"] == "access-export"
        assert made["sha256"] == result.zip_sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
        bundle = await svc.open_bundle(dpo, bundle_id)
        assert bundle.path == out


async def test_housekeeping_removes_old_files_no_bundle_row_names(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    async with world(db, tmp_path) as w:
        svc = ConsoleService(w.pool, w.root, KEY, bundle_dir=tmp_path / "bundles")
        dpo = await w.user("dpo", "privacy")
        call = await w.call(seconds=3.0)
        bundle_id, out = svc.new_bundle_path("disclosure")
        await svc.disclose(
            dpo, call_id=call, from_offset="00:00", to_offset="00:01", recipient="Police",
            legal_basis="investigation", approved_by="dpo", out=out,
            keep=svc.bundle_keeper(dpo, bundle_id, "disclosure", out))
        # left by a crash: a zip renamed into place whose row never committed, a temp file;
        # and one such zip too young to be sure its export is not still committing
        stray = svc.bundle_dir / f"access-export-{uuid.uuid4()}.zip"
        temp = svc.bundle_dir / f".disclosure-{uuid.uuid4()}.zip.abc123.part"
        young = svc.bundle_dir / f"access-export-{uuid.uuid4()}.zip"
        for path in (stray, temp, young):
            path.write_bytes(b"PK personal data")
        old = time.time() - KEEP.total_seconds() - 60
        for path in (stray, temp, out):  # the registered bundle is as old, but not expired
            os.utime(path, (old, old))

        assert await svc.remove_expired_bundles() == 2
        assert sorted(p.name for p in svc.bundle_dir.iterdir()) == sorted([out.name, young.name])
        assert (await svc.open_bundle(dpo, bundle_id)).path == out
