"""`make demo-call`: one call into the running stack, then what the archive holds for it."""

from __future__ import annotations

import asyncio
import secrets
import time

import asyncpg

from devstack.errors import StackError
from devstack.sipp import Agent, Caller
from devstack.stack import Stack


def demo_call(stack: Stack, talk_seconds: float = 6.0) -> int:
    if not stack.asterisk.running():
        raise StackError("the stack is not running: make up")
    number = "040" + "".join(secrets.choice("0123456789") for _ in range(7))
    print(f"calling 0103808000 from {number}: caller sends 440 Hz, agent1 answers with 1000 Hz")
    agent = Agent(name="agent1", port=stack.agent_ports["agent1"], tone_hz=1000,
                  answer_after=1.0, talk_seconds=talk_seconds).start()
    try:
        caller = Caller(sip_port=stack.sip_port, service_number="0103808000",
                        caller_number=number, tone_hz=440, talk_seconds=120).start()
        rc = caller.wait(timeout=180)
    finally:
        agent.stop()
    if rc != 0:
        print(f"SIPp caller exited with {rc}:\n{caller.output()}")
    row = asyncio.run(_wait_for_archive(stack.app_dsn, number, within_s=30))
    if row is None:
        print("nothing was archived for this call (is the callrec service running? "
              f"see {stack.service_log})")
        return 1
    print("\narchived call:")
    for key in ("id", "caller_number", "service_number", "service_name", "agent_name",
                "started_at", "notice_started_at", "answered_at", "ended_at", "end_reason",
                "notice_prompt", "notice_language", "notice_completed"):
        print(f"  {key:18} {row[key]}")
    if row["path"]:
        print(f"  {'recording':18} {stack.archive_dir / row['path']}")
        print(f"  {'duration':18} {row['duration_ms'] / 1000:.1f} s, {row['bytes']} bytes")
        print(f"  {'sha256':18} {row['sha256']}")
    else:
        print("  recording          none")
    return 0


async def _wait_for_archive(dsn: str, number: str, within_s: float) -> asyncpg.Record | None:
    deadline = time.monotonic() + within_s
    conn = await asyncpg.connect(dsn)
    try:
        row = None
        while time.monotonic() < deadline:
            row = await conn.fetchrow(
                "SELECT c.*, r.path, r.sha256, r.bytes, r.duration_ms FROM calls c "
                "LEFT JOIN recordings r ON r.call_id = c.id WHERE c.caller_number = $1 "
                "ORDER BY c.started_at DESC LIMIT 1", number)
            if row is not None and row["ended_at"] is not None and (
                    row["path"] is not None or row["answered_at"] is None):
                return row
            await asyncio.sleep(0.3)
        return row
    finally:
        await conn.close()
