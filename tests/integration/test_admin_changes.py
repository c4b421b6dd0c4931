"""Admins change prompts and routing on the running service; the next call reflects it with
no restart (issue: prompts and routing). Real Asterisk 22, PostgreSQL, SIPp, the service."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Iterator

import asyncpg
import pytest

from devstack.proc import read_pid
from devstack.sipp import Agent, Caller
from devstack.stack import Stack
from tests.polling import eventually

pytestmark = pytest.mark.stack


def _number() -> str:
    return "0407" + "".join(secrets.choice("0123456789") for _ in range(6))


async def _finished_row(stack: Stack, number: str) -> asyncpg.Record:
    async def probe() -> asyncpg.Record | None:
        conn = await asyncpg.connect(stack.app_dsn)
        try:
            row = await conn.fetchrow(
                "SELECT c.*, r.path FROM calls c LEFT JOIN recordings r ON r.call_id = c.id "
                "WHERE caller_number = $1", number)
        finally:
            await conn.close()
        if row is None or row["ended_at"] is None:
            return None
        if row["answered_at"] is not None and row["path"] is None:
            return None  # recording not archived yet
        return row

    return await eventually(probe, timeout=60, what=f"call from {number} archived")


async def _call(stack: Stack, service: str, *, expect_agent: str,
                idle_agents: tuple[str, ...] = ()) -> tuple[asyncpg.Record, Agent, list[Agent]]:
    """One call answered by `expect_agent` after the notice; others listen and must not ring."""
    number = _number()
    agent = Agent(name=expect_agent, port=stack.agent_ports[expect_agent], answer_after=0.3,
                  talk_seconds=1.5).start()
    idle = [Agent(name=a, port=stack.agent_ports[a], answer_after=0.3, talk_seconds=1.5).start()
            for a in idle_agents]
    try:
        caller = Caller(sip_port=stack.sip_port, service_number=service, caller_number=number,
                        talk_seconds=60).start()
        assert await asyncio.to_thread(caller.wait, 90) == 0, caller.output()
        row = await _finished_row(stack, number)
    finally:
        for peer in (agent, *idle):
            peer.stop()
    return row, agent, idle


def _prompt_version(stack: Stack, name: str, language: str) -> str:
    listing = stack.callrec("prompts", "list").stdout
    for line in listing.splitlines():
        cols = line.split()
        if cols[:2] == [name, language]:
            return cols[3]  # NAME LANG SOURCE VERSION DURATION STATE
    raise AssertionError(f"{name}/{language} not in `callrec prompts list`:\n{listing}")


@pytest.fixture
def restore_files(stack: Stack) -> Iterator[None]:
    notice = stack.prompts_dir / "fi" / "notice.txt"
    saved_notice = notice.read_text()
    saved_routing = stack.config_path.read_text()
    yield
    (stack.prompts_dir / "fi" / "notice.wav").unlink(missing_ok=True)
    notice.write_text(saved_notice)
    stack.callrec("prompts", "build")
    stack.config_path.write_text(saved_routing)
    stack.callrec("reload")


@pytest.mark.timeout(300)
async def test_new_notice_text_reaches_the_next_call_without_restart(
    stack: Stack, restore_files: None
) -> None:
    pid = read_pid(stack.service_pidfile)
    notice = stack.prompts_dir / "fi" / "notice.txt"
    original_version, original_text = _prompt_version(stack, "notice", "fi"), notice.read_text()

    notice.write_text("Tämä puhelu tallennetaan.")
    stack.callrec("prompts", "build")
    first_version = _prompt_version(stack, "notice", "fi")
    assert first_version != original_version
    first, _, _ = await _call(stack, "0103808000", expect_agent="agent1")
    assert first["notice_prompt"] == f"notice-fi-{first_version}"
    assert first["notice_language"] == "fi"
    assert first["notice_completed"] is True
    assert first["notice_started_at"] < first["answered_at"]

    notice.write_text("Tämä puhelu tallennetaan laadun varmistamiseksi.")
    stack.callrec("prompts", "build")
    second_version = _prompt_version(stack, "notice", "fi")
    assert second_version not in (first_version, original_version)
    second, _, _ = await _call(stack, "0103808000", expect_agent="agent1")
    assert second["notice_prompt"] == f"notice-fi-{second_version}"

    conn = await asyncpg.connect(stack.app_dsn)
    try:  # the earlier call's row still names what that caller heard
        earlier = await conn.fetchval("SELECT notice_prompt FROM calls WHERE id = $1", first["id"])
    finally:
        await conn.close()
    assert earlier == f"notice-fi-{first_version}"
    # Asterisk fetched exactly the versioned URLs (its media cache is keyed by URL).
    cached = stack.asterisk.cli("media cache show all")
    for version in (first_version, second_version):
        assert f"/prompts/notice-fi-{version}.wav" in cached, cached
    assert read_pid(stack.service_pidfile) == pid  # no restart

    notice.write_text(original_text)
    stack.callrec("prompts", "build")
    assert _prompt_version(stack, "notice", "fi") == original_version, original_text


@pytest.mark.timeout(300)
async def test_routing_reload_moves_a_service_and_rejects_an_invalid_edit(
    stack: Stack, restore_files: None
) -> None:
    pid = read_pid(stack.service_pidfile)
    original = stack.config_path.read_text()
    assert 'agents = ["agent1", "agent2", "agent3"]\nstrategy = "in_order"' in original

    moved = original.replace('agents = ["agent1", "agent2", "agent3"]\nstrategy = "in_order"',
                             'agents = ["agent2"]\nstrategy = "in_order"', 1)
    stack.config_path.write_text(moved)
    log_mark = stack.service_log.stat().st_size
    stack.callrec("reload")
    await eventually(lambda: _log_since(stack, log_mark, "routing.loaded"),
                     what="routing reloaded")
    row, agent2, (agent1,) = await _call(stack, "0103808000", expect_agent="agent2",
                                         idle_agents=("agent1",))
    assert row["agent_name"] == "Bertil Agent"
    assert row["agent_id"] == "agent2"
    assert len(agent2.invites()) == 1
    assert agent1.invites() == []  # agent1 was not rung at all

    # An invalid edit: refused by `callrec reload` with file:line, and by the watcher.
    broken = moved.replace('agents = ["agent2"]', 'agents = ["agent9"]', 1)
    log_mark = stack.service_log.stat().st_size
    stack.config_path.write_text(broken)
    refused = stack.callrec("reload", check=False)
    assert refused.returncode != 0
    assert f"{stack.config_path.name}:" in refused.stderr + refused.stdout
    assert "agent9" in refused.stderr + refused.stdout
    await eventually(lambda: _log_since(stack, log_mark, "routing.rejected"), timeout=15,
                     what="invalid routing rejected by the running service")
    row, _, _ = await _call(stack, "0103808000", expect_agent="agent2")
    assert row["agent_name"] == "Bertil Agent"  # the previous routing stays in force
    assert row["end_reason"] == "completed"
    assert read_pid(stack.service_pidfile) == pid


async def _log_since(stack: Stack, offset: int, needle: str) -> bool:
    def read() -> bytes:
        with open(stack.service_log, "rb") as f:
            f.seek(offset)
            return f.read()

    return needle.encode() in await asyncio.to_thread(read)


@pytest.mark.timeout(300)
async def test_dropped_in_studio_recording_wins_over_the_text(
    stack: Stack, restore_files: None
) -> None:
    text_version = _prompt_version(stack, "notice", "fi")
    studio = stack.prompts_dir / "fi" / "notice.wav"
    # A studio file as an admin would get it: 44.1 kHz stereo, here a 2-second tone.
    await asyncio.to_thread(
        subprocess.run,
        ["sox", "-n", "-r", "44100", "-c", "2", "-b", "16", str(studio),
         "synth", "2", "sine", "700", "vol", "0.5"],
        check=True, capture_output=True,
    )
    stack.callrec("prompts", "build")
    listing = stack.callrec("prompts", "list").stdout
    line = next(x.split() for x in listing.splitlines() if x.split()[:2] == ["notice", "fi"])
    assert line[2] == "fi/notice.wav", listing  # the studio source is the live one
    studio_version = line[3]
    assert studio_version != text_version
    row, _, _ = await _call(stack, "0103808000", expect_agent="agent1")
    assert row["notice_prompt"] == f"notice-fi-{studio_version}"
    assert row["notice_completed"] is True
    assert f"/prompts/notice-fi-{studio_version}.wav" in stack.asterisk.cli("media cache show all")
