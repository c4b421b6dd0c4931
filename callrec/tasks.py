"""Stopping background tasks: cancel, then wait for them to finish."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has stopped.

    The task's own CancelledError is expected and absorbed; if the caller itself is being
    cancelled meanwhile, that cancellation is passed on, never swallowed."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
