"""The privacy CLI end to end, as separate processes against the real database and archive:
bootstrap, accounts, requests, holds, retention (also SIGKILLed mid-run), audit verify."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.dbfixtures import ScratchDatabase
from tests.integration.test_privacy_support import KEY, PASSWORD, World, world

pytestmark = pytest.mark.db


def _env(w: World, user: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
    env.update({
        "CALLREC_DATABASE_URL": w.db.app_dsn,
        "CALLREC_ARCHIVE_DIR": str(w.root),
        "CALLREC_SECRET_KEY": KEY.decode(),
        "CALLREC_LOG_FORMAT": "json",
    })
    if user:
        env["CALLREC_USER"], env["CALLREC_PASSWORD"] = user, PASSWORD
    return env


async def _cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callrec.cli", *args, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else b"")
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_officer_workflow_from_the_cli(db: ScratchDatabase, tmp_path: Path) -> None:
    async with world(db, tmp_path, bootstrap=False) as w:
        anon = _env(w)
        rc, out, err = await _cli(anon, "users", "add", "root", "--password-stdin",
                                  stdin=PASSWORD + "\n")
        assert rc == 0, err
        assert "first account root (admin)" in out
        rc, _, err = await _cli(anon, "users", "add", "late", "--password-stdin",
                                stdin=PASSWORD + "\n")
        assert rc == 1 and "CALLREC_USER" in err  # from now on only an admin adds accounts
        root = _env(w, "root")
        for name, roles in (("dpo", "privacy"), ("boss", "privacy"), ("rita", "reviewer")):
            rc, _, err = await _cli(root, "users", "add", name, "--roles", roles,
                                    "--password-stdin", stdin=PASSWORD + "\n")
            assert rc == 0, err
        rc, _, err = await _cli(root, "users", "add", "vendor", "--roles", "processor",
                                "--password-stdin", stdin=PASSWORD + "\n")
        assert rc == 1 and "expiry" in err
        rc, out, _ = await _cli(root, "users", "list")
        assert rc == 0 and [line.split()[0] for line in out.splitlines()] == [
            "boss", "dpo", "rita", "root"]

        call = await w.call("0401234567", seconds=3.0)
        await w.call("0409999999")
        dpo = _env(w, "dpo")
        rc, out, err = await _cli(dpo, "request", "access", "--number", "040-123 4567",
                                  "--verified-by", "boss", "--method", "passport at the desk")
        assert rc == 0, err
        assert "access case 1 opened" in out
        rc, out, _ = await _cli(dpo, "request", "list")
        assert rc == 0 and "open" in out
        zip_path = tmp_path / "answer.zip"
        rc, out, err = await _cli(dpo, "request", "export", "1", "--out", str(zip_path))
        assert rc == 0, err
        assert "1 call(s), 1 recording(s)" in out
        with zipfile.ZipFile(zip_path) as z:
            assert f"recordings/{call}.wav" in z.namelist()

        rc, out, err = await _cli(dpo, "disclose", "--call", str(call), "--from", "00:00.5",
                                  "--to", "00:02.125", "--recipient", "Police",
                                  "--legal-basis", "investigation 12/2027", "--approved-by",
                                  "boss", "--out", str(tmp_path / "clip.zip"))
        assert rc == 0, err
        assert "1625 ms" in out
        rc, out, err = await _cli(dpo, "hold", "add", "--call", str(call), "--reason", "court")
        assert rc == 0, err
        rc, out, _ = await _cli(dpo, "hold", "list")
        assert str(call) in out and "court" in out
        rc, out, err = await _cli(dpo, "retention", "run", "--dry-run", "--json")
        assert rc == 0, err
        assert json.loads(out)["dry_run"] is True

        rita = _env(w, "rita")
        rc, _, err = await _cli(rita, "audit", "verify")
        assert rc == 1 and "may not do audit.verify" in err
        rc, _, err = await _cli({**rita, "CALLREC_PASSWORD": "wrong wrong wrong"}, "audit",
                                "verify")
        assert rc == 1 and "authentication failed" in err

        rc, out, err = await _cli(dpo, "audit", "show", "--action", "denied", "--json")
        assert rc == 0, err
        assert [json.loads(line)["actor"] for line in out.splitlines()] == ["rita"]
        rc, out, _ = await _cli(dpo, "audit", "show", "--number", "0401234567")
        assert "request" in out and "0401234567" not in out
        rc, out, _ = await _cli(dpo, "audit", "verify")
        assert rc == 0 and "audit chain intact" in out

        db.cluster.psql(
            "BEGIN; ALTER TABLE audit_log DISABLE TRIGGER USER; "
            "DELETE FROM audit_log WHERE action = 'disclose'; "
            "ALTER TABLE audit_log ENABLE TRIGGER USER; COMMIT;", db.name)
        rc, out, _ = await _cli(dpo, "audit", "verify")
        assert rc == 3 and "AUDIT CHAIN BROKEN" in out and "missing" in out

        rc, _, err = await _cli(dpo, "request", "access", "--number", "call me maybe",
                                "--verified-by", "boss", "--method", "x")
        assert rc == 1 and "phone number" in err
        rc, _, err = await _cli(dpo, "hold", "add", "--call", "nope", "--reason", "x")
        assert rc == 1 and "not a call id" in err


async def test_retention_killed_mid_run_then_rerun(db: ScratchDatabase, tmp_path: Path) -> None:
    async with world(db, tmp_path) as w:
        await w.user("dpo", "privacy")
        old = datetime.now(UTC) - timedelta(days=500)
        doomed = set()
        for i in range(400):
            doomed.add(await w.call(ended_at=old - timedelta(minutes=i), seconds=0.5))
        keeper = await w.call()
        env = _env(w, "dpo")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callrec.cli", "retention", "run", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        # kill it as soon as it is visibly half-way: some files gone, some still queued
        killed_mid_run = False
        for _ in range(4000):
            async with w.pool.acquire() as conn:
                queued = await conn.fetchval("SELECT count(*) FROM purge_queue")
            files = len(w.wav_files())
            if queued and files < 401:
                proc.send_signal(signal.SIGKILL)
                killed_mid_run = True
                break
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.005)
        await proc.wait()
        assert killed_mid_run and proc.returncode == -signal.SIGKILL
        assert await w.orphans() == (set(), set())  # whatever the moment

        rc, out, err = await _cli(env, "retention", "run")
        assert rc == 0, err
        assert "interrupted run" in out
        assert await w.call_ids() == {keeper}
        assert await w.orphans() == (set(), set())
        receipt = json.loads((await w.audit("retention"))[-1]["details"])
        purged_now = set(receipt["call_ids"])
        batches = {i for r in await w.audit("purge")
                   for i in json.loads(r["details"])["call_ids"]["retention"]}
        assert batches == {str(c) for c in doomed} and purged_now <= batches


@pytest.mark.parametrize(("zone", "shown"), [
    (None, "expires 2027-01-01 00:00:00 EET"),  # Helsinki, the default
    ("UTC", "expires 2027-01-01 00:00:00 UTC"),
])
async def test_cli_dates_are_the_clinics(
    db: ScratchDatabase, tmp_path: Path, zone: str | None, shown: str
) -> None:
    async with world(db, tmp_path) as w:
        root = _env(w, "root") | ({"CALLREC_TIMEZONE": zone} if zone else {})
        rc, _, err = await _cli(root, "users", "add", "vendor", "--roles", "processor",
                                "--expires", "2026-12-31", "--password-stdin",
                                stdin=PASSWORD + "\n")
        assert rc == 0, err
        rc, out, _ = await _cli(root, "users", "list")
        assert rc == 0 and shown in out, out
        rc, _, err = await _cli(root | {"CALLREC_TIMEZONE": "Mars/Olympus"}, "users", "list")
        assert rc != 0 and "CALLREC_TIMEZONE" in err
