"""Drill: malformed and unexpected ARI events on the events stream of the real client.

The decoder itself is fuzzed in tests/unit/test_ari_events.py; here hypothesis builds whole
streams (arbitrary JSON, non-JSON text, mutated real events) and plays them through
`AriClient.run_events`: the stream never stops, every good event is delivered in order, and
every rejection is counted and logged (without the message, which may hold phone numbers)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from callrec.ari.events import EventDecodeError, decode_event
from tests.unit.test_ari_client import Harness, ScriptedSocket, kinds, text
from tests.unit.test_ari_events import json_values, mutated_samples
from tests.unit.test_ari_samples import sample

pytestmark = [pytest.mark.drill]

message = st.one_of(
    mutated_samples(),
    st.dictionaries(st.text(max_size=12), json_values, max_size=6),
    json_values,
    st.text(max_size=40),  # often not JSON at all
)


def expected_kind(raw: Any) -> str | None:
    """The event type the client should deliver for one message, or None if rejected."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    if not isinstance(raw, dict):
        return None
    try:
        return decode_event(raw).type
    except EventDecodeError:
        return None


def as_message(raw: Any) -> Any:
    return raw if isinstance(raw, str) else json.dumps(raw)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(message, min_size=1, max_size=25))
def test_fuzzed_streams_never_stop_the_client(stream: list[Any]) -> None:
    bodies = [as_message(m) for m in stream]
    script = [text(sample("StasisStart")), *[text(b) for b in bodies],
              text(sample("StasisEnd"))]
    wanted: list[str] = []
    rejected = 0
    for body in bodies:
        kind = expected_kind(body)
        if kind is None:
            rejected += 1
            continue
        wanted.append(kind)
        if kind == "ApplicationReplaced":
            break  # by design the client reads no further on this connection
    else:
        wanted.append("StasisEnd")

    async def play() -> tuple[list[str], int]:
        h = Harness([ScriptedSocket(script)])
        events = await h.run()
        return kinds(events), h.ari.rejected_events

    with capture_logs() as logs:
        seen, count = asyncio.run(play())
    assert seen == ["Connected", "StasisStart", *wanted, "Disconnected"]
    assert count == rejected
    rejections = [e for e in logs if e["event"] == "ari.events.rejected"]
    assert len(rejections) == rejected
    for entry in rejections:
        assert entry["reason"]
        assert not any(isinstance(v, str) and v in bodies and len(v) > 3
                       for k, v in entry.items() if k != "reason"), entry
