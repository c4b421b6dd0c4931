"""The archive's own worker threads.

The call path's blocking file work (the journal while PostgreSQL is away, copying and
checking recordings) runs here rather than in asyncio's default pool, which the console
shares: a few password hashes, a prompt rebuild or disclosure exports can hold all of its
few threads for seconds, and a call's journal write or recording would queue behind them.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar, cast

P = ParamSpec("P")
R = TypeVar("R")

#: Enough for a recording's copy, another's check and a journal write at once; the work is
#: short and mostly waits on the disk.
WORKERS = 4


class ArchiveThreads:
    """`run` is `asyncio.to_thread` on threads of the archive's own (started on first use)."""

    def __init__(self, workers: int = WORKERS) -> None:
        self.workers = workers
        self._executor: ThreadPoolExecutor | None = None
        self._work: set[Future[object]] = set()
        self._closed = False

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        if self._closed:
            raise RuntimeError("the archive's threads are closed")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="archive")
        # as to_thread: the caller's context (the call_id bound for logs) goes along
        call: Callable[[], R] = functools.partial(
            contextvars.copy_context().run, fn, *args, **kwargs)
        work = self._executor.submit(call)
        # the callback runs on the worker thread: a set's add, discard and copy are each
        # one step under the GIL
        self._work.add(cast("Future[object]", work))
        work.add_done_callback(self._work.discard)
        return await asyncio.wrap_future(work)

    async def close(self) -> None:
        """Let the work under way finish (a journal write must not be cut), then stop. Waits
        on the loop, not in a thread: asyncio's pool may be the one that is held up."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is None:
            return
        executor.shutdown(wait=False)  # what is queued still runs
        if self._work:
            await asyncio.wait([asyncio.wrap_future(w) for w in list(self._work)])
