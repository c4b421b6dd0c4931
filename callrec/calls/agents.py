"""Agent availability, in memory: who is in a call, who answered last, who is idle longest.

Feeds the `round_robin` and `longest_idle` strategies, which need an order of agents at the start
of each call. It knows the calls of this process and, through `remember`, what the archive says
of the calls before a restart (so a restart in the middle of a working day does not start the
turns afresh); only what callrec itself set up.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from callrec.routing.model import Strategy


class AgentTracker:
    def __init__(self) -> None:
        self._in_calls: dict[str, int] = {}
        self._last_answered: dict[str, datetime] = {}
        self._idle_since: dict[str, datetime] = {}

    def busy(self, agent_id: str, at: datetime) -> None:
        """The agent answered one of our calls."""
        self._in_calls[agent_id] = self._in_calls.get(agent_id, 0) + 1
        self._last_answered[agent_id] = at

    def free(self, agent_id: str, at: datetime) -> None:
        """One of the agent's calls ended."""
        left = self._in_calls.get(agent_id, 0) - 1
        if left > 0:
            self._in_calls[agent_id] = left
        else:
            self._in_calls.pop(agent_id, None)
            self._idle_since[agent_id] = at

    def remember(
        self, agent_id: str, *, answered: datetime | None, idle_since: datetime | None
    ) -> None:
        """What the archive says of the agent's calls before this run: taken only where this
        run knows nothing of its own (its own calls are the newer)."""
        if answered is not None:
            self._last_answered.setdefault(agent_id, answered)
        if idle_since is not None and agent_id not in self._in_calls:
            self._idle_since.setdefault(agent_id, idle_since)

    def in_call(self, agent_id: str) -> bool:
        return agent_id in self._in_calls

    def order(self, strategy: Strategy, agent_ids: Sequence[str]) -> list[str]:
        """The order to ring `agent_ids` in. Agents in one of our calls go last, not away:
        their phone may still take a second call, and it says BUSY if not."""
        ids = list(dict.fromkeys(agent_ids))
        if strategy is Strategy.ROUND_ROBIN:
            ids = self._after_last_answered(ids)
        elif strategy is Strategy.LONGEST_IDLE:
            # stable sort: agents never seen keep the configured order, and come first
            ids.sort(key=self._idle_key)
        else:
            return ids  # in_order and ring_all: exactly as configured
        return sorted(ids, key=self.in_call)

    def _idle_key(self, agent_id: str) -> tuple[bool, float]:
        since = self._idle_since.get(agent_id)
        return (since is not None, since.timestamp() if since is not None else 0.0)

    def _after_last_answered(self, ids: list[str]) -> list[str]:
        answered = [
            (self._last_answered[a], i) for i, a in enumerate(ids) if a in self._last_answered
        ]
        if not answered:
            return ids
        _, last = max(answered)
        return ids[last + 1 :] + ids[: last + 1]
