"""Errors of the ARI transport.

`http_status` is what *our* HTTP API answers when an ARI failure reaches it (a bad gateway:
Asterisk misbehaved or refused); `ari_status` is the status Asterisk itself returned.
"""

from __future__ import annotations

from callrec.errors import CallrecError


class AriError(CallrecError):
    """Asterisk refused or failed an ARI request."""

    http_status = 502
    default_message = "Asterisk ARI request failed"

    def __init__(self, message: str | None = None, *, ari_status: int | None = None) -> None:
        super().__init__(message)
        self.ari_status = ari_status


class AriBadRequest(AriError):
    """400: invalid parameters (for /bridges/{id}/addChannel: the channel does not exist)."""

    default_message = "Asterisk rejected the request parameters"


class AriNotFound(AriError):
    """404: the channel, bridge, recording or application does not exist."""

    default_message = "not found in Asterisk"


class AriConflict(AriError):
    """409: the object exists already or is not in our Stasis application."""

    default_message = "conflicting state in Asterisk"


class AriInvalidState(AriConflict):
    """412: the channel is in a state that does not allow the operation (e.g. hung up)."""

    default_message = "channel in invalid state"


class AriUnprocessable(AriError):
    """422: e.g. an unknown recording format, or a channel not in the bridge."""

    default_message = "Asterisk could not process the request"


class AriServerError(AriError):
    """5xx: Asterisk failed internally (e.g. a channel could not be created)."""

    default_message = "Asterisk internal error"


class AriUnavailable(AriError):
    """Asterisk could not be reached: connection refused, timeout, websocket down."""

    http_status = 503
    default_message = "Asterisk is unavailable"


class AriNoAnswer(AriUnavailable):
    """Sent but not answered in time: Asterisk may have carried it out all the same."""

    default_message = "Asterisk did not answer in time"


class AriStarting(AriUnavailable):
    """503: Asterisk is booting or shutting down ("Asterisk not booted", "Shutdown in
    progress"): a moment's unavailability, as a refused connection is, not a failure."""

    default_message = "Asterisk is starting or shutting down"


class AriDecodeError(AriError):
    """Asterisk sent JSON that does not have the documented shape."""

    default_message = "malformed ARI JSON"


class EventDecodeError(AriDecodeError):
    """An events-websocket message is not a well-formed ARI event."""

    default_message = "malformed ARI event"


_BY_STATUS: dict[int, type[AriError]] = {
    400: AriBadRequest,
    404: AriNotFound,
    409: AriConflict,
    412: AriInvalidState,
    422: AriUnprocessable,
}


def error_for_status(status: int, message: str) -> AriError:
    """The typed exception for an HTTP error status from Asterisk."""
    if status == 503:
        return AriStarting(message, ari_status=status)
    if status >= 500:
        return AriServerError(message, ari_status=status)
    return _BY_STATUS.get(status, AriError)(message, ari_status=status)
