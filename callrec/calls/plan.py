"""The plan of one call: its service, agents in ringing order and prompts, from a snapshot of
the routing configuration taken when the call starts (later edits do not affect it)."""

from __future__ import annotations

import uuid
from datetime import datetime

import structlog

from callrec.calls import machine as m
from callrec.calls.agents import AgentTracker
from callrec.calls.hours import is_open
from callrec.calls.ports import Prompts
from callrec.errors import ConfigError
from callrec.routing.model import Routing

log = structlog.get_logger(__name__)


def build_plan(
    routing: Routing,
    number: str,
    at: datetime,
    prompts: Prompts,
    tracker: AgentTracker,
    *,
    call_id: uuid.UUID,
    hold: m.HoldSound = m.HoldSound.RING,
    round_pause: float = 2.0,
) -> m.ServicePlan | None:
    """None when `number` is no service. A prompt that cannot be resolved is logged and left
    out: without a notice the call is not recorded, without a closed prompt it is hung up."""
    service = routing.service(number)
    if service is None:
        return None
    members = [a for a in service.agents if a in routing.agents]
    agents = tuple(
        m.AgentTarget(a, routing.agents[a].endpoint, routing.agents[a].name)
        for a in tracker.order(service.strategy, members)
    )
    return m.ServicePlan(
        number=service.number,
        name=service.name,
        language=service.language,
        strategy=service.strategy,
        agents=agents,
        ring_timeout=service.ring_timeout,
        max_wait=service.max_wait,
        notice=resolve_prompt(prompts, service.notice_prompt, service.language, call_id),
        closed_prompt=resolve_prompt(prompts, service.closed_prompt, service.language, call_id),
        is_open=is_open(service, at),
        hold=hold,
        round_pause=round_pause,
    )


def resolve_prompt(
    prompts: Prompts, name: str, language: str, call_id: uuid.UUID
) -> m.PromptChoice | None:
    if not name:
        return None
    try:
        ref = prompts.resolve(name, language)
    except ConfigError as exc:
        log.error(
            "prompt unavailable",
            call_id=str(call_id),
            prompt=name,
            language=language,
            error=exc.message,
        )
        return None
    return m.PromptChoice(
        media=ref.media,
        # the exact audio version: the proof of which notice the caller heard
        label=f"{ref.name}-{ref.language}-{ref.version}",
        language=ref.language,
        duration_ms=ref.duration_ms,
    )


def services_without_notice(routing: Routing, prompts: Prompts) -> list[str]:
    """The numbers of services whose recording notice cannot be played now (its prompt
    never built, or its build removed): their calls reach agents but are not recorded."""
    missing = []
    for number, service in sorted(routing.services.items()):
        try:
            prompts.resolve(service.notice_prompt, service.language)
        except ConfigError:
            missing.append(number)
    return missing
