"""Errors the local stack reports to the person running `make up` or the tests."""

from __future__ import annotations


class StackError(Exception):
    """Something the developer must fix; the message says what and how."""


class NotReady(StackError, TimeoutError):
    """A part of the stack did not come up in time (a StackError: `make up` reports it
    without a traceback)."""
