"""Headless Chromium (Debian's package, driven by Playwright's Python package; no browser
is ever downloaded) and the real stack with accounts and a recorded call."""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callrec.prompts.index import read_index
from devstack.sipp import Agent, Caller
from devstack.stack import Stack
from tests.polling import eventually_sync

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
]
PASSWORD = "browser test password"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
SERVICE_NUMBER = "0103808000"  # the demo routing's Finnish number


@pytest.fixture(scope="module")
def chromium(stack: Stack) -> Iterator[Any]:
    # Playwright's sync API keeps an event loop running in this thread while it is open:
    # module scope, so that it is closed before any other module's asyncio tests run; the
    # stack (whose set-up uses asyncio.run) must be up before it starts, and database
    # look-ups run in a thread of their own (db_rows).
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright's Python package is missing: .venv/bin/pip install playwright "
                    "(never `playwright install`: the browser is Debian's chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                    headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def db_rows(stack: Stack, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(stack.app_dsn)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def _service_log(stack: Stack) -> str:
    try:
        return "service log tail:\n" + stack.service_log.read_text(errors="replace")[-4000:]
    except OSError:
        return "(no service log)"


@dataclass(frozen=True)
class PlacedCall:
    call_id: str
    caller_number: str
    notice_prompt: str
    duration_ms: int


def notice_seconds(stack: Stack) -> float:
    """How long the live Finnish notice plays (the caller hangs up after it, plus talk)."""
    entry = read_index(stack.state_dir / "prompt-cache").prompts.get("notice/fi")
    return entry.duration_ms / 1000 if entry is not None else 0.0


def place_call(stack: Stack, caller_number: str, talk_seconds: float = 6.0) -> PlacedCall:
    """A real call through Asterisk to agent1, recorded and archived by the service; the
    caller stays on the line for the notice, then `talk_seconds` with the agent."""
    talk_seconds += notice_seconds(stack) + 2.0
    agent = Agent(name="agent1", port=stack.agent_ports["agent1"], answer_after=0.5).start()
    try:
        caller = Caller(sip_port=stack.sip_port, service_number=SERVICE_NUMBER,
                        caller_number=caller_number, talk_seconds=talk_seconds).start()
        try:
            rc = caller.wait(180)
            assert rc == 0, f"caller exit {rc}: {caller.output()}\n{_service_log(stack)}"
        finally:
            caller.stop()
    finally:
        agent.stop()

    def archived() -> list[dict[str, Any]]:
        return db_rows(
            stack,
            "SELECT c.id, c.notice_prompt, r.duration_ms FROM calls c JOIN recordings r"
            " ON r.call_id = c.id WHERE c.caller_number = $1 AND c.ended_at IS NOT NULL"
            " ORDER BY c.started_at DESC",
            caller_number,
        )

    try:
        rows = eventually_sync(archived, timeout=90, interval=0.5,
                               what="the archived recording")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_service_log(stack)}") from None
    row = rows[0]
    return PlacedCall(str(row["id"]), caller_number, row["notice_prompt"] or "",
                      row["duration_ms"])


@dataclass(frozen=True)
class Accounts:
    admin: str = "root"
    reviewer: str = "rita"
    privacy: str = "dpo"


@pytest.fixture(scope="session")
def accounts(stack: Stack) -> Accounts:
    acc = Accounts()
    existing = stack.callrec("users", "list", check=False,
                             extra_env={"CALLREC_USER": acc.admin, "CALLREC_PASSWORD": PASSWORD})
    if existing.returncode != 0:
        stack.callrec("users", "add", acc.admin, "--password-stdin", input=PASSWORD + "\n")
    for name, role in ((acc.reviewer, "reviewer"), (acc.privacy, "privacy")):
        if name not in existing.stdout:
            stack.callrec("users", "add", name, "--roles", role, "--full-name", name.title(),
                          "--password-stdin", "--as", acc.admin, input=PASSWORD + "\n",
                          extra_env={"CALLREC_PASSWORD": PASSWORD})
    return acc


@pytest.fixture(scope="session")
def recorded_call(stack: Stack) -> PlacedCall:
    return place_call(stack, "0401230001")


@pytest.fixture(scope="session", autouse=True)
def _fresh_artifacts() -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)


@pytest.fixture
def restore_config(stack: Stack) -> Iterator[None]:
    """The stack is shared by other modules: put the notice text and routing back."""
    notice = stack.prompts_dir / "fi" / "notice.txt"
    saved_notice, saved_routing = notice.read_bytes(), stack.config_path.read_bytes()
    yield
    if notice.read_bytes() != saved_notice:
        notice.write_bytes(saved_notice)
        stack.callrec("prompts", "build")
    if stack.config_path.read_bytes() != saved_routing:
        stack.config_path.write_bytes(saved_routing)
        stack.callrec("reload")
