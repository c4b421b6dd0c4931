"""Errors of the web console; each knows its HTTP status."""

from __future__ import annotations

from callrec.errors import CallrecError


class WebError(CallrecError):
    """Root of the web console's errors."""

    http_status = 400
    default_message = "bad request"


class NotLoggedIn(WebError):
    """No valid session: pages redirect to the login form, the API and files answer 401."""

    http_status = 401
    default_message = "login required"


class CsrfRejected(WebError):
    """A state-changing request without the session's CSRF token (or from another origin)."""

    http_status = 403
    default_message = "missing or wrong CSRF token: reload the page and try again"


class FormInvalid(WebError):
    """A form field is wrong; `field` names it so the page can show the error beside it."""

    http_status = 400

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class UploadRejected(WebError):
    """An upload that is too large or not the audio it claims to be."""

    http_status = 400
    default_message = "the upload was rejected"


class RangeNotSatisfiable(WebError):
    http_status = 416
    default_message = "requested range not satisfiable"
