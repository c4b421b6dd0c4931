"""The routing configuration as immutable values; calls keep the one they started with."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Strategy(enum.StrEnum):
    IN_ORDER = "in_order"  # one agent at a time, in the listed order
    RING_ALL = "ring_all"  # everyone at once, first answer wins
    ROUND_ROBIN = "round_robin"  # one at a time, starting after the last one who answered
    LONGEST_IDLE = "longest_idle"  # one at a time, the agent idle longest first


@dataclass(frozen=True)
class Agent:
    id: str
    endpoint: str  # ARI endpoint, e.g. "PJSIP/agent1"
    name: str  # display name, stored with each call


@dataclass(frozen=True)
class OpeningInterval:
    weekday: int  # 0 = Monday
    opens: dt.time
    closes: dt.time  # exclusive; "24:00" is time.max; closes <= opens runs past midnight


@dataclass(frozen=True)
class Service:
    number: str
    name: str
    language: str
    notice_prompt: str
    closed_prompt: str
    agents: tuple[str, ...]
    strategy: Strategy
    ring_timeout: float  # seconds one agent rings (the whole round for ring_all)
    max_wait: float  # seconds from the end of the notice until "please call later"
    hours: tuple[OpeningInterval, ...] = ()  # empty: always open
    timezone: str = "Europe/Helsinki"


@dataclass(frozen=True)
class Routing:
    services: Mapping[str, Service]
    agents: Mapping[str, Agent]
    version: str = ""  # hash of the source text, logged on reload
    extra: Mapping[str, object] = field(default_factory=dict)

    def service(self, number: str) -> Service | None:
        return self.services.get(number)
