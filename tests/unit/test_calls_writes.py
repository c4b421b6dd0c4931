"""The call manager's row writes: the first waited for and urgent, the later ones in order,
merged while an earlier one is still under way."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

import pytest

from callrec.calls import machine as m
from callrec.calls.manager import CallManager, _Call

pytestmark = pytest.mark.timeout(10)


class HeldStore:
    """Keeps every write; a write waits while `held` is clear."""

    def __init__(self) -> None:
        self.writes: list[tuple[dict[str, Any], bool, bool]] = []
        self.held = asyncio.Event()
        self.held.set()
        self.waiting = 0

    async def record_call(
        self, call_id: uuid.UUID, *, durable: bool = True, urgent: bool = False, **fields: Any
    ) -> None:
        self.writes.append((fields, durable, urgent))
        self.waiting += 1
        await self.held.wait()
        self.waiting -= 1


def _manager(store: HeldStore) -> tuple[CallManager, _Call]:
    unused = cast(Any, None)  # the writes touch neither ARI, archive, routing nor prompts
    manager = CallManager(unused, cast(Any, store), unused, unused, unused, "callrec")
    return manager, _Call(m.initial_state(uuid.uuid4(), "1700000000.1"), "100")


async def _written(manager: CallManager) -> None:
    await manager.close()  # waits for the writes under way


async def test_writes_in_turn_go_one_by_one() -> None:
    store = HeldStore()
    manager, call = _manager(store)
    await manager._persist(call, durable=False, state="notice", caller_number="0401")
    for fields in ({"state": "ringing"}, {"state": "conversation", "agent_name": "Aino"}):
        await manager._persist(call, durable=False, **fields)
        assert call.writes is not None
        await call.writes
    await manager._persist(call, durable=True, state="done", end_reason="completed")
    await _written(manager)
    assert store.writes == [
        ({"state": "notice", "caller_number": "0401"}, False, True),
        ({"state": "ringing"}, False, False),
        ({"state": "conversation", "agent_name": "Aino"}, False, False),
        ({"state": "done", "end_reason": "completed"}, True, False),
    ]


async def test_writes_behind_a_slow_one_are_merged_in_order_and_durable_if_any_is() -> None:
    store = HeldStore()
    manager, call = _manager(store)
    await manager._persist(call, durable=False, state="notice")
    store.held.clear()
    await manager._persist(call, durable=False, state="ringing")
    await asyncio.sleep(0)  # the writer takes it and waits in the database
    assert store.waiting == 1
    await manager._persist(call, durable=False, state="conversation", agent_name="Aino")
    await manager._persist(call, durable=True, state="done", end_reason="completed")
    await manager._persist(call, durable=False, recording_name="rec-1")
    assert len(store.writes) == 2  # nothing more sent while the second is under way
    store.held.set()
    await _written(manager)
    assert store.writes[2:] == [
        ({"state": "done", "agent_name": "Aino", "end_reason": "completed",
          "recording_name": "rec-1"}, True, False),
    ]
    assert not call.pending and not call.pending_durable


async def test_a_write_after_the_writer_finished_starts_it_again() -> None:
    store = HeldStore()
    manager, call = _manager(store)
    await manager._persist(call, durable=False, state="notice")
    await manager._persist(call, durable=False, state="ringing")
    first_writer = call.writes
    assert first_writer is not None
    await first_writer
    await manager._persist(call, durable=True, state="done")
    assert call.writes is not first_writer
    await _written(manager)
    assert [w[0] for w in store.writes] == [
        {"state": "notice"}, {"state": "ringing"}, {"state": "done"}]
