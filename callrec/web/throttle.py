"""A per-address brake on failed logins, on top of the privacy layer's per-account lockout:
guessing across many usernames from one address is slowed down too."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class LoginThrottle:
    """At most `limit` failed logins per client address within `window` seconds."""

    def __init__(
        self, limit: int = 30, window: float = 900.0, *, max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str) -> deque[float]:
        times = self._failures.get(address)
        if times is None:
            return deque()
        horizon = self._clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[address]
        return times

    def retry_after(self, address: str) -> int:
        """Seconds until the address may try again; 0 when it may now."""
        times = self._recent(address)
        if len(times) < self.limit:
            return 0
        return max(1, int(times[0] + self.window - self._clock()) + 1)

    def failed(self, address: str) -> None:
        times = self._recent(address)
        times.append(self._clock())
        self._failures[address] = times
        self._failures.move_to_end(address)
        while len(self._failures) > self.max_addresses:  # bounded memory under a flood
            self._failures.popitem(last=False)
