"""Errors of the prompts area."""

from __future__ import annotations

from callrec.errors import ConfigError


class PromptError(ConfigError):
    """Something about prompts an admin must fix."""

    default_message = "prompt error"


class PromptMissing(PromptError):
    """No built version of a prompt exists for that name and language."""

    http_status = 404
    default_message = "prompt not found"


class PromptSourceError(PromptError):
    """A prompt source cannot be used; the message starts with the file's path."""

    default_message = "unusable prompt source"
