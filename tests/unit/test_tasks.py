"""cancel_and_wait: the stopped task's cancellation is absorbed, the caller's is not."""

from __future__ import annotations

import asyncio

import pytest

from callrec.tasks import cancel_and_wait


async def test_task_is_stopped_and_its_cancellation_absorbed() -> None:
    cleaned = asyncio.Event()

    async def worker() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.set()

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled() and cleaned.is_set()


async def test_the_callers_own_cancellation_is_passed_on() -> None:
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await release.wait()  # cleanup that takes a while

    inner = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    outer = asyncio.create_task(cancel_and_wait(inner))
    await asyncio.sleep(0)
    outer.cancel()  # the stopper itself is cancelled while it waits
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert outer.cancelled()


async def test_a_caller_cleaning_up_after_its_own_cancellation_can_stop_tasks() -> None:
    """As aiohttp's run_app does on SIGTERM: the main task is cancelled, and its `finally`
    runs every cleanup context, which must still be able to stop their tasks."""
    stopped: list[bool] = []

    async def background() -> None:
        await asyncio.sleep(3600)

    async def main() -> None:
        task = asyncio.create_task(background())
        try:
            await asyncio.sleep(3600)
        finally:
            await cancel_and_wait(task)
            stopped.append(task.cancelled())
            await asyncio.sleep(0)  # and carries on with more cleanup

    runner = asyncio.create_task(main())
    await asyncio.sleep(0)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert stopped == [True]
