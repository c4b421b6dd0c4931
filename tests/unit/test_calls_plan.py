"""build_plan: routing snapshot + prompts + agent order -> what one call needs."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from callrec.calls import machine as m
from callrec.calls.agents import AgentTracker
from callrec.calls.plan import build_plan
from callrec.errors import ConfigError
from callrec.routing.model import Agent, OpeningInterval, Routing, Service, Strategy

CALL = uuid.UUID(int=7)
MONDAY_10 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)  # 10:00 in Helsinki


@dataclass(frozen=True)
class Ref:
    name: str
    language: str
    version: str
    media: str
    duration_ms: int


class Catalog:
    """Built prompts by (name, language); others raise a ConfigError like PromptMissing."""

    def __init__(self, *known: tuple[str, str]) -> None:
        self.known = set(known)

    def resolve(self, name: str, language: str) -> Ref:
        if (name, language) not in self.known:
            raise ConfigError(f"no built prompt {name}/{language}")
        return Ref(name, language, "1a2b3c", f"sound:http://h/prompts/{name}-{language}.wav", 4200)


def routing(strategy: Strategy = Strategy.IN_ORDER, **service: object) -> Routing:
    values: dict[str, object] = {
        "number": "0103808000",
        "name": "Ajanvaraus",
        "language": "fi",
        "notice_prompt": "notice",
        "closed_prompt": "closed",
        "agents": ("agent1", "agent2", "agent3"),
        "strategy": strategy,
        "ring_timeout": 12.0,
        "max_wait": 90.0,
    }
    values.update(service)
    agents = {
        f"agent{i}": Agent(f"agent{i}", f"PJSIP/agent{i}", name)
        for i, name in ((1, "Aino"), (2, "Bertil"), (3, "Cecilia"))
    }
    svc = Service(**values)  # type: ignore[arg-type]
    return Routing(services={svc.number: svc}, agents=agents)


def test_plan_of_a_service() -> None:
    plan = build_plan(
        routing(),
        "0103808000",
        MONDAY_10,
        Catalog(("notice", "fi"), ("closed", "fi")),
        AgentTracker(),
        call_id=CALL,
    )
    assert plan is not None
    assert [a.id for a in plan.agents] == ["agent1", "agent2", "agent3"]
    assert plan.agents[1] == m.AgentTarget("agent2", "PJSIP/agent2", "Bertil")
    assert (plan.ring_timeout, plan.max_wait, plan.strategy) == (12.0, 90.0, Strategy.IN_ORDER)
    assert plan.notice == m.PromptChoice(
        "sound:http://h/prompts/notice-fi.wav", "notice-fi-1a2b3c", "fi", 4200
    )
    assert plan.closed_prompt is not None and plan.closed_prompt.label == "closed-fi-1a2b3c"
    assert plan.is_open


def test_unknown_number_has_no_plan() -> None:
    assert build_plan(routing(), "999", MONDAY_10, Catalog(), AgentTracker(), call_id=CALL) is None


def test_missing_prompts_are_left_out() -> None:
    plan = build_plan(
        routing(), "0103808000", MONDAY_10, Catalog(("closed", "fi")), AgentTracker(), call_id=CALL
    )
    assert plan is not None
    assert plan.notice is None, "no notice: the machine will not record this call"
    assert plan.closed_prompt is not None


def test_round_robin_order_comes_from_the_tracker() -> None:
    tracker = AgentTracker()
    tracker.busy("agent2", MONDAY_10)
    tracker.free("agent2", MONDAY_10)
    plan = build_plan(
        routing(Strategy.ROUND_ROBIN), "0103808000", MONDAY_10, Catalog(), tracker, call_id=CALL
    )
    assert plan is not None
    assert [a.id for a in plan.agents] == ["agent3", "agent1", "agent2"]


def test_closed_outside_opening_hours() -> None:
    hours = (OpeningInterval(0, dt.time(12), dt.time(16)),)
    plan = build_plan(
        routing(hours=hours), "0103808000", MONDAY_10, Catalog(), AgentTracker(), call_id=CALL
    )
    assert plan is not None and not plan.is_open
