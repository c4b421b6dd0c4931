"""Requests for which Asterisk looks a channel up (originate's originator, a snoop's channel,
a hang-up) name the channel by its Asterisk name, which it finds with a hash lookup; by id
it scans every channel. A name it does not know gets the request again by id."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from callrec.ari.errors import AriBadRequest, AriNotFound
from callrec.ari.models import Channel
from callrec.calls import machine as m
from callrec.calls.manager import CallManager, _Call
from tests.unit.test_calls_harness import channel

pytestmark = pytest.mark.timeout(10)

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
CALLER_NAME = "PJSIP/caller-00000007"


class NamingAri:
    """Knows channels by name and by id as Asterisk does; records what each request named."""

    def __init__(self) -> None:
        self.names = {CALLER_NAME: "caller.1"}  # name -> id of the channels that exist
        self.calls: list[tuple[str, str]] = []
        self.reject_originator = False

    def _find(self, what: str) -> str:
        if what in self.names:
            return self.names[what]
        if what in self.names.values():
            return what
        raise AriNotFound(f"{what}: Channel not found")

    async def originate(
        self, endpoint: str, *, channel_id: str, app_args: str = "",
        originator: str | None = None,
        timeout: int | None = None,  # noqa: ASYNC109 - the port's: seconds the phone rings
    ) -> Channel:
        self.calls.append(("originate", originator or ""))
        if originator is not None:
            if self.reject_originator and originator in self.names:
                raise AriBadRequest("Provided originator channel was not found")
            self._find(originator)
        name = "PJSIP/agent1-00000008"
        self.names[name] = channel_id
        return channel(channel_id, name)

    async def snoop(self, channel_id: str, *, snoop_id: str, spy: str = "both",
                    app_args: str = "") -> Channel:
        self.calls.append(("snoop", channel_id))
        spied = self._find(channel_id)
        name = f"Snoop/{spied}-00000009"
        self.names[name] = snoop_id
        return channel(snoop_id, name)

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        self.calls.append(("hangup", channel_id))
        found = self._find(channel_id)
        self.names = {n: i for n, i in self.names.items() if i != found}


def _setup() -> tuple[CallManager, _Call, NamingAri]:
    ari = NamingAri()
    unused = cast(Any, None)  # these commands touch neither store, archive, routing nor prompts
    manager = CallManager(cast(Any, ari), unused, unused, unused, unused, "callrec",
                          clock=lambda: T0)
    call_id = uuid.uuid4()
    call = _Call(m.initial_state(call_id, "caller.1"), "100")
    call.names["caller.1"] = CALLER_NAME  # as the caller's StasisStart tells it
    return manager, call, ari


async def _dial(manager: CallManager, call: _Call, agent: str) -> None:
    await manager._execute(call, m.DialAgent(agent, "PJSIP/agent1", "agent1", "caller.1", 30))


async def test_the_agent_is_dialled_for_the_caller_named_and_then_known_by_its_own_name() -> None:
    manager, call, ari = _setup()
    agent = m.agent_channel_id(call.id, 1)
    await _dial(manager, call, agent)
    snoop = m.snoop_id_for(call.id)
    await manager._execute(call, m.SnoopChannel("caller.1", snoop))
    await manager._hangup_command(call, agent, "normal")
    await manager._hangup_command(call, snoop, "normal")
    assert ari.calls == [
        ("originate", CALLER_NAME),
        ("snoop", CALLER_NAME),
        ("hangup", "PJSIP/agent1-00000008"),
        ("hangup", "Snoop/caller.1-00000009"),
    ]
    assert call.queue.empty(), "no request failed"


async def test_a_name_asterisk_does_not_know_gets_the_request_again_by_id() -> None:
    manager, call, ari = _setup()
    ari.names = {"PJSIP/caller-renamed": "caller.1"}  # renamed since its StasisStart
    await manager._hangup_command(call, "caller.1", "normal")
    assert ari.calls == [("hangup", CALLER_NAME), ("hangup", "caller.1")]
    assert call.queue.empty(), "found by id: not a failure"


async def test_an_originator_rejected_by_name_is_given_by_id() -> None:
    manager, call, ari = _setup()
    ari.reject_originator = True
    await _dial(manager, call, m.agent_channel_id(call.id, 1))
    assert ari.calls == [("originate", CALLER_NAME), ("originate", "caller.1")]


async def test_a_channel_whose_name_is_not_known_is_named_by_id() -> None:
    manager, call, ari = _setup()
    call.names.clear()  # e.g. a call adopted from an earlier run
    await manager._hangup_command(call, "caller.1", "normal")
    assert ari.calls == [("hangup", "caller.1")]


async def test_a_channel_gone_for_good_is_gone_as_it_was_by_id() -> None:
    manager, call, ari = _setup()
    ari.names = {}
    await manager._hangup_command(call, "caller.1", "normal")
    assert ari.calls == [("hangup", CALLER_NAME), ("hangup", "caller.1")]
    assert call.queue.empty(), "a hang-up of a channel already gone is no failure"
