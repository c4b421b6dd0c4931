"""Root of callrec's domain errors; each area derives its own small tree."""

from __future__ import annotations


class CallrecError(Exception):
    """An error a user or operator can act on; knows its HTTP status."""

    http_status: int = 500
    default_message: str = "internal error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class ConfigError(CallrecError):
    """Wrong or missing configuration (settings, routing, prompts)."""

    http_status = 400
    default_message = "invalid configuration"


class NotConfigured(ConfigError):
    """The server lacks a setting this operation needs: its operator's to fix, not the
    client's (503, and logged as an error)."""

    http_status = 503
    default_message = "the server is not configured for this"
