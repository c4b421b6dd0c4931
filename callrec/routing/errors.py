"""Errors of the routing area."""

from __future__ import annotations

from collections.abc import Sequence

from callrec.errors import ConfigError


class RoutingError(ConfigError):
    """The routing file is unreadable or invalid; `problems` are `file:line: message` lines."""

    default_message = "invalid routing configuration"

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems) or None)
