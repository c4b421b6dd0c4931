"""Asterisk's queue of events for an ARI application, from `core show taskprocessors`.

Every message of the channels and bridges an application is subscribed to passes through
one taskprocessor of Asterisk's (`stasis/m:ari:application/<app>-<n>`), served one at a
time: each becomes JSON there and is dropped by the application's event filter only after
that, so the queue carries more than the application receives. At 500 queued messages
Asterisk raises its overload alert and, with PJSIP's default `taskprocessor_overload_trigger
= global`, ignores new SIP requests (callers retransmit) until it drains below 450. The
capacity steps report how deep it got, to tell such stalls from the recorder's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# an overload alert from this many queued messages (Asterisk's default high water mark)
HIGH_WATER = 500


@dataclass(frozen=True)
class QueueStats:
    name: str
    processed: int
    max_depth: int


def parse(text: str, app: str) -> QueueStats | None:
    """The application's row of `core show taskprocessors`; None if it has none (no
    websocket connected)."""
    prefix = f"stasis/m:ari:application/{app}-"
    for line in text.splitlines():
        cols = line.split()
        # name, processed, in queue, max depth, low water, high water, low time, high time
        if len(cols) == 8 and cols[0].startswith(prefix) and cols[1].isdigit():
            return QueueStats(cols[0], int(cols[1]), int(cols[3]))
    return None


class AppQueue:
    """Reads (and resets, for a step of its own) the statistics of `app`'s queue through
    Asterisk's CLI (`cli(command) -> output`)."""

    def __init__(self, cli: Callable[[str], str], app: str) -> None:
        self._cli = cli
        self.app = app

    def read(self) -> QueueStats | None:
        return parse(self._cli("core show taskprocessors"), self.app)

    def reset(self) -> None:
        """Counts and the deepest point start again from zero."""
        stats = self.read()
        if stats is not None:
            # the name comes from Asterisk's own listing, checked by parse()
            self._cli(f"core reset taskprocessor {stats.name}")
