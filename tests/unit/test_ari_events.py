"""decode_event: every event type callrec uses, malformed input, and fuzzing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callrec.ari import events as ev
from callrec.ari.errors import AriDecodeError, EventDecodeError
from callrec.ari.models import Channel
from tests.unit.test_ari_samples import SAMPLES, channel, sample

WHEN = datetime(2026, 11, 28, 19, 24, 45, 123000, tzinfo=UTC)


def test_every_sample_type_has_its_class() -> None:
    for kind in SAMPLES:
        decoded = ev.decode_event(sample(kind))
        assert type(decoded).__name__ == kind
        assert decoded.type == kind
        assert decoded.timestamp == WHEN


def test_stasis_start_carries_call_metadata() -> None:
    decoded = ev.decode_event(sample("StasisStart"))
    assert isinstance(decoded, ev.StasisStart)
    assert decoded.args == ("0912345",)
    ch = decoded.channel
    assert ch.id == "1764357885.17"
    assert ch.name == "PJSIP/caller-00000004"
    assert ch.state == "Ring"
    assert ch.caller.number == "0401234567"
    assert ch.caller.name == ""
    assert ch.connected.number == ""
    assert ch.exten == "0912345"
    assert ch.context == "from-pstn"
    assert ch.protocol_id == "1-4711@127.0.0.1"
    assert ch.creationtime == datetime(2026, 11, 28, 19, 24, 44, 870000, tzinfo=UTC)


def test_stasis_start_without_args_is_malformed() -> None:
    raw = sample("StasisStart")
    del raw["args"]
    with pytest.raises(EventDecodeError, match="args"):
        ev.decode_event(raw)


def test_channel_destroyed_cause() -> None:
    decoded = ev.decode_event(sample("ChannelDestroyed"))
    assert isinstance(decoded, ev.ChannelDestroyed)
    assert (decoded.cause, decoded.cause_txt) == (16, "Normal Clearing")


def test_hangup_request_cause_is_optional() -> None:
    raw = sample("ChannelHangupRequest")
    assert ev.decode_event(raw) == ev.ChannelHangupRequest(
        channel=Channel.from_json(channel()), cause=16, timestamp=WHEN
    )
    del raw["cause"]
    decoded = ev.decode_event(raw)
    assert isinstance(decoded, ev.ChannelHangupRequest)
    assert decoded.cause is None


def test_soft_hangup_flags_are_not_a_cause() -> None:
    raw = sample("ChannelHangupRequest")
    raw.update(cause=32, soft=True)  # AST_SOFTHANGUP_EXPLICIT: what a DELETE over ARI gives
    decoded = ev.decode_event(raw)
    assert isinstance(decoded, ev.ChannelHangupRequest) and decoded.cause is None
    raw.update(cause=-1, soft=False)
    decoded = ev.decode_event(raw)
    assert isinstance(decoded, ev.ChannelHangupRequest) and decoded.cause is None
    raw.update(cause=17, soft="yes")
    with pytest.raises(EventDecodeError, match="soft"):
        ev.decode_event(raw)


@pytest.mark.parametrize(("cause", "soft", "shutdown"), [
    (4, True, True),  # what "core stop now" sent on Asterisk 22 for every channel
    (4 | 32, True, True),
    (32, True, False),  # our own DELETE
    (8, True, False),  # AST_SOFTHANGUP_TIMEOUT
    (4, False, False),  # a hard hangup's Q.850 cause 4 is not the flag
    (None, True, False),
    (-1, False, False),
])
def test_a_system_shutdown_is_told_apart(cause: int | None, soft: bool, shutdown: bool) -> None:
    raw = sample("ChannelHangupRequest")
    raw.pop("cause")
    raw["soft"] = soft
    if cause is not None:
        raw["cause"] = cause
    decoded = ev.decode_event(raw)
    assert isinstance(decoded, ev.ChannelHangupRequest)
    assert decoded.shutdown is shutdown
    assert decoded.cause == (cause if not soft and cause is not None and cause > 0 else None)


def test_bridge_events() -> None:
    entered = ev.decode_event(sample("ChannelEnteredBridge"))
    assert isinstance(entered, ev.ChannelEnteredBridge)
    assert entered.bridge.id == "call-6f1c"
    assert entered.bridge.bridge_type == "mixing"
    assert entered.bridge.channels == ("1764357885.17",)
    assert entered.channel.id == "1764357885.17"
    left = ev.decode_event(sample("ChannelLeftBridge"))
    assert isinstance(left, ev.ChannelLeftBridge)
    assert left.bridge.channels == ()


@pytest.mark.parametrize(
    ("name", "number", "stored_name", "stored_number"),
    [
        ("Äijä Öhman 😀", "+358401234567", "Äijä Öhman 😀", "+358401234567"),
        # valid JSON escapes, but no text PostgreSQL or UTF-8 can hold
        ("Aino\u0000 A", "040\u00001", "Aino A", "0401"),
        ("x\ud800y\udfff", "1\udc00", "x\ufffdy\ufffd", "1\ufffd"),
    ],
)
def test_caller_id_is_made_storable(
    name: str, number: str, stored_name: str, stored_number: str
) -> None:
    raw = sample("StasisStart")
    raw["channel"]["caller"] = {"name": name, "number": number}
    # through JSON text, as it arrives
    decoded = ev.decode_event(json.loads(json.dumps(raw)))
    assert isinstance(decoded, ev.StasisStart)
    assert (decoded.channel.caller.name, decoded.channel.caller.number) == (
        stored_name, stored_number)
    (decoded.channel.caller.name + decoded.channel.caller.number).encode()  # encodes


def test_dial_with_and_without_caller() -> None:
    raw = sample("Dial")
    decoded = ev.decode_event(raw)
    assert isinstance(decoded, ev.Dial)
    assert decoded.peer.id == "agent1-6f1c"
    assert decoded.caller is not None and decoded.caller.id == "1764357885.17"
    assert decoded.dialstatus == "RINGING"
    del raw["caller"]
    decoded = ev.decode_event(raw)
    assert isinstance(decoded, ev.Dial) and decoded.caller is None


def test_playback_events() -> None:
    started = ev.decode_event(sample("PlaybackStarted"))
    finished = ev.decode_event(sample("PlaybackFinished"))
    assert isinstance(started, ev.PlaybackStarted)
    assert isinstance(finished, ev.PlaybackFinished)
    assert started.playback.media_uri.endswith("notice-fi-3.wav")
    assert started.playback.target_uri == "channel:1764357885.17"
    assert (started.playback.state, finished.playback.state) == ("playing", "done")


def test_recording_events() -> None:
    started = ev.decode_event(sample("RecordingStarted"))
    finished = ev.decode_event(sample("RecordingFinished"))
    failed = ev.decode_event(sample("RecordingFailed"))
    assert isinstance(started, ev.RecordingStarted)
    assert isinstance(finished, ev.RecordingFinished)
    assert isinstance(failed, ev.RecordingFailed)
    assert started.recording.name == "2026/11/28/6f1c"
    assert started.recording.target_uri == "bridge:call-6f1c"
    assert (started.recording.duration, started.recording.cause) == (None, None)
    assert (finished.recording.state, finished.recording.duration) == ("done", 42)
    assert (failed.recording.state, failed.recording.cause) == ("failed", "Recording failed")


def test_application_replaced() -> None:
    assert ev.decode_event(sample("ApplicationReplaced")) == ev.ApplicationReplaced(timestamp=WHEN)


def test_unknown_types_keep_the_raw_message() -> None:
    raw = {"type": "ChannelVarset", "variable": "X", "value": "1", "timestamp": "bad"}
    with pytest.raises(EventDecodeError, match="timestamp"):
        ev.decode_event(raw)
    raw["timestamp"] = "2026-11-28T19:24:45.123+0000"
    decoded = ev.decode_event(raw)
    assert isinstance(decoded, ev.UnknownEvent)
    assert decoded.type == "ChannelVarset"
    assert decoded.raw["variable"] == "X"
    raw["variable"] = "changed later"
    assert decoded.raw["variable"] == "X", "the event must not share the caller's dict"
    with pytest.raises(TypeError):
        decoded.raw["variable"] = "Y"  # type: ignore[index]


def test_timestamp_is_optional_but_must_have_an_offset() -> None:
    raw = sample("StasisEnd")
    del raw["timestamp"]
    assert ev.decode_event(raw).timestamp is None
    raw["timestamp"] = "2026-11-28T19:24:45.123"
    with pytest.raises(EventDecodeError, match="offset"):
        ev.decode_event(raw)
    raw["timestamp"] = "2026-11-28T21:24:45.123+0200"
    assert ev.decode_event(raw).timestamp == WHEN
    assert ev.decode_event(raw).timestamp.utcoffset() == timedelta(hours=2)  # type: ignore[union-attr]


def test_protocol_id_and_creationtime_may_be_absent() -> None:
    raw = sample("StasisStart")
    del raw["channel"]["protocol_id"]
    del raw["channel"]["creationtime"]
    decoded = ev.decode_event(raw)
    assert isinstance(decoded, ev.StasisStart)
    assert decoded.channel.protocol_id == ""
    assert decoded.channel.creationtime is None


def test_extra_fields_are_ignored() -> None:
    raw = sample("StasisStart")
    raw["replace_channel"] = channel("other")
    raw["channel"]["channelvars"] = {"CALLREC": "1"}
    raw["channel"]["tenantid"] = "t1"
    assert isinstance(ev.decode_event(raw), ev.StasisStart)


def _drop(path: tuple[str, ...]) -> Any:
    def mutate(raw: dict[str, Any]) -> None:
        target = raw
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _set(path: tuple[str, ...], value: Any) -> Any:
    def mutate(raw: dict[str, Any]) -> None:
        target = raw
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


MALFORMED = [
    ("StasisStart", _drop(("channel",)), "channel"),
    ("StasisStart", _set(("channel",), "1764357885.17"), "channel"),
    ("StasisStart", _set(("args",), "0912345"), "args"),
    ("StasisStart", _set(("args",), [1]), "args"),
    ("StasisStart", _drop(("channel", "id")), "'id'"),
    ("StasisStart", _set(("channel", "id"), 17), "'id'"),
    ("StasisStart", _drop(("channel", "caller")), "caller"),
    ("StasisStart", _set(("channel", "caller", "number"), None), "number"),
    ("StasisStart", _drop(("channel", "dialplan")), "dialplan"),
    ("StasisStart", _set(("channel", "dialplan", "exten"), 912345), "exten"),
    ("StasisStart", _set(("channel", "creationtime"), 1764357885), "creationtime"),
    ("ChannelDestroyed", _drop(("cause",)), "cause"),
    ("ChannelDestroyed", _set(("cause",), "16"), "cause"),
    ("ChannelDestroyed", _set(("cause",), True), "cause"),
    ("ChannelDestroyed", _set(("cause",), 16.0), "cause"),
    ("ChannelDestroyed", _drop(("cause_txt",)), "cause_txt"),
    ("ChannelHangupRequest", _set(("cause",), "normal"), "cause"),
    ("ChannelEnteredBridge", _drop(("bridge",)), "bridge"),
    ("ChannelEnteredBridge", _set(("bridge", "channels"), "a,b"), "channels"),
    ("ChannelEnteredBridge", _drop(("channel",)), "channel"),
    ("Dial", _drop(("peer",)), "peer"),
    ("Dial", _set(("caller",), []), "caller"),
    ("Dial", _drop(("dialstatus",)), "dialstatus"),
    ("PlaybackStarted", _drop(("playback", "state")), "state"),
    ("RecordingFinished", _set(("recording", "duration"), "42"), "duration"),
    ("RecordingFailed", _set(("recording", "cause"), 1), "cause"),
    ("RecordingStarted", _drop(("recording", "name")), "name"),
]


@pytest.mark.parametrize(("kind", "mutate", "field"), MALFORMED)
def test_malformed_known_events_name_the_field(kind: str, mutate: Any, field: str) -> None:
    raw = sample(kind)
    mutate(raw)
    with pytest.raises(EventDecodeError, match=field) as info:
        ev.decode_event(raw)
    assert kind in str(info.value)


@pytest.mark.parametrize(
    "raw",
    [{}, {"type": ""}, {"type": None}, {"type": 5}, {"type": ["StasisStart"]}, [], "x", None],
)
def test_messages_without_a_type_are_malformed(raw: Any) -> None:
    with pytest.raises(EventDecodeError):
        ev.decode_event(raw)


def test_event_decode_error_is_an_ari_decode_error() -> None:
    assert issubclass(EventDecodeError, AriDecodeError)
    assert ev.EventDecodeError is EventDecodeError


def test_synthetic_events() -> None:
    assert ev.Connected(True).type == "Connected"
    assert ev.Connected(reconnect=False).reconnect is False
    assert ev.Disconnected("closed by Asterisk").reason == "closed by Asterisk"
    assert ev.Disconnected(reason="x", timestamp=WHEN).timestamp == WHEN


def test_events_are_frozen() -> None:
    decoded = ev.decode_event(sample("StasisEnd"))
    with pytest.raises(AttributeError):
        decoded.type = "StasisStart"  # type: ignore[misc]


# -- fuzzing -----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
event_types = st.sampled_from([*SAMPLES, "ChannelVarset", "", "Connected"])
time_like = st.sampled_from(
    ["2026-11-28T19:24:45.123+0000", "2026-11-28T19:24:45", "0000-00-00", "", "+0000", "T"]
) | st.text(max_size=30)


def _must_only_raise_decode_error(raw: Any) -> None:
    try:
        decoded = ev.decode_event(raw)
    except EventDecodeError as exc:
        assert exc.message
    else:
        assert isinstance(decoded, ev.Event)
        assert decoded.type == raw["type"]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=8) | json_values)
def test_fuzz_arbitrary_json(raw: Any) -> None:
    _must_only_raise_decode_error(raw)


@st.composite
def mutated_samples(draw: st.DrawFn) -> dict[str, Any]:
    """A realistic event with some of its fields, at any depth, replaced or deleted."""
    raw = sample(draw(st.sampled_from(list(SAMPLES))))
    for _ in range(draw(st.integers(1, 4))):
        target: Any = raw
        while isinstance(target, dict) and target and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(target)))
            if not isinstance(target[key], dict):
                break
            target = target[key]
        if not isinstance(target, dict) or not target:
            continue
        key = draw(st.sampled_from(sorted(target)))
        if draw(st.booleans()):
            del target[key]
        elif key in ("timestamp", "creationtime"):
            target[key] = draw(time_like)
        else:
            target[key] = draw(json_values)
    if draw(st.booleans()):
        raw["type"] = draw(event_types)
    return raw


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_samples())
def test_fuzz_mutated_real_events(raw: dict[str, Any]) -> None:
    _must_only_raise_decode_error(raw)


@given(st.sampled_from(list(SAMPLES)))
def test_samples_survive_a_json_round_trip(kind: str) -> None:
    raw = json.loads(json.dumps(sample(kind)))
    assert ev.decode_event(raw) == ev.decode_event(sample(kind))
