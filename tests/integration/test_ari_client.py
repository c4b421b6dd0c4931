"""AriClient against a real Asterisk 22 (the bare local stack: no callrec service, so the
test itself is the ARI application). Nothing here is mocked."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from callrec.archive.files import unfinished_header
from callrec.archive.threads import ArchiveThreads
from callrec.ari import errors
from callrec.ari.backoff import Backoff
from callrec.ari.client import AriClient
from callrec.ari.events import (
    ApplicationReplaced,
    ChannelEnteredBridge,
    ChannelHangupRequest,
    ChannelLeftBridge,
    ChannelStateChange,
    Connected,
    Dial,
    Disconnected,
    Event,
    PlaybackFinished,
    PlaybackStarted,
    RecordingFinished,
    RecordingStarted,
    StasisEnd,
    StasisStart,
)
from devstack.proc import read_pid
from devstack.sipp import Agent, Caller
from devstack.stack import Stack
from tests.polling import eventually

pytestmark = pytest.mark.stack

E = TypeVar("E", bound=Event)
SERVICE_NUMBER = "0103808000"


class EventLog:
    """An event handler that keeps everything and lets a test wait for a matching event."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._taken: set[int] = set()
        self._changed = asyncio.Condition()

    async def __call__(self, event: Event) -> None:
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    async def wait(
        self, kind: type[E], where: Callable[[E], bool] = lambda e: True, within: float = 20
    ) -> E:
        """The first event of `kind` matching `where` not returned by an earlier wait."""

        def find() -> E | None:
            for i, event in enumerate(self.events):
                if i not in self._taken and isinstance(event, kind) and where(event):
                    self._taken.add(i)
                    return event
            return None

        found: E | None = None

        def ready() -> bool:
            nonlocal found
            found = find()
            return found is not None

        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(ready)
        except TimeoutError:
            seen = [e.type for e in self.events]
            raise AssertionError(f"no {kind.__name__} within {within} s; seen: {seen}") from None
        assert found is not None
        return found

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]


def client(stack: Stack, app: str, **kwargs: Any) -> AriClient:
    return AriClient(stack.ari_url, stack.ari_user, stack.ari_password, app, **kwargs)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class Running:
    """An AriClient with its event loop running and the first Connected received."""

    def __init__(self, ari: AriClient, log: EventLog, task: asyncio.Task[None]) -> None:
        self.ari, self.log, self.task = ari, log, task


async def start_events(ari: AriClient) -> Running:
    log = EventLog()
    task = asyncio.create_task(ari.run_events(log))
    first = await log.wait(Connected)
    assert first.reconnect is False
    assert ari.connected
    return Running(ari, log, task)


@contextlib.asynccontextmanager
async def one_call(
    stack: Stack, number: str, **kwargs: Any
) -> AsyncIterator[tuple[Running, Caller, StasisStart]]:
    """The `callrec` application with events running (`kwargs` for the client) and one SIPp
    call of a second's talk in it, from `number`: its StasisStart."""
    async with client(stack, "callrec", **kwargs) as ari:
        running = await start_events(ari)
        caller = Caller(
            sip_port=stack.sip_port,
            service_number=SERVICE_NUMBER,
            caller_number=number,
            talk_seconds=1,
        ).start()
        try:
            start = await running.log.wait(StasisStart, lambda e: e.args == (SERVICE_NUMBER,))
            yield running, caller, start
        finally:
            await _cancel(running.task)
            caller.stop()


@pytest.fixture(params=["websocket", "http"])
async def app(bare_stack: Stack, request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    """A client on a fresh application name, events running; REST on the events websocket
    (Asterisk 22.5+) or over HTTP."""
    on_websocket = request.param == "websocket"
    name = f"ari-test-{uuid.uuid4().hex[:8]}"
    async with client(bare_stack, name, rest_over_websocket=on_websocket) as ari:
        running = await start_events(ari)
        assert ari.rest_on_websocket is on_websocket
        try:
            yield running
        finally:
            await _cancel(running.task)
            assert not ari.connected


# -- REST basics -------------------------------------------------------------------------


async def test_ping_and_application(bare_stack: Stack) -> None:
    name = f"ari-test-{uuid.uuid4().hex[:8]}"
    async with client(bare_stack, name) as ari:
        await ari.ping()
        # an application exists in Asterisk only while its websocket is connected
        with pytest.raises(errors.AriNotFound, match="Application not found"):
            await ari.get_application()
        running = await start_events(ari)
        try:
            application = await ari.get_application()
            assert application.name == name
            assert application.channel_ids == ()
            assert application.bridge_ids == ()
            assert running.ari.rejected_events == 0
        finally:
            await _cancel(running.task)


async def test_missing_objects_raise_not_found(app: Running, tmp_path: Path) -> None:
    ari = app.ari
    before = ari.websocket_requests
    with pytest.raises(errors.AriNotFound, match="Channel not found") as info:
        await ari.get_channel("no-such-channel")
    assert info.value.ari_status == 404
    assert "GET /ari/channels/no-such-channel" in str(info.value)
    with pytest.raises(errors.AriNotFound, match="Bridge not found"):
        await ari.get_bridge("no-such-bridge")
    with pytest.raises(errors.AriNotFound):
        await ari.hangup("no-such-channel")
    with pytest.raises(errors.AriNotFound):
        await ari.stop_recording("no/such/recording")
    with pytest.raises(errors.AriNotFound):
        await ari.delete_stored_recording("no/such/recording")
    dest = tmp_path / "missing.wav"
    with pytest.raises(errors.AriNotFound, match="Recording not found"):
        await ari.download_recording("no/such/recording", dest)
    assert not dest.exists()
    with pytest.raises(errors.AriNotFound):
        await ari.endpoint_state("PJSIP", "nobody")
    # recording names hold '/': quoted in the path, the websocket takes them as HTTP does
    # (Asterisk unquotes each segment); only the download streams a file over HTTP
    assert ari.websocket_requests - before == (6 if ari.rest_on_websocket else 0)


async def test_endpoint_state_of_an_agent(app: Running) -> None:
    # agents have static contacts in the demo PBX: Asterisk regards them as reachable
    assert await app.ari.endpoint_state("PJSIP", "agent1") in ("online", "offline", "unknown")
    assert await app.ari.endpoint_state("PJSIP", "agent1") == "online"


async def test_startup_time_of_the_running_asterisk(app: Running) -> None:
    started = await app.ari.asterisk_started_at()
    assert started.utcoffset() is not None
    age = (datetime.now(UTC) - started).total_seconds()
    # Asterisk's clock is this machine's: it started before now, at most the suite's span ago
    assert -1 < age < 6 * 3600, started
    assert await app.ari.asterisk_started_at() == started


async def test_wrong_password_and_dead_port(bare_stack: Stack) -> None:
    bad = AriClient(bare_stack.ari_url, bare_stack.ari_user, "not-the-password", "x")
    async with bad:
        with pytest.raises(errors.AriError, match="401") as info:
            await bad.ping()
        assert info.value.ari_status == 401
        assert not isinstance(info.value, errors.AriUnavailable)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # nothing listens on the port now
    dead = AriClient(f"http://127.0.0.1:{port}", "u", "p", "x", request_timeout=2)
    async with dead:
        with pytest.raises(errors.AriUnavailable):
            await dead.ping()


async def test_bridge_lifecycle(app: Running) -> None:
    ari = app.ari
    bridge_id = f"br-{uuid.uuid4().hex[:8]}"
    bridge = await ari.create_bridge(bridge_id, name="ari transport test")
    try:
        assert (bridge.id, bridge.bridge_type, bridge.channels) == (bridge_id, "mixing", ())
        assert await ari.get_bridge(bridge_id) == bridge
        assert bridge_id in [b.id for b in await ari.list_bridges()]
        with pytest.raises(errors.AriConflict, match="already exists"):
            await ari.create_bridge(bridge_id)
        with pytest.raises(errors.AriUnprocessable, match="format"):
            await ari.record_bridge(bridge_id, f"ari-test/{bridge_id}", format="no-such-format")
        with pytest.raises(errors.AriBadRequest):
            await ari.add_channel(bridge_id, "no-such-channel")
    finally:
        await ari.destroy_bridge(bridge_id)

    async def gone() -> bool:
        # Asterisk answers the DELETE before the bridge has left its container.
        try:
            await ari.get_bridge(bridge_id)
        except errors.AriNotFound:
            return True
        return False

    await eventually(gone, timeout=5, what="destroyed bridge gone")
    with pytest.raises(errors.AriNotFound):
        await ari.destroy_bridge(bridge_id)


# -- the events websocket ----------------------------------------------------------------


async def test_reconnects_when_asterisk_drops_the_websocket(
    app: Running, bare_stack: Stack
) -> None:
    before = len(app.log.of(Connected))
    out = await asyncio.to_thread(bare_stack.asterisk.cli, "ari shutdown websocket sessions")
    assert "shutting down" in out.lower()
    dropped = await app.log.wait(Disconnected)
    assert "closed" in dropped.reason
    again = await app.log.wait(Connected, lambda e: e.reconnect)
    assert again.reconnect is True
    assert len(app.log.of(Connected)) == before + 1
    assert app.ari.reconnects == 1
    assert app.ari.connected
    # the application is registered again: REST sees it
    assert (await app.ari.get_application()).name == app.ari.app
    kinds = [e.type for e in app.log.events]
    assert kinds[-3:] == ["Connected", "Disconnected", "Connected"]


async def test_heartbeat_notices_a_frozen_asterisk(bare_stack: Stack) -> None:
    """A peer that stops answering (here: Asterisk stopped with SIGSTOP) is noticed by the
    ping/pong heartbeat within 1.5 heartbeats, and the client reconnects once it is back."""
    pid = read_pid(bare_stack.asterisk.pidfile)
    assert pid is not None
    name = f"ari-test-{uuid.uuid4().hex[:8]}"
    async with client(bare_stack, name, heartbeat=1.0, request_timeout=2.0) as ari:
        running = await start_events(ari)
        try:
            os.kill(pid, signal.SIGSTOP)
            try:
                dropped = await running.log.wait(Disconnected, within=6)
            finally:
                os.kill(pid, signal.SIGCONT)
            assert "PONG" in dropped.reason
            again = await running.log.wait(Connected, lambda e: e.reconnect, within=30)
            assert again.reconnect
            assert ari.reconnects == 1
            await ari.ping()
        finally:
            await _cancel(running.task)


async def test_application_replaced_then_taken_back(bare_stack: Stack) -> None:
    name = f"ari-test-{uuid.uuid4().hex[:8]}"
    quick = {"backoff_factory": lambda: Backoff(base=0.2, cap=0.5)}
    async with client(bare_stack, name, **quick) as first, client(bare_stack, name) as second:
        one = await start_events(first)
        try:
            two = await start_events(second)
            try:
                await one.log.wait(ApplicationReplaced)
                gone = await one.log.wait(Disconnected)
                assert "replaced" in gone.reason
                back = await one.log.wait(Connected, lambda e: e.reconnect)
                assert back.reconnect
                # by connecting again the first client displaced the second one
                await two.log.wait(ApplicationReplaced)
                assert first.reconnects >= 1
            finally:
                await _cancel(two.task)
        finally:
            await _cancel(one.task)


# -- a real call through the transport ---------------------------------------------------

MODULES_CONF = Path(__file__).resolve().parents[2] / "asterisk-conf" / "modules.conf"


def _pbx_loads(module: str) -> bool:
    return any(
        line.split("=>", 1)[-1].strip() == module
        for line in MODULES_CONF.read_text().splitlines()
        if line.strip().startswith("load")
    )


class Call:
    """A SIPp caller that reached Stasis(callrec), and the client driving it."""

    def __init__(self, ari: AriClient, log: EventLog, start: StasisStart) -> None:
        self.ari, self.log, self.start = ari, log, start
        self.channel = start.channel
        self.bridge_id = f"call-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def call(bare_stack: Stack) -> AsyncIterator[Call]:
    """An answered incoming call into the dialplan's application "callrec"."""
    async with client(bare_stack, "callrec") as ari:
        running = await start_events(ari)
        caller = Caller(
            sip_port=bare_stack.sip_port,
            service_number=SERVICE_NUMBER,
            caller_number="0401234567",
            talk_seconds=60,
        ).start()
        this: Call | None = None
        try:
            start = await running.log.wait(StasisStart, lambda e: e.args == (SERVICE_NUMBER,))
            this = Call(ari, running.log, start)
            await ari.answer(this.channel.id)
            yield this
        finally:
            if this is not None:
                for cleanup in (
                    lambda: ari.hangup(this.channel.id),
                    lambda: ari.destroy_bridge(this.bridge_id),
                ):
                    with contextlib.suppress(errors.AriNotFound):
                        await cleanup()
            await _cancel(running.task)
            caller.stop()


async def test_incoming_call_metadata_and_channel_control(call: Call) -> None:
    ari, log, channel = call.ari, call.log, call.channel
    assert channel.caller.number == "0401234567"
    assert channel.exten == SERVICE_NUMBER
    assert channel.context == "from-trunk"
    assert channel.protocol_id, "PJSIP channels carry the SIP Call-ID"
    assert channel.creationtime is not None
    assert channel.id in (await ari.get_application()).channel_ids
    assert channel.id in [c.id for c in await ari.list_channels()]

    up = await log.wait(ChannelStateChange, lambda e: e.channel.id == channel.id)
    assert up.channel.state == "Up"
    assert (await ari.get_channel(channel.id)).state == "Up"

    await ari.ring(channel.id)
    await ari.ring_stop(channel.id)
    await ari.start_moh(channel.id)
    await ari.stop_moh(channel.id)

    # tone: needs no sound files; it plays until stopped
    playback_id = f"pb-{call.bridge_id}"
    playback = await ari.play(channel.id, "tone:ring;tonezone=fi", playback_id=playback_id)
    assert playback.id == playback_id
    assert playback.target_uri == f"channel:{channel.id}"
    started = await log.wait(PlaybackStarted, lambda e: e.playback.id == playback_id)
    assert started.playback.media_uri == "tone:ring;tonezone=fi"
    await ari.stop_playback(playback_id)
    finished = await log.wait(PlaybackFinished, lambda e: e.playback.id == playback_id)
    assert finished.playback.state in ("done", "canceled")

    await ari.hangup(channel.id, reason="normal")
    request = await log.wait(ChannelHangupRequest, lambda e: e.channel.id == channel.id)
    assert request.cause is None  # a soft hangup has no Q.850 cause
    await log.wait(StasisEnd, lambda e: e.channel.id == channel.id)
    # ChannelDestroyed may or may not follow: the channel has left our application
    async with asyncio.timeout(10):
        while True:
            try:
                await ari.get_channel(channel.id)
            except errors.AriNotFound:
                break
            await asyncio.sleep(0.1)
    assert ari.rejected_events == 0


async def test_caller_hangup_ends_stasis(bare_stack: Stack) -> None:
    """The caller's BYE arrives as ChannelHangupRequest (Asterisk 22 sends it without a
    cause) and StasisEnd; ChannelDestroyed is not delivered once the channel left Stasis
    unless the application subscribed to the channel explicitly."""
    async with one_call(bare_stack, "0409999999") as (running, caller, start):
        channel_id = start.channel.id
        await running.ari.answer(channel_id)
        request = await running.log.wait(
            ChannelHangupRequest, lambda e: e.channel.id == channel_id
        )
        assert request.cause in (None, 16)
        await running.log.wait(StasisEnd, lambda e: e.channel.id == channel_id)
        assert await asyncio.to_thread(caller.wait, 30) == 0, caller.output()


async def test_dial_an_agent_into_a_bridge(call: Call, bare_stack: Stack) -> None:
    ari, log, channel = call.ari, call.log, call.channel
    agent = Agent(name="agent1", port=bare_stack.agent_ports["agent1"], answer_after=0.5)
    agent.start()
    try:
        bridge = await ari.create_bridge(call.bridge_id)
        assert bridge.channels == ()
        await ari.add_channel(call.bridge_id, channel.id)
        entered = await log.wait(ChannelEnteredBridge, lambda e: e.bridge.id == call.bridge_id)
        assert entered.channel.id == channel.id

        agent_id = f"agent1-{call.bridge_id}"
        made = await ari.originate(
            "PJSIP/agent1", channel_id=agent_id, app_args="agent", originator=channel.id,
            timeout=20,
        )
        assert made.id == agent_id
        # ringing: subscribed to our application (listed, its events ours) but not in it
        assert agent_id in (await ari.get_application()).channel_ids
        assert not [e for e in log.of(StasisStart) if e.channel.id == agent_id]
        answered = await log.wait(
            Dial, lambda e: e.peer.id == agent_id and e.dialstatus == "ANSWER"
        )
        # no caller channel in the report; the originator shows in the connected line
        assert answered.caller is None
        assert answered.peer.connected.number == "0401234567"
        statuses = [e.dialstatus for e in log.of(Dial) if e.peer.id == agent_id]
        assert statuses[0] == "" and statuses[-1] == "ANSWER"
        agent_start = await log.wait(StasisStart, lambda e: e.channel.id == agent_id)
        assert agent_start.args == ("agent",)
        assert agent_start.channel.state == "Up", "it enters when answered"

        await ari.add_channel(call.bridge_id, agent_id)
        await log.wait(ChannelEnteredBridge, lambda e: e.channel.id == agent_id)
        assert set((await ari.get_bridge(call.bridge_id)).channels) == {channel.id, agent_id}
        with pytest.raises(errors.AriBadRequest, match="Channel not found"):
            await ari.remove_channel(call.bridge_id, "no-such-channel")
        await ari.remove_channel(call.bridge_id, agent_id)
        left = await log.wait(ChannelLeftBridge, lambda e: e.channel.id == agent_id)
        assert left.bridge.id == call.bridge_id
        with pytest.raises(errors.AriUnprocessable, match="not in"):
            await ari.remove_channel(call.bridge_id, agent_id)
        await ari.hangup(agent_id, reason="answered_elsewhere")
        await log.wait(StasisEnd, lambda e: e.channel.id == agent_id)
        assert ari.rejected_events == 0
    finally:
        agent.stop()


@pytest.mark.xfail(
    not _pbx_loads("chan_bridge_media.so"),
    reason="asterisk-conf/modules.conf does not load chan_bridge_media.so (the Recorder "
    "channel): Asterisk answers 500 'Failed to create recording channel'",
    strict=True,
    raises=errors.AriServerError,
)
async def test_record_a_bridge_and_download_the_file(
    call: Call, bare_stack: Stack, tmp_path: Path
) -> None:
    ari, log, channel = call.ari, call.log, call.channel
    recording = f"ari-test/{call.bridge_id}"  # '/' makes Asterisk use a subdirectory
    await ari.create_bridge(call.bridge_id)
    await ari.add_channel(call.bridge_id, channel.id)
    await log.wait(ChannelEnteredBridge, lambda e: e.channel.id == channel.id)
    try:
        live = await ari.record_bridge(call.bridge_id, recording)
        assert (live.name, live.format, live.target_uri) == (
            recording,
            "wav",
            f"bridge:{call.bridge_id}",
        )
        await log.wait(RecordingStarted, lambda e: e.recording.name == recording)
        with pytest.raises(errors.AriConflict):
            await ari.record_bridge(call.bridge_id, recording)  # ifExists=fail, name in use
        await asyncio.sleep(1.5)  # the caller's tone flows into the file meanwhile
        on_disk = bare_stack.asterisk.recordings / f"{recording}.wav"
        # while it is made, its file's sizes are not written: what the archive must not take
        # for a file cut by a crash
        assert await ari.recording_is_live(recording)
        assert unfinished_header(on_disk)
        await ari.stop_recording(recording)
        finished = await log.wait(RecordingFinished, lambda e: e.recording.name == recording)
        assert finished.recording.state == "done"
        assert not await ari.recording_is_live(recording)
        assert not unfinished_header(on_disk)
        assert finished.recording.duration is not None and finished.recording.duration >= 1

        stored = {r.name: r.format for r in await ari.list_stored_recordings()}
        assert stored.get(recording) == "wav"
        dest = tmp_path / "call.wav"
        size = await ari.download_recording(recording, dest)
        assert size == dest.stat().st_size == on_disk.stat().st_size
        assert dest.read_bytes() == on_disk.read_bytes()
        assert dest.read_bytes()[:4] == b"RIFF"
        assert size > 44 + 16000  # a header and more than a second of 8 kHz 16-bit audio
        await ari.delete_stored_recording(recording)
        assert not on_disk.exists()
        with pytest.raises(errors.AriNotFound):
            await ari.download_recording(recording, tmp_path / "again.wav")
        assert ari.rejected_events == 0
    finally:
        with contextlib.suppress(errors.AriNotFound):
            await ari.delete_stored_recording(recording)


async def test_snoop_on_a_channel_and_record_the_snoop(
    call: Call, bare_stack: Stack, tmp_path: Path
) -> None:
    ari, log, channel = call.ari, call.log, call.channel
    snoop_id = f"snoop-{call.bridge_id}"
    recording = f"ari-test/{snoop_id}"
    snoop = await ari.snoop(channel.id, snoop_id=snoop_id, app_args="snoop:test")
    assert snoop.id == snoop_id
    # it can be recorded only once it is in the application
    started = await log.wait(StasisStart, lambda e: e.channel.id == snoop_id)
    assert started.args == ("snoop:test",)
    try:
        live = await ari.record_channel(snoop_id, recording)
        assert live.target_uri == f"channel:{snoop_id}"
        await log.wait(RecordingStarted, lambda e: e.recording.name == recording)
        await asyncio.sleep(1.5)  # the caller's tone flows into the file meanwhile
        # the snoop hangs on the caller: hanging up the caller ends it and its recording
        await ari.hangup(channel.id)
        finished = await log.wait(RecordingFinished, lambda e: e.recording.name == recording)
        assert finished.recording.state == "done"
        await log.wait(StasisEnd, lambda e: e.channel.id == snoop_id)
        size = await ari.download_recording(recording, tmp_path / "snoop.wav")
        assert size > 44 + 16000  # a header and more than a second of 8 kHz 16-bit audio
        assert await _download_while_the_default_pool_is_held(
            bare_stack, recording, tmp_path / "again.wav") == size
        with pytest.raises(errors.AriNotFound):
            await ari.snoop("no-such-channel", snoop_id=f"{snoop_id}-2")
    finally:
        with contextlib.suppress(errors.AriNotFound):
            await ari.delete_stored_recording(recording)


async def _download_while_the_default_pool_is_held(
    stack: Stack, recording: str, dest: Path
) -> int:
    """A client whose file writes run on the archive's threads (as the service's) downloads
    while every thread of asyncio's default pool is busy (as with password hashes)."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(1))
    release = threading.Event()
    busy = asyncio.create_task(asyncio.to_thread(release.wait))
    threads = ArchiveThreads(workers=1)
    try:
        async with client(stack, "callrec-download", run_blocking=threads.run) as dl:
            return await asyncio.wait_for(dl.download_recording(recording, dest), 10)
    finally:
        release.set()
        await busy
        await threads.close()


async def test_event_filter_sends_only_the_types_asked_for(bare_stack: Stack) -> None:
    wanted = {"StasisStart", "StasisEnd"}
    async with one_call(bare_stack, "0409999998", event_types=wanted) as (running, caller, start):
        ari = running.ari
        await ari.answer(start.channel.id)  # a ChannelStateChange nobody asked for
        # the filter lets the answers to requests on the websocket through
        assert ari.rest_on_websocket and ari.websocket_requests >= 2
        await running.log.wait(StasisEnd, lambda e: e.channel.id == start.channel.id)
        assert await asyncio.to_thread(caller.wait, 30) == 0, caller.output()
        kinds = {type(e).__name__ for e in running.log.events}
        assert kinds == {"Connected", "StasisStart", "StasisEnd"}, kinds


async def test_asterisk_makes_no_variable_set_messages(bare_stack: Stack) -> None:
    # asterisk-conf/stasis.conf declines them: about 25 per call that callrec never reads,
    # each made into JSON in the application's one queue before the filter dropped it
    async with one_call(bare_stack, "0409999997") as (running, caller, start):  # no filter
        channel = start.channel.id
        await running.ari.answer(channel)
        await running.ari._request("POST", "channels", channel, "variable",
                                   params=[("variable", "CALLREC_TEST"), ("value", "x")])
        await running.log.wait(StasisEnd, lambda e: e.channel.id == channel)
        assert await asyncio.to_thread(caller.wait, 30) == 0, caller.output()
        kinds = {e.type for e in running.log.events}
        assert "ChannelStateChange" in kinds, "unfiltered events do arrive"
        assert "ChannelVarset" not in kinds, kinds
