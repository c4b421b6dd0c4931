"""Who to ring, in which order: the service's strategy applied to what agents did lately.

`RingState` keeps the little history the strategies need (who answered each service last,
when each agent last finished a call) and turns a `Service` into rounds: each round is a
group of agents rung at the same time for the service's ring timeout.
"""

from __future__ import annotations

from collections.abc import Collection

from callrec.routing.model import Service, Strategy

Round = tuple[str, ...]


class RingState:
    """In-memory history for round_robin and longest_idle (lost on restart, which only
    resets the rotation)."""

    def __init__(self) -> None:
        self._last_answered: dict[str, str] = {}  # service number -> agent id
        self._idle_since: dict[str, float] = {}  # agent id -> monotonic time of last call end

    def answered(self, service_number: str, agent_id: str) -> None:
        """An agent answered a call of this service."""
        self._last_answered[service_number] = agent_id

    def call_ended(self, agent_id: str, at: float) -> None:
        """An agent's call ended at `at` (any monotonic clock, used only for ordering)."""
        self._idle_since[agent_id] = at

    def plan(self, service: Service, *, busy: Collection[str] = ()) -> list[Round]:
        """The rounds to ring for a new call, leaving out agents that are `busy`."""
        agents = [agent for agent in service.agents if agent not in busy]
        if not agents:
            return []
        if service.strategy is Strategy.RING_ALL:
            return [tuple(agents)]
        if service.strategy is Strategy.ROUND_ROBIN:
            agents = self._after_last(service, agents)
        elif service.strategy is Strategy.LONGEST_IDLE:
            # never-busy agents first, then the longest idle; ties keep the listed order
            agents = sorted(agents, key=lambda a: self._idle_since.get(a, float("-inf")))
        return [(agent,) for agent in agents]

    def _after_last(self, service: Service, agents: list[str]) -> list[str]:
        last = self._last_answered.get(service.number)
        if last is None or last not in service.agents:
            return agents
        # start with the agent listed after the one who answered last, wrapping around
        start = service.agents.index(last) + 1
        order = service.agents[start:] + service.agents[:start]
        return [agent for agent in order if agent in agents]
