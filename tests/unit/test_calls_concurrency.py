"""One transition's requests to Asterisk carried out at once where they touch different
channels and bridges, in order where they touch the same, all done before the next event:
the ringing transition's six requests, one after another, kept callers waiting seconds
under load."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from callrec.calls import machine as m
from callrec.calls.manager import CallManager, _Call, _last_before_barriers
from tests.polling import eventually
from tests.unit.test_calls_harness import (
    BRIDGE,
    CALLER_CHANNEL,
    LEGS,
    REC,
    SNOOP,
    Sim,
    leg_id,
    plan,
)

pytestmark = pytest.mark.timeout(10)


class SlowAri:
    """Each request takes a moment (other tasks run meanwhile) and is logged as it starts
    and ends; a new agent channel is reported in the application as Asterisk would."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.manager: CallManager | None = None
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

    async def create_channel(self, endpoint: str, *, channel_id: str, app_args: str) -> None:
        await self._request(f"channel {channel_id}")
        assert self.manager is not None
        self.manager._in_stasis[channel_id].set_result(None)

    async def add_channel(self, bridge_id: str, channel_id: str) -> None:
        await self._request(f"add {channel_id} to {bridge_id}")

    async def dial(self, channel_id: str, *, caller: str, timeout: int) -> None:  # noqa: ASYNC109 - the client's own signature
        await self._request(f"dial {channel_id}")

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
    ari.manager = manager
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
    agent = leg_id(1)
    ring, mixing, holding, channel = (_span(log, w) for w in (
        f"ring {CALLER_CHANNEL}", f"bridge {BRIDGE}", f"bridge {LEGS}", f"channel {agent}"))
    add, dial = _span(log, f"add {agent} to {LEGS}"), _span(log, f"dial {agent}")
    # the four independent ones all started before any of them ended
    assert max(s for s, _ in (ring, mixing, holding, channel)) < min(
        e for _, e in (ring, mixing, holding, channel))
    # the leg goes into its holding bridge once both exist, and is dialled once in it
    assert add[0] > holding[1] and add[0] > channel[1]
    assert dial[0] > add[1]
    assert all(kind == "end" for kind, _ in log[-1:]), "all done before it returned"
    assert sum(1 for kind, _ in log if kind == "start") == sum(
        1 for kind, _ in log if kind == "end") == 6


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
        m.CreateBridge(LEGS), m.Ring("other")])
    kinds = list(ari.log)
    row = kinds.index(("row", "state"))
    assert kinds[:row].count(("end", f"ring {CALLER_CHANNEL}")) == 1
    assert kinds[:row].count(("end", f"bridge {BRIDGE}")) == 1
    assert ("start", f"bridge {LEGS}") not in kinds[:row]


async def test_a_cancelled_call_task_leaves_no_request_running() -> None:
    manager, call, ari, _ = _setup()
    ari.hold = asyncio.Event()
    task = asyncio.create_task(manager._carry_out(call, [
        m.Ring(CALLER_CHANNEL), m.CreateBridge(BRIDGE), m.CreateBridge(LEGS)]))
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
    assert m.touches(m.Dial("agent", CALLER_CHANNEL, 20)) == {"agent"}  # the caller: read only
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
