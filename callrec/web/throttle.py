"""A per-address brake on failed logins, on top of the privacy layer's per-account lockout:
guessing across many usernames from one address is slowed down too."""

from __future__ import annotations

import contextlib
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

    def attempt(self, address: str) -> float | None:
        """Count a login as failed before it is checked, so that a burst of concurrent
        guesses cannot all pass while the first are still being checked; None if the
        address must wait (`retry_after`). A login that succeeds gives it back with
        `succeeded(address, stamp)`."""
        if self.retry_after(address):
            return None
        stamp = self._clock()
        self._add(address, stamp)
        return stamp

    def succeeded(self, address: str, stamp: float) -> None:
        times = self._failures.get(address)
        if times is None:
            return
        with contextlib.suppress(ValueError):
            times.remove(stamp)
        if not times:
            del self._failures[address]

    def _add(self, address: str, stamp: float) -> None:
        times = self._recent(address)
        times.append(stamp)
        self._failures[address] = times
        self._failures.move_to_end(address)
        while len(self._failures) > self.max_addresses:  # bounded memory under a flood
            self._failures.popitem(last=False)
