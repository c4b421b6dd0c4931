"""The call flow on the real stack: Asterisk 22 + PostgreSQL + SIPp, audio checked by content.

The test runs the real `CallManager` in-process against the stack's Asterisk (the service is not
started, so the test owns the `callrec` ARI application), with the real ARI client, call store,
recording archiver, routing provider and prompt catalog, on a routing file of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import math
import os
import re
import signal
import stat
import subprocess
import threading
import time
import uuid
import wave
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from aiohttp import web

from callrec.archive.files import RecordingArchiver
from callrec.archive.store import CallStore
from callrec.ari.client import AriClient
from callrec.ari.errors import AriNoAnswer, AriServerError
from callrec.ari.events import Connected, Event
from callrec.ari.models import Channel
from callrec.calls.machine import snoop_id_for
from callrec.calls.manager import CallManager
from callrec.prompts.build import build_prompts
from callrec.prompts.catalog import PromptCatalog
from callrec.prompts.http import add_routes
from callrec.routing.loader import RoutingProvider
from devstack.ports import free_block
from devstack.proc import alive, read_pid
from devstack.sipp import Agent, Caller, sip_uri_user
from devstack.stack import Stack
from tests.polling import eventually_sync

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

IN_ORDER = "0100001001"
RING_ALL = "0100001002"
NOBODY = "0100001003"  # only agent3, whom no test lets answer
ROUND_ROBIN = "0100001004"
CLOSED_NOW = "0100001005"  # open on one day only, three days from now (in its own time zone)
UNKNOWN = "0100009999"
# Three days ahead, not tomorrow: the routing text is made when the module is collected, and a
# suite that crosses midnight in Helsinki would otherwise reach the test on the open day.
_OPEN_DAY = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[
    (datetime.now(ZoneInfo("Europe/Helsinki")).weekday() + 3) % 7
]
CALLER_HZ = 440
AGENT_HZ = {"agent1": 1000, "agent2": 1500, "agent3": 2000}
# Two equal tones hold about half of a one-second window's energy each, silence none. On a
# loaded 2-core machine RTP jitter can thin a party's tone in one window to ~0.3, so
# "present" is 0.2; absence is checked separately against 0.01.
PRESENT = 0.2
CONTROL_HZ = 700  # nobody sends it: must stay near zero
NOTICE_HZ = 2600  # the test's recording notice is a tone, recognisable if it leaked in
CLOSED_HZ = 2800
NOTICE_SECONDS = 3

ROUTING = f"""
[defaults]
ring_timeout = 4
max_wait = 30
timezone = "Europe/Helsinki"

[[agent]]
id = "agent1"
endpoint = "PJSIP/agent1"
name = "Aino Agentti"

[[agent]]
id = "agent2"
endpoint = "PJSIP/agent2"
name = "Bertil Bengtsson"

[[agent]]
id = "agent3"
endpoint = "PJSIP/agent3"
name = "Cecilia Carlsson"

[[service]]
number = "{IN_ORDER}"
name = "Ajanvaraus"
language = "fi"
agents = ["agent1", "agent2"]
strategy = "in_order"

[[service]]
number = "{RING_ALL}"
name = "Neuvonta"
language = "fi"
agents = ["agent1", "agent2"]
strategy = "ring_all"
ring_timeout = 10

[[service]]
number = "{ROUND_ROBIN}"
name = "Vuorotellen"
language = "fi"
agents = ["agent1", "agent2"]
strategy = "round_robin"

[[service]]
number = "{CLOSED_NOW}"
name = "Huomenna"
language = "fi"
agents = ["agent1"]
hours = [{{ days = "{_OPEN_DAY}", open = "00:00", close = "24:00" }}]

[[service]]
number = "{NOBODY}"
name = "Kiire"
language = "fi"
agents = ["agent3"]
ring_timeout = 2
max_wait = 5
"""


# -- audio by content -------------------------------------------------------------------------


def read_wav(path: Path) -> tuple[list[float], int]:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2), "16-bit mono expected"
        rate = w.getframerate()
        raw = w.readframes(w.getnframes())
    samples = [int.from_bytes(raw[i : i + 2], "little", signed=True) for i in range(0, len(raw), 2)]
    return [float(s) for s in samples], rate


def goertzel_share(window: list[float], rate: int, hz: float) -> float:
    """Share of the window's energy at `hz` (1.0 for a pure tone on a bin, ~0.5 for each of
    two equal tones, 0 for silence)."""
    n = len(window)
    energy = sum(x * x for x in window)
    if energy == 0:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * round(hz * n / rate) / n)
    s1 = s2 = 0.0
    for x in window:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * power / (n * energy)


def tone_shares(path: Path, *tones: float) -> list[dict[float, float]]:
    """Per full second of the file: the share of each tone."""
    samples, rate = read_wav(path)
    return [
        {hz: goertzel_share(samples[i : i + rate], rate, hz) for hz in tones}
        for i in range(0, len(samples) - rate + 1, rate)
    ]


def assert_two_tones_only(shares: list[dict[float, float]], a: float, b: float) -> None:
    """Every second holds the two tones and little else: above 0.8 of the energy in each
    second and above 0.9 in all but one (a short RTP gap under load costs one second a few
    percent; anything mixed in for longer, such as a prompt, fails)."""
    sums = [s[a] + s[b] for s in shares]
    assert min(sums) > 0.8, sums
    assert sum(1 for x in sums if x <= 0.9) <= 1, sums


# -- the harness ------------------------------------------------------------------------------


@dataclass
class Flow:
    stack: Stack
    ari: AriClient
    store: CallStore
    archiver: RecordingArchiver
    routing: RoutingProvider
    catalog: PromptCatalog
    archive_dir: Path
    manager: CallManager
    peers: list[Agent | Caller] = field(default_factory=list)

    def new_manager(self) -> CallManager:
        return CallManager(
            self.ari,
            self.store,
            self.archiver,
            self.routing,
            self.catalog,
            "callrec",
            round_pause=0.5,
        )

    def notice_seconds(self) -> float:
        return self.catalog.resolve("notice", "fi").duration_ms / 1000

    def agent(self, name: str, **kwargs: Any) -> Agent:
        kwargs.setdefault("tone_hz", AGENT_HZ[name])
        peer = Agent(name=name, port=self.stack.agent_ports[name], **kwargs).start()
        self.peers.append(peer)
        return peer

    def call(self, service: str, number: str, **kwargs: Any) -> Caller:
        kwargs.setdefault("tone_hz", CALLER_HZ)
        peer = Caller(
            sip_port=self.stack.sip_port, service_number=service, caller_number=number, **kwargs
        ).start()
        self.peers.append(peer)
        return peer

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        conn = await asyncpg.connect(self.stack.owner_dsn)
        try:
            return await conn.fetchrow(sql, *args)
        finally:
            await conn.close()

    async def row(self, number: str) -> asyncpg.Record | None:
        return await self.fetchrow(
            "SELECT * FROM calls WHERE caller_number = $1 ORDER BY started_at DESC LIMIT 1", number
        )

    async def row_since(self, since: datetime) -> asyncpg.Record | None:
        return await self.fetchrow(
            "SELECT * FROM calls WHERE started_at > $1 ORDER BY started_at DESC LIMIT 1", since
        )

    async def recording(self, call_id: uuid.UUID) -> asyncpg.Record | None:
        return await self.fetchrow("SELECT * FROM recordings WHERE call_id = $1", call_id)

    async def finished(
        self, number: str | None = None, *, since: datetime | None = None, within: float = 60
    ) -> asyncpg.Record:
        """The call's row once the call is over and its recording (if any) archived."""

        async def probe() -> asyncpg.Record | None:
            if number is not None:
                row = await self.row(number)
            else:
                assert since is not None
                row = await self.row_since(since)
            if row is None or row["state"] != "done":
                return None
            if any(s.call_id == row["id"] for s in self.manager.states()):
                return None
            return row

        return await until(probe, within, f"call {number or since} finished")

    async def spool_names(self) -> set[str]:
        return {r.name for r in await self.ari.list_stored_recordings()}


async def until(
    probe: Callable[[], Awaitable[Any]], within: float, what: str, interval: float = 0.2
) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


async def wait_peer(peer: Caller | Agent, within: float) -> int:
    """SIPp's exit status. Polled, not waited for in a thread: twenty waiting threads would
    starve the default executor that the archiver and the prompt server also use."""
    assert peer.proc is not None, "not started"
    proc = peer.proc
    await until(lambda: _true(proc.poll() is not None), within, "SIPp to exit")
    assert proc.returncode is not None
    return proc.returncode


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Studio-recorded prompts (sources, built cache) made of tones, so that their sound is
    recognisable in a recording; the real build pipeline converts them."""
    sources = tmp_path_factory.mktemp("prompts")
    (sources / "fi").mkdir()
    for name, seconds, hz in (("notice", NOTICE_SECONDS, NOTICE_HZ), ("closed", 2, CLOSED_HZ)):
        subprocess.run(
            [
                "sox",
                "-n",
                "-r",
                "44100",
                "-c",
                "2",
                "-b",
                "16",
                str(sources / "fi" / f"{name}.wav"),
                "synth",
                str(seconds),
                "sine",
                str(hz),
                "vol",
                "0.5",
            ],
            check=True,
            capture_output=True,
        )
    cache = tmp_path_factory.mktemp("prompt-cache")
    report = build_prompts(sources, cache)
    assert report.ok, report
    return sources, cache


class PromptServer:
    """The prompt audio over HTTP in a thread of its own, for the whole module: Asterisk caches
    media by URL, so a stable URL lets later tests play from its cache."""

    def __init__(self, catalog: PromptCatalog, port: int) -> None:
        self.catalog, self.port = catalog, port
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        app = web.Application()
        add_routes(app, self.catalog)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def prompt_server(prompts: tuple[Path, Path]) -> Iterator[PromptServer]:
    sources, cache = prompts
    port = free_block(1, start=40000, end=45000)
    server = PromptServer(PromptCatalog(sources, cache, f"http://127.0.0.1:{port}"), port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def flow(
    bare_stack: Stack, prompts: tuple[Path, Path], prompt_server: PromptServer, tmp_path: Path
) -> AsyncIterator[Flow]:
    prompt_sources, _ = prompts
    catalog = prompt_server.catalog
    routing_file = tmp_path / "routing.toml"
    routing_file.write_text(ROUTING)
    archive_dir = tmp_path / "archive"
    archive_dir.mkdir(mode=0o750)
    store = CallStore(bare_stack.app_dsn, tmp_path / "journal")
    await store.start()
    routing = RoutingProvider(routing_file, prompts_dir=prompt_sources, handle_sighup=False)
    harness: Flow | None = None
    try:
        async with AriClient(
            bare_stack.ari_url, bare_stack.ari_user, bare_stack.ari_password, "callrec"
        ) as ari:
            archiver = RecordingArchiver(archive_dir, store)
            manager = CallManager(
                ari, store, archiver, routing, catalog, "callrec", round_pause=0.5
            )
            harness = Flow(bare_stack, ari, store, archiver, routing, catalog, archive_dir, manager)

            reconciling: set[asyncio.Task[None]] = set()

            async def to_current_manager(event: Event) -> None:
                # as the service does: reconcile after every (re)connection, in the background
                assert harness is not None
                if isinstance(event, Connected):
                    task = asyncio.create_task(harness.manager.reconcile())
                    reconciling.add(task)
                    task.add_done_callback(reconciling.discard)
                await harness.manager.handle(event)

            events = asyncio.create_task(ari.run_events(to_current_manager))
            try:
                await until(
                    lambda: _true(ari.connected and harness.manager.reconciliations > 0), 20, "ARI"
                )
                yield harness
                await until(lambda: _true(harness.manager.active_calls == 0), 60, "calls to end")
            finally:
                events.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await events
                await asyncio.gather(*reconciling, return_exceptions=True)
                await harness.manager.close()
    finally:
        for peer in harness.peers if harness else []:
            peer.stop()
        await store.close()


async def _true(value: bool) -> bool:
    return value


# -- the tests --------------------------------------------------------------------------------


async def test_conversation_is_recorded_from_the_first_word(flow: Flow) -> None:
    agent = flow.agent("agent1", answer_after=1.0)
    talk = 6.0
    caller = flow.call(
        IN_ORDER,
        "0401000001",
        caller_name="Maija Meikäläinen",
        talk_seconds=flow.notice_seconds() + 1.0 + talk,
    )
    assert await wait_peer(caller, 90) == 0, caller.output()
    row = await flow.finished("0401000001")

    assert row["service_number"] == IN_ORDER
    assert row["service_name"] == "Ajanvaraus"
    assert row["caller_name"] == "Maija Meikäläinen"
    assert row["agent_name"] == "Aino Agentti"
    assert row["agent_endpoint"] == "PJSIP/agent1"
    assert row["end_reason"] == "completed"
    assert row["notice_completed"] is True
    notice = flow.catalog.resolve("notice", "fi")
    assert row["notice_prompt"] == f"notice-fi-{notice.version}"
    assert row["notice_language"] == "fi"
    assert row["started_at"] <= row["notice_started_at"] < row["answered_at"] < row["ended_at"]
    waited = (row["answered_at"] - row["notice_started_at"]).total_seconds()
    assert waited >= flow.notice_seconds(), "no agent reached before the notice ended"
    assert len(agent.invites()) == 1
    # the agent's phone shows the caller's number
    assert "0401000001" in agent.invites()[0]

    rec = await flow.recording(row["id"])
    assert rec is not None, "recording row"
    assert re.fullmatch(rf"\d{{4}}/\d{{2}}/\d{{2}}/{row['id']}\.wav", rec["path"])
    path = flow.archive_dir / rec["path"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    data = path.read_bytes()
    assert rec["bytes"] == len(data)
    assert rec["sha256"] == hashlib.sha256(data).hexdigest()
    talked_ms = (row["ended_at"] - row["answered_at"]).total_seconds() * 1000
    assert abs(rec["duration_ms"] - talked_ms) < 1000, (rec["duration_ms"], talked_ms)
    assert abs(rec["duration_ms"] - talk * 1000) < 2500

    shares = tone_shares(path, CALLER_HZ, AGENT_HZ["agent1"], CONTROL_HZ, NOTICE_HZ)
    assert len(shares) >= int(talk) - 1
    for second, s in enumerate(shares):
        # both parties from the first second on, and nothing else (no notice, no ringing)
        assert s[CALLER_HZ] > PRESENT and s[AGENT_HZ["agent1"]] > PRESENT, (second, s)
        assert s[CONTROL_HZ] < 0.01 and s[NOTICE_HZ] < 0.01, (second, s)
    assert_two_tones_only(shares, CALLER_HZ, AGENT_HZ["agent1"])
    assert f"callrec-{row['id']}" not in await flow.spool_names()


async def test_busy_agent_is_skipped_for_the_next(flow: Flow) -> None:
    busy = flow.agent("agent1", reject=486)
    flow.agent("agent2", answer_after=0.5)
    caller = flow.call(IN_ORDER, "0401000002", talk_seconds=flow.notice_seconds() + 5)
    assert await wait_peer(caller, 90) == 0, caller.output()
    row = await flow.finished("0401000002")
    assert (row["agent_name"], row["end_reason"]) == ("Bertil Bengtsson", "completed")
    assert len(busy.invites()) >= 1
    rec = await flow.recording(row["id"])
    assert rec is not None
    shares = tone_shares(flow.archive_dir / rec["path"], CALLER_HZ, AGENT_HZ["agent2"])
    assert len(shares) >= 3, "some 4 s of conversation recorded"  # or the loop checks nothing
    for s in shares[:-1]:
        assert s[CALLER_HZ] > PRESENT and s[AGENT_HZ["agent2"]] > PRESENT, s


async def test_no_agent_within_max_wait_is_never_recorded(flow: Flow) -> None:
    # agent3 has no phone listening: every attempt fails until max_wait (5 s) is over
    caller = flow.call(NOBODY, "0401000003", talk_seconds=flow.notice_seconds() + 40)
    assert await wait_peer(caller, 120) == 0, caller.output()  # we hung up on it
    row = await flow.finished("0401000003")
    assert row["end_reason"] == "no_agent"
    assert row["notice_completed"] is True
    assert row["answered_at"] is None and row["agent_name"] is None
    assert row["recording_name"] is None
    assert await flow.recording(row["id"]) is None
    waited = (row["ended_at"] - row["notice_started_at"]).total_seconds()
    assert flow.notice_seconds() + 5 <= waited < flow.notice_seconds() + 5 + 30
    assert not any(str(row["id"]) in name for name in await flow.spool_names())


async def test_caller_hangs_up_during_the_notice(flow: Flow) -> None:
    agent = flow.agent("agent1", answer_after=0.2)
    assert flow.notice_seconds() > 2, "the notice must outlast the caller's patience"
    caller = flow.call(IN_ORDER, "0401000004", talk_seconds=1.0)
    assert await wait_peer(caller, 60) == 0, caller.output()
    row = await flow.finished("0401000004")
    assert (row["end_reason"], row["abandoned_phase"]) == ("abandoned", "notice")
    assert row["notice_completed"] is False
    assert row["notice_started_at"] is not None
    assert agent.invites() == [], "no agent rung before the notice ended"
    assert await flow.recording(row["id"]) is None


async def test_caller_hangs_up_while_agents_ring(flow: Flow) -> None:
    agent = flow.agent("agent1", answer_after=30)
    caller = flow.call(IN_ORDER, "0401000005", talk_seconds=flow.notice_seconds() + 1.5)
    assert await wait_peer(caller, 60) == 0, caller.output()
    row = await flow.finished("0401000005")
    assert (row["end_reason"], row["abandoned_phase"]) == ("abandoned", "ringing")
    assert len(agent.invites()) == 1
    await until(lambda: _true("CANCEL sip:" in agent.messages()), 10, "CANCEL to agent1")
    assert await flow.recording(row["id"]) is None


async def test_ring_all_two_answers_100ms_apart_one_wins(flow: Flow) -> None:
    first = flow.agent("agent1", answer_after=1.0)
    second = flow.agent("agent2", answer_after=1.1)
    caller = flow.call(RING_ALL, "0401000006", talk_seconds=flow.notice_seconds() + 6)
    assert await wait_peer(caller, 90) == 0, caller.output()
    row = await flow.finished("0401000006")
    assert row["end_reason"] == "completed"
    assert len(first.invites()) == 1 and len(second.invites()) == 1
    winner = "agent1" if row["agent_name"] == "Aino Agentti" else "agent2"
    loser = second if winner == "agent1" else first
    # the loser is hung up (BYE after its 200 OK, or CANCEL if it had not answered yet)
    await until(
        lambda: _true(bool(re.search(r"^(BYE|CANCEL) sip:", loser.messages(), re.MULTILINE))),
        10,
        "hangup of the second agent",
    )
    rec = await flow.recording(row["id"])
    assert rec is not None
    losing_hz = AGENT_HZ["agent2" if winner == "agent1" else "agent1"]
    shares = tone_shares(flow.archive_dir / rec["path"], CALLER_HZ, AGENT_HZ[winner], losing_hz)
    assert len(shares) >= 2, "the conversation recorded"  # or the loop checks nothing
    for s in shares:
        assert s[CALLER_HZ] > PRESENT and s[AGENT_HZ[winner]] > PRESENT, s
        assert s[losing_hz] < 0.01, "the second agent never reached the caller"


async def test_agent_legs_ring_outside_our_application_and_any_bridge(flow: Flow) -> None:
    # one request per leg (an originate): the leg enters our application when answered;
    # until then it is only subscribed (listed, its hang-up reported) and in no bridge
    first = flow.agent("agent1", answer_after=3.0)
    flow.agent("agent2", answer_after=3.5)
    caller = flow.call(RING_ALL, "0401000007", talk_seconds=flow.notice_seconds() + 7)

    async def ringing_legs() -> tuple[dict[str, Any], list[Channel]] | None:
        row = await flow.row("0401000007")
        if row is None or row["state"] != "ringing":
            return None
        legs = [c for c in await flow.ari.list_channels() if c.name.startswith("PJSIP/agent")]
        return (row, legs) if len(legs) == 2 else None

    row, legs = await until(ringing_legs, 60, "both agent legs ringing")
    assert {leg.state for leg in legs} <= {"Down", "Ring", "Ringing"}
    leg_ids = {leg.id for leg in legs}
    assert leg_ids <= set((await flow.ari.get_application()).channel_ids)
    for bridge in await flow.ari.list_bridges():
        assert not leg_ids & set(bridge.channels), bridge
    assert [b.id for b in await flow.ari.list_bridges() if b.id == row["bridge_id"]]
    # the agent's phone is shown the caller's number (the caller as the leg's originator)
    received = first.messages()
    assert re.search(r"^From:.*0401000007", received, re.MULTILINE | re.IGNORECASE), received
    assert await wait_peer(caller, 90) == 0, caller.output()
    row = await flow.finished("0401000007")
    assert row["end_reason"] == "completed"
    assert row["agent_channel_id"] in leg_ids
    assert row["bridge_id"] not in {b.id for b in await flow.ari.list_bridges()}
    rec = await flow.recording(row["id"])
    assert rec is not None


async def test_unknown_service_number_is_hung_up(flow: Flow) -> None:
    caller = flow.call(UNKNOWN, "0401000007", talk_seconds=5)
    assert await wait_peer(caller, 60) != 0, "the call is refused, not answered"
    assert "SIP/2.0 404" in caller.messages()
    row = await flow.finished("0401000007")
    assert row["end_reason"] == "unknown_service"
    assert row["service_number"] == UNKNOWN
    assert row["answered_at"] is None and row["notice_started_at"] is None


def caller_tone(i: int) -> int:
    hz = 300 + 50 * i
    return hz if hz not in AGENT_HZ.values() else 2500 + 10 * i


async def test_twenty_concurrent_calls_each_get_their_own_recording(flow: Flow) -> None:
    count = 20
    rtp_ports = flow.stack.cfg.rtp_end - flow.stack.cfg.rtp_start + 1
    # every call holds two channels (caller, agent), each an RTP + RTCP port pair
    assert rtp_ports >= 4 * count, "devstack's test stacks must have room for the calls"
    agent = flow.agent("agent1", answer_after=0.5)
    calls = {
        f"04020000{i:02d}": flow.call(
            IN_ORDER,
            f"04020000{i:02d}",
            tone_hz=caller_tone(i),
            talk_seconds=NOTICE_SECONDS + 4 + i * 0.25,
        )
        for i in range(count)
    }
    results = await asyncio.gather(*(wait_peer(c, 120) for c in calls.values()))
    assert results == [0] * count, [c.output() for c in calls.values()]
    tones = {number: caller.tone_hz for number, caller in calls.items()}
    for i, number in enumerate(calls):
        row = await flow.finished(number)
        assert row["end_reason"] == "completed", (number, row["end_reason"])
        rec = await flow.recording(row["id"])
        assert rec is not None, number
        others = [hz for n, hz in tones.items() if n != number]
        shares = tone_shares(
            flow.archive_dir / rec["path"], tones[number], AGENT_HZ["agent1"], *others
        )
        # each file is as long as its own call and holds its own caller's tone only
        assert abs(rec["duration_ms"] - (4000 + i * 250)) < 1500, (number, rec["duration_ms"])
        for s in shares:
            assert s[tones[number]] > PRESENT and s[AGENT_HZ["agent1"]] > PRESENT, (number, s)
            assert max(s[o] for o in others) < 0.01, (number, "another call's audio", s)
    assert not any(n.startswith("callrec-") for n in await flow.spool_names())
    assert len(agent.invites()) == count


HOSTILE = [
    'Quote "me" \\ please',
    "'; DROP TABLE calls; --",
    "../../etc/passwd",
    "x" * 500,
    "Päivi 📞 Ääkkönen",
    "",
    "anonymous",
]


def same_or_normalised(stored: str, sent: str) -> bool:
    """Verbatim, or as it went over SIP (percent-encoded in the URI, backslash-escaped in the
    quoted display name), or cut short by Asterisk's limits."""
    forms = (sent, sip_uri_user(sent), sent.replace("\\", "\\\\").replace('"', '\\"'))
    if stored in forms:
        return True
    return len(stored) >= 40 and any(form.startswith(stored) for form in forms)


async def _finished_since(flow: Flow, since: datetime, count: int) -> list[asyncpg.Record]:
    """The calls started since `since`, oldest first, once all `count` are over (and their
    recordings archived); empty until then."""
    conn = await asyncpg.connect(flow.stack.owner_dsn)
    try:
        rows = await conn.fetch(
            "SELECT * FROM calls WHERE started_at > $1 ORDER BY started_at", since)
    finally:
        await conn.close()
    active = {s.call_id for s in flow.manager.states()}
    if len(rows) != count or any(r["state"] != "done" or r["id"] in active for r in rows):
        return []
    return rows


async def _calls_at_once(flow: Flow, values: list[str]) -> list[tuple[str, asyncpg.Record]]:
    """A call from each value (number and name) to the in-order service, together; each
    value with its call's row once all are over."""
    since = datetime.now(UTC)
    callers = []
    for value in values:
        if callers:  # the one before in first: the rows are told apart by when they started
            started = functools.partial(_started_since, flow, since, len(callers))
            await until(started, 30, "the call's row")
        callers.append(flow.call(
            IN_ORDER, value, caller_name=value, talk_seconds=flow.notice_seconds() + 3))
    for caller, value in zip(callers, values, strict=True):
        assert await wait_peer(caller, 60) == 0, (value, caller.output())
    done = await until(lambda: _finished_since(flow, since, len(values)), 60, "calls over")
    return list(zip(values, done, strict=True))


async def _started_since(flow: Flow, since: datetime, count: int) -> bool:
    row = await flow.fetchrow("SELECT count(*) AS n FROM calls WHERE started_at > $1", since)
    return row is not None and row["n"] >= count


async def test_hostile_caller_ids_are_data_never_paths(flow: Flow) -> None:
    # two calls at a time, one for each agent of the service
    flow.agent("agent1", answer_after=0.3)
    flow.agent("agent2", answer_after=0.3)
    rows: list[tuple[str, asyncpg.Record]] = []
    for i in range(0, len(HOSTILE), 2):
        rows += await _calls_at_once(flow, HOSTILE[i:i + 2])
    for value, row in rows:
        assert same_or_normalised(row["caller_name"], value), (row["caller_name"], value)
        # the URI's user part ends at the first ';' (a SIP parameter follows): what the
        # signalling delivered is stored, never more
        number = row["caller_number"]
        assert value.startswith(number) or sip_uri_user(value).startswith(number), number
        assert row["end_reason"] == "completed"
        rec = await flow.recording(row["id"])
        assert rec is not None
        assert re.fullmatch(rf"\d{{4}}/\d{{2}}/\d{{2}}/{row['id']}\.wav", rec["path"])
    conn = await asyncpg.connect(flow.stack.owner_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM calls") >= len(HOSTILE), "table intact"
    finally:
        await conn.close()
    for path in flow.archive_dir.rglob("*"):
        assert re.fullmatch(r"[0-9a-f-]{36}\.wav|\d{2,4}", path.name), path


def stop_all_threads(pid: int) -> None:
    """SIGSTOP the process and return once every thread of it has stopped: the signal stops
    them only as each is next scheduled, and one already running can answer a request sent
    meanwhile."""
    os.kill(pid, signal.SIGSTOP)

    def stopped() -> bool:
        states = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
                stat_line = Path(f"/proc/{pid}/task/{task}/stat").read_text()
                states.append(stat_line.rsplit(")", 1)[1].split()[0])
        return all(state in "Tt" for state in states)

    eventually_sync(stopped, timeout=5, interval=0.001, what=f"process {pid} stopped")


@pytest.mark.parametrize(
    ("request_name", "number"),
    [("snoop", "0401000040"), ("record_channel", "0401000041"), ("add_channel", "0401000042"),
     ("create_bridge", "0401000043")],
)
async def test_request_answered_late_by_a_stalled_asterisk_is_still_recorded(
    flow: Flow, request_name: str, number: str
) -> None:
    # At saturation Asterisk once answered a snoop request after callrec had given up on it
    # and made the snoop late, under the same id; a second request was then refused (the id
    # in use) and the call went unrecorded. Here Asterisk is stopped (SIGSTOP) as the snoop's
    # or the recording's request goes out, or the agent's into the call's bridge (the call's
    # second add: the caller's comes first), or the call's bridge's create as the
    # ringing starts (made again at the answer, where Asterisk says it exists already: once
    # taken for a refusal that failed the call), and let go once callrec has given up.
    pid = read_pid(flow.stack.asterisk.pidfile)
    assert pid is not None
    real_request = getattr(flow.ari, request_name)
    given_up: list[str] = []
    added: list[str] = []

    async def in_a_stall(channel_id: str, *args: Any, **kwargs: Any) -> Any:
        if request_name == "add_channel" and not added:
            added.append(args[0])  # the caller's
            return await real_request(channel_id, *args, **kwargs)
        if given_up:
            return await real_request(channel_id, *args, **kwargs)
        loop = asyncio.get_running_loop()
        stop_all_threads(pid)
        loop.call_later(2.0, os.kill, pid, signal.SIGCONT)
        try:
            # given up after 1 s, as the client gives up after its timeout; only this
            # request: those sent alongside it wait out the stall with the usual timeout
            async with asyncio.timeout(1.0):
                return await real_request(channel_id, *args, **kwargs)
        except TimeoutError:
            exc = AriNoAnswer(f"{request_name}: no answer within 1 s")
            given_up.append(repr(exc))
            raise exc from None
        except Exception as exc:
            given_up.append(repr(exc))
            raise

    setattr(flow.ari, request_name, in_a_stall)
    try:
        flow.agent("agent1", answer_after=1.0)
        # the caller hangs up at a fixed time, and the stall's 2 s come out of the recording
        # (or, as the ringing starts, the bridge's create, out of the conversation): talk
        # enough that the 5 s checked below are left
        talk = NOTICE_SECONDS + 10 + (3 if request_name == "create_bridge" else 0)
        caller = flow.call(IN_ORDER, number, talk_seconds=talk)
        live = await until(lambda: _conversation(flow, number), 60, "the conversation")
        # the agent's add may still be under way in the conversation (recorded from before)
        await until(lambda: _true(bool(given_up)), 10, "callrec giving up on the request")
        assert "AriNoAnswer" in given_up[0], given_up
        if request_name == "snoop":
            # what left the call unrecorded: Asterisk refuses a snoop id in use
            with pytest.raises(AriServerError, match="500"):
                await flow.ari.snoop(live["caller_channel_id"], snoop_id=snoop_id_for(live["id"]))
        assert await wait_peer(caller, 60) == 0, caller.output()
    finally:
        os.kill(pid, signal.SIGCONT)
    row = await flow.finished(number)
    assert row["end_reason"] == "completed"
    rec = await flow.recording(row["id"])
    assert rec is not None, "recorded all the same"
    shares = tone_shares(flow.archive_dir / rec["path"], CALLER_HZ, AGENT_HZ["agent1"])
    assert len(shares) >= 5
    # the recording starts before the agent is added: stalled there, it is heard later
    heard_from = 3 if request_name == "add_channel" else 0
    for second, s in enumerate(shares[heard_from:], heard_from):
        assert s[CALLER_HZ] > PRESENT and s[AGENT_HZ["agent1"]] > PRESENT, (second, s)


async def test_restart_mid_conversation_resumes_and_archives(flow: Flow) -> None:
    flow.agent("agent1", answer_after=0.5)
    caller = flow.call(IN_ORDER, "0401000008", talk_seconds=flow.notice_seconds() + 10)
    row = await until(lambda: _conversation(flow, "0401000008"), 60, "the call in conversation")
    # the first manager dies mid-call (its tasks cancelled, nothing cleaned up in Asterisk);
    # a new one, as after a restart, takes over through reconciliation
    await flow.manager.close()
    flow.manager = flow.new_manager()
    await flow.manager.reconcile()
    resumed = [s for s in flow.manager.states() if s.call_id == row["id"]]
    assert resumed and resumed[0].phase.value == "conversation"
    assert flow.manager.tracker.in_call("agent1"), "the new run knows agent1 is talking"
    assert await wait_peer(caller, 60) == 0, caller.output()
    done = await flow.finished("0401000008", within=90)
    await until(lambda: _true(not flow.manager.tracker.in_call("agent1")), 30, "agent1 free")
    assert done["end_reason"] == "completed"
    assert done["agent_name"] == "Aino Agentti"
    rec = await flow.recording(done["id"])
    assert rec is not None
    assert rec["duration_ms"] > 8000, "the whole conversation, across the restart"


async def test_stop_while_ringing_hands_the_caller_to_the_dialplan(flow: Flow) -> None:
    agent = flow.agent("agent1", answer_after=60)
    flow.call(IN_ORDER, "0401000009", talk_seconds=flow.notice_seconds() + 60)
    await until(lambda: _true(len(agent.invites()) == 1), 60, "agent1 ringing")
    row = await flow.row("0401000009")
    assert row is not None and row["state"] == "ringing"
    await flow.manager.close()  # a graceful stop: the waiting caller is not dropped
    done = await flow.finished("0401000009")
    assert (done["id"], done["end_reason"]) == (row["id"], "interrupted")
    await until(lambda: _true("CANCEL sip:" in agent.messages()), 10, "our ringing stopped")
    # the dialplan's handback rings the agents itself, unrecorded
    await until(lambda: _true(len(agent.invites()) == 2), 20, "the dialplan ringing agent1")
    flow.manager = flow.new_manager()
    await flow.manager.reconcile()
    assert flow.manager.states() == [], "a call gone on in the dialplan is no longer ours"
    console = (flow.stack.asterisk.log_dir / "messages.log").read_text(errors="replace")
    assert "callrec stopped before the call to" in console


async def _conversation(flow: Flow, number: str) -> asyncpg.Record | None:
    row = await flow.row(number)
    return row if row is not None and row["state"] == "conversation" else None


async def test_database_down_during_a_call_the_row_lands_later(flow: Flow) -> None:
    flow.agent("agent1", answer_after=0.5)
    caller = flow.call(IN_ORDER, "0401000010", talk_seconds=NOTICE_SECONDS + 8)
    row = await until(lambda: _conversation(flow, "0401000010"), 60, "the call in conversation")
    await asyncio.to_thread(flow.stack.pg.stop)
    try:
        assert await wait_peer(caller, 60) == 0, caller.output()
        # the call ends and its recording is archived while PostgreSQL is away
        await until(lambda: _true(flow.manager.active_calls == 0), 60, "the call to end")
        assert flow.store.journal_backlog > 0, "the end of the call waits in the journal"
    finally:
        await asyncio.to_thread(flow.stack.pg.start)
    done = await flow.finished("0401000010", within=60)
    assert done["id"] == row["id"]
    assert done["end_reason"] == "completed"
    assert done["ended_at"] > done["answered_at"]
    rec = await flow.recording(done["id"])
    assert rec is not None, "the recording row was journalled too"
    assert (flow.archive_dir / rec["path"]).is_file()
    await until(lambda: _true(flow.store.journal_backlog == 0), 30, "the journal drained")


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_asterisk_restart_mid_call_closes_it_and_calls_go_on(flow: Flow, how: str) -> None:
    flow.agent("agent1", answer_after=0.5)
    caller = flow.call(IN_ORDER, "0401000011", talk_seconds=NOTICE_SECONDS + 30)
    row = await until(lambda: _conversation(flow, "0401000011"), 60, "the call in conversation")
    # Asterisk writes a recording through a 32 KB stdio buffer (main/file.c), 2.05 s of 8 kHz
    # audio: a SIGKILL loses what is still in it, so talk long enough for some to reach disk
    await asyncio.sleep(5)
    reconnects = flow.ari.reconnects
    cut_at = datetime.now(UTC)
    if how == "stop":  # Asterisk hangs up its channels and tells us before it goes
        await asyncio.to_thread(flow.stack.asterisk.stop)
    else:  # gone without a word: only reconciliation after the reconnect can tell
        pid = read_pid(flow.stack.asterisk.pidfile)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await until(lambda: _true(not alive(pid)), 20, "Asterisk gone")
        await asyncio.to_thread(flow.stack.asterisk.stop)  # clears the pid file
    down_until = datetime.now(UTC)
    await asyncio.to_thread(flow.stack.asterisk.start)
    await until(lambda: _true(flow.ari.reconnects > reconnects and flow.ari.connected), 60, "ARI")
    # the cut call is closed consistently, as cut by Asterisk (no party hung up), at the
    # time it was cut (not when callrec found out), its (partial) recording archived
    done = await flow.finished("0401000011", within=90)
    assert done["id"] == row["id"]
    assert done["end_reason"] == "interrupted"
    assert done["abandoned_phase"] is None
    assert cut_at - timedelta(seconds=1) <= done["ended_at"] <= down_until, (cut_at, done)
    rec = await flow.recording(done["id"])
    assert rec is not None and rec["duration_ms"] >= 1500
    if how == "stop":
        await wait_peer(caller, 30)  # hung up on by Asterisk as it went
    else:
        # nobody can hang up on it: it would wait out its script (half a minute) for nothing
        await asyncio.to_thread(caller.stop)
    # and the next call is taken as usual
    again = flow.call(IN_ORDER, "0401000012", talk_seconds=NOTICE_SECONDS + 4)
    assert await wait_peer(again, 60) == 0, again.output()
    assert (await flow.finished("0401000012"))["end_reason"] == "completed"


async def test_asterisk_killed_while_callrec_was_down_the_call_ends_interrupted(
    flow: Flow,
) -> None:
    flow.agent("agent1", answer_after=0.5)
    caller = flow.call(IN_ORDER, "0401000033", talk_seconds=NOTICE_SECONDS + 30)
    row = await until(lambda: _conversation(flow, "0401000033"), 60, "the call in conversation")
    await asyncio.sleep(3)  # some audio past Asterisk's write buffer (above)
    # callrec dies mid-call, then Asterisk too; the next run finds the call's channels gone
    # and an Asterisk started after the call: cut, not hung up
    await flow.manager.close()
    pid = read_pid(flow.stack.asterisk.pidfile)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await until(lambda: _true(not alive(pid)), 20, "Asterisk gone")
    await asyncio.to_thread(flow.stack.asterisk.stop)
    flow.manager = flow.new_manager()
    reconciled = flow.manager.reconciliations
    await asyncio.to_thread(flow.stack.asterisk.start)
    await until(lambda: _true(flow.manager.reconciliations > reconciled), 60, "reconciliation")
    done = await flow.finished("0401000033", within=90)
    assert done["id"] == row["id"]
    assert done["end_reason"] == "interrupted"
    assert (await flow.recording(done["id"])) is not None, "what Asterisk kept is archived"
    # the Asterisk that had the caller's call is gone: nobody can hang up on it
    await asyncio.to_thread(caller.stop)


async def test_round_robin_takes_turns(flow: Flow) -> None:
    flow.agent("agent1", answer_after=0.3)
    flow.agent("agent2", answer_after=0.3)
    answered = []
    for number in ("0401000013", "0401000014", "0401000015"):
        caller = flow.call(ROUND_ROBIN, number, talk_seconds=NOTICE_SECONDS + 3)
        assert await wait_peer(caller, 60) == 0, caller.output()
        answered.append((await flow.finished(number))["agent_name"])
    # who starts follows the calls before this test (the run reads them from the archive)
    assert set(answered) == {"Aino Agentti", "Bertil Bengtsson"}
    assert answered[0] != answered[1] and answered[2] == answered[0], answered


async def test_round_robin_goes_on_after_a_restart(flow: Flow) -> None:
    flow.agent("agent1", answer_after=0.3)
    flow.agent("agent2", answer_after=0.3)
    caller = flow.call(ROUND_ROBIN, "0401000031", talk_seconds=NOTICE_SECONDS + 3)
    assert await wait_peer(caller, 60) == 0, caller.output()
    first = (await flow.finished("0401000031"))["agent_name"]
    # a new run, as after a restart: its turns go on from the archive, not from agent1
    await flow.manager.close()
    flow.manager = flow.new_manager()
    await flow.manager.reconcile()
    caller = flow.call(ROUND_ROBIN, "0401000032", talk_seconds=NOTICE_SECONDS + 3)
    assert await wait_peer(caller, 60) == 0, caller.output()
    second = (await flow.finished("0401000032"))["agent_name"]
    assert {first, second} == {"Aino Agentti", "Bertil Bengtsson"}, (first, second)


async def test_closed_service_plays_the_closed_prompt_and_rings_nobody(flow: Flow) -> None:
    agent = flow.agent("agent1", answer_after=0.3)
    caller = flow.call(CLOSED_NOW, "0401000016", talk_seconds=30)
    assert await wait_peer(caller, 60) == 0, caller.output()  # hung up by us
    row = await flow.finished("0401000016")
    assert row["end_reason"] == "closed"
    assert row["answered_at"] is None and row["recording_name"] is None
    assert agent.invites() == []
    took = (row["ended_at"] - row["started_at"]).total_seconds()
    assert 2 <= took < 10, "the closed prompt (2 s) was played, then the call hung up"
