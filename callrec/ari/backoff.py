"""Reconnect delays: capped exponential backoff with full jitter.

Full jitter (a uniform delay between 0 and the capped exponential) spreads the reconnects of
several clients after an Asterisk restart instead of having them all knock at the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

BASE_DELAY = 0.5
MAX_DELAY = 10.0
STABLE_AFTER = 30.0  # a connection that lived this long resets the backoff

_uniform: Callable[[], float] = random.random  # jitter needs no cryptographic randomness


def backoff_ceiling(attempt: int, *, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """The largest delay before retry number `attempt` (0 = first retry): min(cap, base*2^n)."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    # beyond 2**64 the product only overflows; the cap has long been reached
    return min(cap, base * 2.0 ** min(attempt, 64))


def backoff_delay(
    attempt: int,
    *,
    base: float = BASE_DELAY,
    cap: float = MAX_DELAY,
    uniform: Callable[[], float] = _uniform,
) -> float:
    """A delay drawn uniformly from [0, backoff_ceiling(attempt)); `uniform` returns [0, 1)."""
    return uniform() * backoff_ceiling(attempt, base=base, cap=cap)


@dataclass
class Backoff:
    """Tracks consecutive failures of one connection loop.

    `next_delay()` after each failed attempt or drop; `connection_lived(seconds)` when a
    connection ends, which forgets past failures if it was stable.
    """

    base: float = BASE_DELAY
    cap: float = MAX_DELAY
    stable_after: float = STABLE_AFTER
    uniform: Callable[[], float] = field(default=_uniform, repr=False)
    attempt: int = 0

    def next_delay(self) -> float:
        delay = backoff_delay(self.attempt, base=self.base, cap=self.cap, uniform=self.uniform)
        self.attempt += 1
        return delay

    def connection_lived(self, seconds: float) -> None:
        if seconds >= self.stable_after:
            self.attempt = 0
