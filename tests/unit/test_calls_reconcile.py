"""The manager's reconciliation when Asterisk does not answer it: tried again until a pass
completes, and given up for a newer one or at close."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from structlog.testing import capture_logs

from callrec.ari.errors import AriNoAnswer
from callrec.ari.models import Application, StoredRecording
from callrec.calls import machine as m
from callrec.calls.manager import AGENT_ARGS_PREFIX, CallManager
from tests.polling import eventually

pytestmark = pytest.mark.timeout(10)

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


class SlowAri:
    """Leaves the first `unanswered` reconciliation requests unanswered; `started` is when
    Asterisk last started."""

    def __init__(self, unanswered: int) -> None:
        self.unanswered = unanswered
        self.asked = 0
        self.started = T0
        self.channels: tuple[str, ...] = ()
        self.stored: list[StoredRecording] = []

    async def asterisk_started_at(self) -> datetime:
        self.asked += 1
        if self.unanswered:
            self.unanswered -= 1
            raise AriNoAnswer("GET /ari/asterisk/info: no answer within 10 s")
        return self.started

    async def get_application(self) -> Application:
        return Application("callrec", self.channels, ())

    async def list_stored_recordings(self) -> list[Any]:
        return list(self.stored)


class EmptyStore:
    def __init__(self) -> None:
        self.purged: set[uuid.UUID] = set()

    async def agent_history(self, since: datetime) -> list[dict[str, Any]]:
        return []

    async def open_calls(self) -> list[dict[str, Any]]:
        return []

    async def get_call(self, call_id: uuid.UUID) -> dict[str, Any] | None:
        return None

    async def was_purged(self, call_id: uuid.UUID) -> bool:
        return call_id in self.purged


class Archiver:
    def __init__(self) -> None:
        self.asked: list[tuple[uuid.UUID, str]] = []

    async def archive(self, ari: Any, call_id: uuid.UUID, name: str, started_at: datetime
                      ) -> None:
        self.asked.append((call_id, name))


def _manager(ari: SlowAri, pauses: tuple[float, ...] = (0.01, 0.02), *,
             store: EmptyStore | None = None, archiver: Archiver | None = None) -> CallManager:
    unused = cast(Any, None)
    return CallManager(cast(Any, ari), cast(Any, store or EmptyStore()), cast(Any, archiver),
                       unused, unused, "callrec", clock=lambda: T0, reconcile_pauses=pauses)


async def test_a_reconciliation_asterisk_leaves_unanswered_is_tried_again() -> None:
    # Once given up after one try: calls whose hang-ups were lost with the events stayed
    # open until the next reconnection, however far off.
    ari = SlowAri(unanswered=3)
    manager = _manager(ari)
    with capture_logs() as logs:
        assert await manager.reconcile() is True
    assert ari.asked == 4
    assert manager.reconciliations == 4
    retries = [e["retry_in_s"] for e in logs if e["log_level"] == "warning"]
    assert retries == [0.01, 0.02, 0.02]  # the last pause repeats


async def test_a_newer_reconciliation_takes_over_from_one_still_retrying() -> None:
    ari = SlowAri(unanswered=1)
    manager = _manager(ari, pauses=(0.3,))
    first = asyncio.create_task(manager.reconcile())
    await eventually(lambda: _asked(ari, 1), interval=0.01, what="first attempt")
    assert await manager.reconcile() is True  # after a reconnection, say
    assert await first is False
    assert ari.asked == 2


async def test_close_ends_the_retries() -> None:
    ari = SlowAri(unanswered=100)
    manager = _manager(ari, pauses=(0.05,))
    retrying = asyncio.create_task(manager.reconcile())
    await eventually(lambda: _asked(ari, 2), interval=0.01, what="a retry")
    await manager.close()
    assert await asyncio.wait_for(retrying, 1) is False


async def test_a_leg_being_dialled_is_not_taken_for_gone() -> None:
    # Asterisk's list of our channels can miss a leg whose dial is under way: once taken
    # for gone, the leg rang on with no call behind it and nobody hung it up.
    ari = SlowAri(unanswered=0)
    ari.channels = ("caller.1",)
    manager = _manager(ari)
    agent = m.AgentTarget("agent1", "PJSIP/agent1", "Aino Agentti")
    state = m._changed(m.initial_state(uuid.uuid4(), "caller.1"), {
        "legs": (m.Leg("leg.made", agent, 1, 1), m.Leg("leg.creating", agent, 2, 1))})
    call = manager._add_call(state, "100")
    for leg in ("leg.made", "leg.creating"):
        manager._own(call, manager._by_channel, leg)
    # its dial request under way: Asterisk may not list it yet
    manager._dialling.add("leg.creating")
    assert await manager.reconcile() is True
    gone = [e.channel_id for e in _drain(call.queue) if isinstance(e, m.AgentGone)]
    assert gone == ["leg.made"]


async def _asked(who: SlowAri | Archiver, times: int) -> bool:
    return len(who.asked) >= times if isinstance(who, Archiver) else who.asked >= times


def _drain(queue: asyncio.Queue[m.FlowEvent]) -> list[m.FlowEvent]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


async def test_a_recording_left_of_a_deleted_call_goes_to_the_archive_to_be_discarded() -> None:
    # Erased while its recording waited in Asterisk: once left there for good ("unknown
    # call"); the archive now discards it, Asterisk's copy included. A recording of a call
    # with no row and no purge (a row not written yet, say) is still left alone.
    erased, unknown = uuid.uuid4(), uuid.uuid4()
    ari, store, archiver = SlowAri(unanswered=0), EmptyStore(), Archiver()
    ari.stored = [StoredRecording(m.recording_name_for(c), "wav") for c in (erased, unknown)]
    store.purged.add(erased)
    manager = _manager(ari, store=store, archiver=archiver)
    assert await manager.reconcile() is True
    await eventually(lambda: _asked(archiver, 1), interval=0.01, what="archive asked")
    await manager.close()
    assert archiver.asked == [(erased, m.recording_name_for(erased))]


class HangingUpAri(SlowAri):
    def __init__(self) -> None:
        super().__init__(unanswered=0)
        self.hung_up: list[str] = []

    async def hangup(self, channel_id: str, reason: str) -> None:
        self.hung_up.append(channel_id)


@pytest.mark.parametrize("status", [m.LegStatus.HUNG_UP, m.LegStatus.GONE, None])
async def test_an_agent_leg_its_call_gave_up_on_is_hung_up_when_asterisk_makes_it(
    status: m.LegStatus | None,
) -> None:
    # a create that Asterisk left unanswered, the leg hung up "even so" (404: not made yet),
    # then made late: its StasisStart comes while the call lives on. It was left in the
    # application, ringing nobody and bridged by nobody, until the next reconnection.
    ari = HangingUpAri()
    manager = _manager(ari)
    agent = m.AgentTarget("agent1", "PJSIP/agent1", "Aino Agentti")
    legs = (m.Leg("leg.late", agent, 1, 1, status=status),) if status is not None else ()
    state = m._changed(m.initial_state(uuid.uuid4(), "caller.1"), {"legs": legs})
    call = manager._add_call(state, "100")
    manager._own(call, manager._by_channel, "leg.late")
    manager._stasis_start("leg.late", None, (AGENT_ARGS_PREFIX + "x",), T0)
    async def hung_up() -> bool:
        return ari.hung_up == ["leg.late"]

    await eventually(hung_up, interval=0.01, what="the late leg hung up")
    # a leg the call is still dialling is the call's to bridge: left alone
    state = m._changed(state, {"legs": (m.Leg("leg.live", agent, 2, 1),)})
    call.state = state
    manager._own(call, manager._by_channel, "leg.live")
    manager._stasis_start("leg.live", None, (AGENT_ARGS_PREFIX + "x",), T0)
    await asyncio.sleep(0.05)
    assert ari.hung_up == ["leg.late"]


class HungAri(SlowAri):
    """Takes requests and never answers them (a hung Asterisk at shutdown)."""

    def __init__(self) -> None:
        super().__init__(unanswered=0)

    async def hangup(self, channel_id: str, reason: str) -> None:
        await asyncio.sleep(3600)

    async def continue_in_dialplan(self, channel_id: str, *, label: str) -> None:
        await asyncio.sleep(3600)

    async def destroy_bridge(self, bridge_id: str) -> None:
        await asyncio.sleep(3600)


class RowStore(EmptyStore):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[uuid.UUID, dict[str, Any]]] = []

    async def record_call(self, call_id: uuid.UUID, **fields: Any) -> None:
        self.rows.append((call_id, fields))


async def test_close_writes_a_waiting_callers_end_and_leaves_no_task_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # with Asterisk not answering, the hand-back's requests took the whole wait and the
    # call's "interrupted" end, written after them, was never written; the tasks ran on
    # into the closed ARI client and store
    monkeypatch.setattr("callrec.calls.manager.HANDBACK_TIMEOUT", 0.2)
    ari, store = HungAri(), RowStore()
    manager = _manager(ari, store=store)
    agent = m.AgentTarget("agent1", "PJSIP/agent1", "Aino Agentti")
    call_id = uuid.uuid4()
    state = m._changed(m.initial_state(call_id, "caller.1"), {
        "phase": m.Phase.RINGING, "legs": (m.Leg("leg.1", agent, 1, 1),),
        "bridge_id": "bridge.1"})
    manager._add_call(state, "100")
    before = set(asyncio.all_tasks())
    await asyncio.wait_for(manager.close(), 5)
    assert set(asyncio.all_tasks()) <= before, "a task outlived close()"
    (written,) = [f for c, f in store.rows if c == call_id]
    assert written["end_reason"] == "interrupted" and written["durable"] is True


@pytest.mark.parametrize("restarted", [True, False])
async def test_after_a_restart_of_asterisk_a_recording_is_taken_as_finished(
    restarted: bool,
) -> None:
    # Asterisk killed mid-call: the recording's end is never reported, and the call waited
    # its 30 s finish guard before archiving what Asterisk had written
    ari = SlowAri(unanswered=0)
    ari.channels = ("caller.1", "snoop.1")
    manager = _manager(ari)
    assert await manager.reconcile() is True  # Asterisk's start noted
    state = m._changed(m.initial_state(uuid.uuid4(), "caller.1"), {
        "recording": m.RecState.STARTED, "recording_name": "rec-1", "snoop_channel": "snoop.1"})
    call = manager._add_call(state, "100")
    for channel in ("caller.1", "snoop.1"):
        manager._own(call, manager._by_channel, channel)
    ari.channels = ()
    if restarted:
        ari.started = T0.replace(minute=5)
    assert await manager.reconcile() is True
    events = _drain(call.queue)
    caller_gone = [e for e in events if isinstance(e, m.CallerGone)]
    assert [e.cut for e in caller_gone] == [restarted]
    finished = [e.name for e in events if isinstance(e, m.RecordingFinished)]
    # without a restart the recording may still end on its own and say so
    assert finished == (["rec-1"] if restarted else [])
