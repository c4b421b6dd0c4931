"""One transition's requests to Asterisk carried out at once where they touch different
channels and bridges, in order where they touch the same, all done before the next event:
the ringing transition's requests, one after another, kept callers waiting seconds under
load."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from callrec.ari import events as ari_events
from callrec.calls import machine as m
from callrec.calls.manager import AGENT_ARGS_PREFIX, CallManager, _Call, _last_before_barriers
from tests.polling import eventually
from tests.unit.test_ari_samples import channel, event
from tests.unit.test_calls_harness import (
    BRIDGE,
    CALL_ID,
    CALLER_CHANNEL,
    REC,
    SNOOP,
    Sim,
    leg_id,
    plan,
)

pytestmark = pytest.mark.timeout(10)


class SlowAri:
    """Each request takes a moment (other tasks run meanwhile) and is logged as it starts
    and ends."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.hold: asyncio.Event | None = None  # while set up and not set: requests wait

    async def _request(self, what: str) -> None:
        self.log.append(("start", what))
        await asyncio.sleep(0.02)
        if self.hold is not None:
            await self.hold.wait()
        self.log.append(("end", what))

    async def ring(self, channel_id: str) -> None:
        await self._request(f"ring {channel_id}")

    async def ring_stop(self, channel_id: str) -> None:
        await self._request(f"ring_stop {channel_id}")

    async def create_bridge(self, bridge_id: str, *, bridge_type: str = "mixing") -> None:
        await self._request(f"bridge {bridge_id}")

    async def originate(self, endpoint: str, *, channel_id: str, **kw: Any) -> None:
        await self._request(f"dial {channel_id}")

    async def add_channel(self, bridge_id: str, channel_id: str) -> None:
        await self._request(f"add {channel_id} to {bridge_id}")

    async def record_channel(self, channel_id: str, name: str, **kw: Any) -> None:
        await self._request(f"record {channel_id}")


class Store:
    def __init__(self, ari: SlowAri) -> None:
        self.ari = ari

    async def record_call(self, call_id: Any, **fields: Any) -> None:
        self.ari.log.append(("row", ",".join(sorted(fields.keys() - {"durable", "urgent"}))))


def _setup() -> tuple[CallManager, _Call, SlowAri, Sim]:
    ari = SlowAri()
    unused = cast(Any, None)
    manager = CallManager(cast(Any, ari), cast(Any, Store(ari)), unused, unused, unused,
                          "callrec")
    sim = Sim()
    return manager, _Call(sim.state, "100"), ari, sim


def _span(log: list[tuple[str, str]], what: str) -> tuple[int, int]:
    return log.index(("start", what)), log.index(("end", what))


async def test_the_ringing_requests_go_at_once_where_nothing_ties_them() -> None:
    manager, call, ari, sim = _setup()
    commands = sim.to_ringing(plan())
    call.state = sim.state
    call.row_started = True
    await manager._carry_out(call, commands)
    log = ari.log
    spans = [_span(log, w) for w in (
        f"ring {CALLER_CHANNEL}", f"bridge {BRIDGE}", f"dial {leg_id(1)}")]
    # all three started before any of them ended
    assert max(s for s, _ in spans) < min(e for _, e in spans)
    assert all(kind == "end" for kind, _ in log[-1:]), "all done before it returned"
    assert sum(1 for kind, _ in log if kind == "start") == sum(
        1 for kind, _ in log if kind == "end") == 3


@pytest.mark.parametrize("how", ["enters", "gone"])
async def test_an_answered_agent_is_bridged_once_in_our_application(how: str) -> None:
    # a dialled leg enters our application only when answered, and its answer (a Dial
    # event) may be heard first: Asterisk refuses to bridge a channel not in it
    manager, call, ari, sim = _setup()
    manager._calls[call.id] = call
    manager._by_channel[CALLER_CHANNEL] = call
    commands = sim.to_ringing(plan())
    call.state = sim.state
    call.row_started = True
    await manager._carry_out(call, commands)
    agent = leg_id(1)
    sim.agent_answers(1)
    commands = sim.feed(m.RecordingStarted(sim.at(), REC))
    call.state = sim.state
    adding = asyncio.create_task(manager._carry_out(call, commands))
    await asyncio.sleep(0.1)
    assert ("start", f"add {agent} to {BRIDGE}") not in ari.log
    if how == "enters":
        raw = event("StasisStart", channel=channel(agent, state="Up"),
                    args=[f"{AGENT_ARGS_PREFIX}{CALL_ID}"])
    else:
        raw = event("ChannelDestroyed", channel=channel(agent), cause=16, cause_txt="")
    await manager.handle(ari_events.decode_event(raw))
    await asyncio.wait_for(adding, 1)  # not the 5 s given to a StasisStart that never comes
    assert ("end", f"add {agent} to {BRIDGE}") in ari.log
    assert agent not in manager._in_stasis


async def test_at_the_answer_the_recording_is_asked_for_alongside_the_callers_move() -> None:
    manager, call, ari, sim = _setup()
    sim.to_ringing(plan())
    commands = sim.agent_answers(1)
    call.state = sim.state
    call.row_started = True
    await manager._carry_out(call, commands)
    log = ari.log
    record = _span(log, f"record {SNOOP}")
    stop = _span(log, f"ring_stop {CALLER_CHANNEL}")
    add = _span(log, f"add {CALLER_CHANNEL} to {BRIDGE}")
    assert record[0] < stop[1] and stop[0] < record[1], "recording and caller side by side"
    assert add[0] > stop[1], "the caller's ringing stops before it joins the bridge"
    assert ("row", "agent_channel_id,agent_endpoint,agent_id,agent_name,answered_at,"
            "recording_name,state") in log
    assert REC in call.owned


async def test_the_row_waits_for_the_requests_before_it_and_they_for_it() -> None:
    # the call's first write is waited for: its row exists before anything after it
    manager, call, ari, _ = _setup()
    await manager._carry_out(call, [
        m.Ring(CALLER_CHANNEL), m.CreateBridge(BRIDGE), m.Persist({"state": "x"}),
        m.CreateBridge("other-bridge"), m.Ring("other")])
    kinds = list(ari.log)
    row = kinds.index(("row", "state"))
    assert kinds[:row].count(("end", f"ring {CALLER_CHANNEL}")) == 1
    assert kinds[:row].count(("end", f"bridge {BRIDGE}")) == 1
    assert ("start", "bridge other-bridge") not in kinds[:row]


async def test_a_cancelled_call_task_leaves_no_request_running() -> None:
    manager, call, ari, _ = _setup()
    ari.hold = asyncio.Event()
    task = asyncio.create_task(manager._carry_out(call, [
        m.Ring(CALLER_CHANNEL), m.CreateBridge(BRIDGE), m.CreateBridge("other-bridge")]))
    async def all_started() -> bool:
        return sum(1 for k, _ in ari.log if k == "start") == 3

    await eventually(all_started, timeout=5, interval=0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftovers == []
    assert not [k for k, _ in ari.log if k == "end"]


def test_what_each_command_touches() -> None:
    dial = m.DialAgent("agent", "PJSIP/agent1", "a1", CALLER_CHANNEL, 20)
    assert m.touches(dial) == {"agent"}  # the caller: read only
    assert m.touches(m.AddToBridge("b", "c")) == {"b", "c"}
    assert m.touches(m.SnoopChannel("c", "s")) == {"c", "s"}
    assert m.touches(m.RecordChannel("s", "r")) == m.touches(m.RecordChannel("s", "r"))
    assert m.touches(m.StopRecording("r")) <= (m.touches(m.RecordChannel("s", "r")) or set())
    for instant in (m.StartTimer("t", 1), m.CancelTimer("t"), m.Log("info", "x")):
        assert m.touches(instant) == frozenset()
    assert m.touches(m.Persist({})) is None  # in strict order
    assert m.touches(m.ArchiveRecording("r", None)) is None


def test_the_last_request_before_each_barrier_needs_no_task() -> None:
    a, b = frozenset({"a"}), frozenset({"b"})
    assert _last_before_barriers([a, b]) == {1}
    assert _last_before_barriers([None, a, frozenset(), b, None, a, frozenset()]) == {3, 5}
    assert _last_before_barriers([frozenset(), None]) == set()
    assert _last_before_barriers([]) == set()


async def test_events_waiting_for_the_calls_tasks_are_counted() -> None:
    manager, call, _, sim = _setup()
    assert manager.events_waiting == 0
    manager._calls[call.id] = call
    call.queue.put_nowait(m.TimerFired(sim.now, "ring"))
    call.queue.put_nowait(m.TimerFired(sim.now, "ring"))
    assert manager.events_waiting == 2
    call.queue.get_nowait()
    assert manager.events_waiting == 1
