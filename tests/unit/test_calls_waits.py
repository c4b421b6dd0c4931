"""The two waits the call manager measures for /metrics: StasisStart -> the notice playing,
agent answer -> agent in the bridge; and the warning when one is long."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from structlog.testing import capture_logs

from callrec.ari.errors import AriConflict, AriUnavailable
from callrec.calls import machine as m
from callrec.calls.manager import SLOW_JOIN_S, CallManager, _Call

pytestmark = pytest.mark.timeout(10)

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class QuickAri:
    """Answers at once; `add_channel` fails while `broken`, `create_bridge` while
    `bridge_exists`."""

    def __init__(self) -> None:
        self.broken = False
        self.bridge_exists = False

    async def create_bridge(self, bridge_id: str, *, bridge_type: str = "mixing") -> None:
        if self.bridge_exists:
            raise AriConflict(f"POST /ari/bridges/{bridge_id}: 409 Bridge with id "
                              f"'{bridge_id}' already exists")

    async def play(self, channel_id: str, media: str, *, playback_id: str) -> None:
        pass

    async def add_channel(self, bridge_id: str, channel_id: str) -> None:
        if self.broken:
            raise AriUnavailable("no answer")


def _setup() -> tuple[CallManager, _Call, Clock, QuickAri]:
    clock, ari = Clock(), QuickAri()
    unused = cast(Any, None)  # these commands touch neither store, archive, routing nor prompts
    manager = CallManager(
        cast(Any, ari), unused, unused, unused, unused, "callrec", clock=clock
    )
    call_id = uuid.uuid4()
    state = m.initial_state(call_id, "caller.1")
    call = _Call(state, "100")
    call.state = m._changed(state, {"started_at": T0, "winner": "agent.1",
                                    "answered_at": T0 + timedelta(seconds=20)})
    return manager, call, clock, ari


async def test_the_notice_wait_runs_from_stasis_start_to_the_notice_playing() -> None:
    manager, call, clock, _ = _setup()
    clock.now = T0 + timedelta(milliseconds=30)
    await manager._do(call, m.Play("caller.1", "sound:x", call.notice_playback))
    # another prompt of the same call is not the notice
    await manager._do(call, m.Play("caller.1", "sound:y", m.playback_id_for(call.id, "queue")))
    assert manager.notice_wait.count == 1
    assert manager.notice_wait.sum == pytest.approx(0.03)
    assert manager.agent_join.count == 0


async def test_the_join_wait_runs_from_the_agent_answering_to_the_agent_in_the_bridge() -> None:
    manager, call, clock, ari = _setup()
    clock.now = T0 + timedelta(seconds=20.2)
    await manager._do(call, m.AddToBridge("bridge.1", "caller.1"))  # the caller: not counted
    ari.broken = True
    with pytest.raises(AriUnavailable):
        await manager._do(call, m.AddToBridge("bridge.1", "agent.1"))  # not in: not counted
    assert manager.agent_join.count == 0
    ari.broken = False
    with capture_logs() as logs:
        await manager._do(call, m.AddToBridge("bridge.1", "agent.1"))
    assert manager.agent_join.count == 1
    assert manager.agent_join.sum == pytest.approx(0.2)
    assert not [e for e in logs if e["log_level"] == "warning"]


async def test_a_long_wait_is_a_warning_of_its_own() -> None:
    manager, call, clock, _ = _setup()
    clock.now = T0 + timedelta(seconds=20 + SLOW_JOIN_S + 0.5)
    with capture_logs() as logs:
        await manager._do(call, m.AddToBridge("bridge.1", "agent.1"))
    assert [(e["event"], e["log_level"], e["seconds"]) for e in logs] == [
        ("agent waited long to be connected", "warning", SLOW_JOIN_S + 0.5)]
    assert manager.agent_join.cumulative()[-2:] == [("10", 1), ("+Inf", 1)]


async def test_a_bridge_asterisk_says_exists_was_made_by_an_earlier_request() -> None:
    # the bridge's id is the call's own: "already exists" means an earlier create that went
    # unanswered was done after all (the machine asks again at the answer)
    manager, call, _, ari = _setup()
    ari.bridge_exists = True
    await manager._execute(call, m.CreateBridge("bridge.1"))
    assert call.queue.empty(), "not a failure of the call"
