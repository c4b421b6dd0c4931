"""An agent's answer reaches the call by two witnesses Asterisk sends anyway: Dial's ANSWER
and the agent channel's StasisStart (an originated channel enters the application only once
answered). Asterisk is not asked for ChannelStateChange: three messages per call fewer."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from callrec.ari import events as ari_events
from callrec.calls import machine as m
from callrec.calls.manager import AGENT_ARGS_PREFIX, CallManager, _Call
from tests.unit.test_calls_harness import AGENTS, channel

pytestmark = pytest.mark.timeout(10)

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
AGENT = "agent.1"
AGENT_CHANNEL = channel(AGENT, "PJSIP/agent1-00000001", "Up")


class HangupAri:
    def __init__(self) -> None:
        self.hung_up: list[str] = []

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        self.hung_up.append(channel_id)


def _ringing(status: m.LegStatus = m.LegStatus.DIALLING) -> tuple[CallManager, _Call, HangupAri]:
    ari = HangupAri()
    unused = cast(Any, None)
    manager = CallManager(cast(Any, ari), unused, unused, unused, unused, "callrec",
                          clock=lambda: T0)
    call_id = uuid.uuid4()
    state = dataclasses.replace(m.initial_state(call_id, "caller.1"), phase=m.Phase.RINGING,
                                legs=(m.Leg(AGENT, AGENTS[0], 1, 1, status),))
    call = _Call(state, "100")
    manager._by_channel[AGENT] = call
    return manager, call, ari


def _queued(call: _Call) -> list[m.FlowEvent]:
    out = []
    while not call.queue.empty():
        out.append(call.queue.get_nowait())
    return out


def test_state_changes_are_not_asked_for() -> None:
    assert "ChannelStateChange" not in CallManager.EVENT_TYPES
    assert {"Dial", "StasisStart"} <= CallManager.EVENT_TYPES


def test_the_agents_stasis_start_is_an_answer() -> None:
    manager, call, _ = _ringing()
    args = (f"{AGENT_ARGS_PREFIX}{call.id}",)
    manager._route(ari_events.StasisStart(channel=AGENT_CHANNEL, args=args))
    assert _queued(call) == [m.AgentAnswered(T0, AGENT)]


def test_dials_answer_is_an_answer() -> None:
    manager, call, _ = _ringing()
    manager._route(ari_events.Dial(peer=AGENT_CHANNEL, caller=None, dialstatus="ANSWER"))
    [event] = _queued(call)
    assert isinstance(event, m.AgentDialStatus)
    assert (event.channel_id, event.status) == (AGENT, "ANSWER")


def test_both_witnesses_connect_the_agent_once() -> None:
    """Whichever comes first connects; the second changes nothing."""
    _, call, _ = _ringing()
    state = call.state
    first, commands = m.transition(state, m.AgentDialStatus(T0, AGENT, "ANSWER"))
    assert first.winner == AGENT
    assert any(isinstance(c, m.MarkAgent) for c in commands)
    second, again = m.transition(first, m.AgentAnswered(T0, AGENT))
    assert second == first
    assert again == []


async def test_a_leg_given_up_on_is_hung_up_not_answered() -> None:
    manager, call, ari = _ringing(m.LegStatus.HUNG_UP)
    args = (f"{AGENT_ARGS_PREFIX}{call.id}",)
    manager._route(ari_events.StasisStart(channel=AGENT_CHANNEL, args=args))
    assert _queued(call) == []
    for _ in range(3):
        await asyncio.sleep(0)
    assert ari.hung_up == [AGENT]
