"""A small driver for the pure call state machine: feeds events, keeps every command."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from callrec.ari.models import CallerId, Channel
from callrec.calls import machine as m
from callrec.routing.model import Strategy

CALL_ID = uuid.UUID("8d6f4a52-5b0e-4f53-9a3c-2f1e0c9b7a11")
CALLER_CHANNEL = "1700000000.17"
T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)

AGENTS = (
    m.AgentTarget("a1", "PJSIP/agent1", "Aino Agentti"),
    m.AgentTarget("a2", "PJSIP/agent2", "Bertil Bengtsson"),
    m.AgentTarget("a3", "PJSIP/agent3", "Cecilia Carlsson"),
)
NOTICE = m.PromptChoice("sound:http://x/prompts/notice-fi-abc.wav", "notice/fi/abc", "fi", 4000)
CLOSED = m.PromptChoice("sound:http://x/prompts/closed-fi-def.wav", "closed/fi/def", "fi", 3000)

C = TypeVar("C", bound=m.Command)


def plan(
    strategy: Strategy = Strategy.IN_ORDER,
    agents: Iterable[m.AgentTarget] = AGENTS[:2],
    **overrides: Any,
) -> m.ServicePlan:
    values: dict[str, Any] = {
        "number": "100",
        "name": "Ajanvaraus",
        "language": "fi",
        "strategy": strategy,
        "agents": tuple(agents),
        "ring_timeout": 15.0,
        "max_wait": 60.0,
        "notice": NOTICE,
        "closed_prompt": CLOSED,
    }
    values.update(overrides)
    return m.ServicePlan(**values)


def channel(channel_id: str, name: str, state: str = "Down") -> Channel:
    """An ARI channel as an answer or event carries it, with no caller id of note."""
    nobody = CallerId("", "")
    return Channel(channel_id, name, state, nobody, nobody, "", "", None, "")


def leg_id(attempt: int) -> str:
    return m.agent_channel_id(CALL_ID, attempt)


def dialled(attempt: int, endpoint: str, agent_id: str, timeout: int = 20) -> m.DialAgent:
    """The dial of the call's `attempt`-th agent leg (the plans' 15 s of ringing + slack)."""
    return m.DialAgent(leg_id(attempt), endpoint, agent_id, CALLER_CHANNEL, timeout)


NOTICE_PB = m.playback_id_for(CALL_ID, "notice")
CLOSED_PB = m.playback_id_for(CALL_ID, "closed")
REC = m.recording_name_for(CALL_ID)
BRIDGE = m.bridge_id_for(CALL_ID)
SNOOP = m.snoop_id_for(CALL_ID)


class Sim:
    """Feeds events to `transition` with a clock that moves on by `step_ms` per event."""

    def __init__(self, step_ms: int = 100) -> None:
        self.state = m.initial_state(CALL_ID, CALLER_CHANNEL)
        self.now = T0
        self.step = timedelta(milliseconds=step_ms)
        self.history: list[m.Command] = []
        self.last: list[m.Command] = []

    def at(self) -> datetime:
        self.now += self.step
        return self.now

    def feed(self, event: m.FlowEvent) -> list[m.Command]:
        self.state, self.last = m.transition(self.state, event)
        self.history.extend(self.last)
        return self.last

    # -- shortcuts for the usual events ---------------------------------------------------------
    def enter(self, p: m.ServicePlan | None) -> list[m.Command]:
        return self.feed(m.CallerEntered(self.at(), "100", "+358401234567", "Maija", p))

    def answered(self) -> list[m.Command]:
        return self.feed(m.Answered(self.at()))

    def notice_done(self, failed: bool = False) -> list[m.Command]:
        return self.feed(m.PromptFinished(self.at(), NOTICE_PB, failed))

    def snoop_ready(self) -> list[m.Command]:
        return self.feed(m.SnoopReady(self.at(), SNOOP))

    def to_ringing(self, p: m.ServicePlan, *, snoop_ready: bool = True) -> list[m.Command]:
        """To ringing; the snoop asked for at the notice is in our application unless
        `snoop_ready` is false (still on its way)."""
        self.enter(p)
        self.answered()
        if snoop_ready:
            self.snoop_ready()
        return self.notice_done()

    def timer(self, name: str) -> list[m.Command]:
        return self.feed(m.TimerFired(self.at(), name))

    def agent_answers(self, attempt: int) -> list[m.Command]:
        return self.feed(m.AgentAnswered(self.at(), leg_id(attempt)))

    def to_conversation(self, p: m.ServicePlan | None = None) -> None:
        self.to_ringing(p or plan())
        self.agent_answers(1)
        self.feed(m.RecordingStarted(self.at(), REC))

    # -- looking at commands ----------------------------------------------------------------------
    def all(self, kind: type[C], where: Iterable[m.Command] | None = None) -> list[C]:
        return [c for c in (self.history if where is None else where) if isinstance(c, kind)]

    def persisted(self) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for cmd in self.all(m.Persist):
            row.update(cmd.fields)
        return row

    def hangups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for cmd in self.all(m.HangupChannel):
            out.setdefault(cmd.channel_id, []).append(cmd.reason)
        return out
