"""Background tasks and blocking work: stopping a task (cancel, then wait for it), and the
shape of what runs blocking work off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class BlockingRunner(Protocol):
    """Runs `fn(*args)` in a thread and awaits its result: `asyncio.to_thread`, or the
    archive's own threads (`ArchiveThreads.run`)."""

    def __call__(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Awaitable[R]: ...


async def to_the_end(work: Awaitable[R]) -> R:
    """Await `work` (blocking work in a thread, or one that hands it to a thread): cancelled,
    wait for it to end before passing the cancellation on, because a thread cannot be
    stopped, and cleanup that runs while it still writes misses what it writes after."""
    future = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: the cancellation is what goes on
        raise


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
