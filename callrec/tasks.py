"""Stopping background tasks: cancel, then wait for them to finish."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has stopped.

    The task's own CancelledError is expected and absorbed; if the caller itself is
    cancelled while it waits, that cancellation is passed on, never swallowed. A caller that
    was cancelled before and is cleaning up (aiohttp runs the cleanup contexts in its
    cancelled main task) can still stop its tasks: only a new cancellation counts."""
    current = asyncio.current_task()
    before = current.cancelling() if current is not None else 0
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if current is not None and current.cancelling() > before:
            raise
