"""Domain errors of the privacy area; each knows its HTTP status for the web console."""

from __future__ import annotations

from callrec.errors import CallrecError


class PrivacyError(CallrecError):
    """Root of the privacy area's errors."""

    http_status = 500
    default_message = "privacy operation failed"


class Invalid(PrivacyError):
    """Malformed input: a number, a date, a time range, a password that breaks the policy."""

    http_status = 400
    default_message = "invalid input"


class AuthenticationFailed(PrivacyError):
    """Wrong credentials, a disabled or expired account, or a locked-out name.

    The message never says which, so that it cannot be used to probe accounts."""

    http_status = 401
    default_message = "authentication failed"


class Forbidden(PrivacyError):
    """The actor's roles do not allow the operation (the denial is audited)."""

    http_status = 403
    default_message = "not allowed"


class NotFound(PrivacyError):
    http_status = 404
    default_message = "not found"


class Conflict(PrivacyError):
    """The operation clashes with the current state (a hold, a closed case, a purge)."""

    http_status = 409
    default_message = "conflict with the current state"


class Unavailable(PrivacyError):
    """Something the operation needs is missing on disk (a recording file)."""

    http_status = 503
    default_message = "a needed resource is unavailable"
