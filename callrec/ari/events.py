"""ARI events as frozen dataclasses, and `decode_event` for websocket messages.

Only the events callrec acts on get their own class; every other well-formed message becomes
`UnknownEvent`. `Connected` and `Disconnected` are synthesised by the client, not by Asterisk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from callrec.ari.errors import AriDecodeError, EventDecodeError
from callrec.ari.fields import (
    opt_bool,
    opt_datetime,
    opt_int,
    opt_object,
    req_int,
    req_object,
    req_str,
    req_str_tuple,
)
from callrec.ari.models import Bridge, Channel, LiveRecording, Playback

__all__ = [
    "ApplicationReplaced",
    "ChannelDestroyed",
    "ChannelEnteredBridge",
    "ChannelHangupRequest",
    "ChannelLeftBridge",
    "ChannelStateChange",
    "Connected",
    "Dial",
    "Disconnected",
    "Event",
    "EventDecodeError",
    "PlaybackFinished",
    "PlaybackStarted",
    "RecordingFailed",
    "RecordingFinished",
    "RecordingStarted",
    "StasisEnd",
    "StasisStart",
    "UnknownEvent",
    "decode_event",
]


@dataclass(frozen=True)
class Event:
    """Base of all events; `type` is the ARI event type, `timestamp` Asterisk's time of it."""

    type: str = field(init=False, default="")
    timestamp: datetime | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class StasisStart(Event):
    type: str = field(init=False, default="StasisStart")
    channel: Channel
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class StasisEnd(Event):
    type: str = field(init=False, default="StasisEnd")
    channel: Channel


@dataclass(frozen=True)
class ChannelStateChange(Event):
    type: str = field(init=False, default="ChannelStateChange")
    channel: Channel


@dataclass(frozen=True)
class ChannelDestroyed(Event):
    type: str = field(init=False, default="ChannelDestroyed")
    channel: Channel
    cause: int
    cause_txt: str


@dataclass(frozen=True)
class ChannelHangupRequest(Event):
    """Someone asked for the hangup; `cause` is the Q.850 cause when Asterisk knows one.

    For a soft hangup (ours over ARI, or Asterisk's own) Asterisk reports soft-hangup flags
    in `cause`, not a hangup cause: it is None then. `shutdown`: Asterisk itself is stopping
    (or restarting) and hangs up every channel, so no party ended this call.
    """

    type: str = field(init=False, default="ChannelHangupRequest")
    channel: Channel
    cause: int | None = None
    shutdown: bool = False


@dataclass(frozen=True)
class ChannelEnteredBridge(Event):
    type: str = field(init=False, default="ChannelEnteredBridge")
    bridge: Bridge
    channel: Channel


@dataclass(frozen=True)
class ChannelLeftBridge(Event):
    type: str = field(init=False, default="ChannelLeftBridge")
    bridge: Bridge
    channel: Channel


@dataclass(frozen=True)
class Dial(Event):
    """Progress of a dial: `peer` is the dialled channel, `caller` the one that asked for it."""

    type: str = field(init=False, default="Dial")
    peer: Channel
    caller: Channel | None
    dialstatus: str  # "" while starting, then RINGING, PROGRESS, ANSWER, BUSY, NOANSWER, ...


@dataclass(frozen=True)
class PlaybackStarted(Event):
    type: str = field(init=False, default="PlaybackStarted")
    playback: Playback


@dataclass(frozen=True)
class PlaybackFinished(Event):
    type: str = field(init=False, default="PlaybackFinished")
    playback: Playback


@dataclass(frozen=True)
class RecordingStarted(Event):
    type: str = field(init=False, default="RecordingStarted")
    recording: LiveRecording


@dataclass(frozen=True)
class RecordingFinished(Event):
    type: str = field(init=False, default="RecordingFinished")
    recording: LiveRecording


@dataclass(frozen=True)
class RecordingFailed(Event):
    type: str = field(init=False, default="RecordingFailed")
    recording: LiveRecording


@dataclass(frozen=True)
class ApplicationReplaced(Event):
    """Another websocket took over our application name; we no longer receive events."""

    type: str = field(init=False, default="ApplicationReplaced")


@dataclass(frozen=True)
class UnknownEvent(Event):
    """A well-formed event of a type callrec does not act on; `raw` is the message."""

    raw: Mapping[str, Any] = field(hash=False)

    def __post_init__(self) -> None:
        # a read-only view: events are shared by every consumer of the stream
        object.__setattr__(self, "raw", MappingProxyType(dict(self.raw)))
        kind = self.raw.get("type")
        object.__setattr__(self, "type", kind if isinstance(kind, str) else "")


@dataclass(frozen=True)
class Connected(Event):
    """The events websocket is up; `reconnect` is False only for the first connection."""

    type: str = field(init=False, default="Connected")
    reconnect: bool


@dataclass(frozen=True)
class Disconnected(Event):
    """The events websocket dropped; events are lost until the next `Connected`."""

    type: str = field(init=False, default="Disconnected")
    reason: str


def _stasis_start(raw: Mapping[str, Any], ts: datetime | None) -> Event:
    return StasisStart(
        channel=Channel.from_json(req_object(raw, "channel")),
        args=req_str_tuple(raw, "args"),
        timestamp=ts,
    )


def _stasis_end(raw: Mapping[str, Any], ts: datetime | None) -> Event:
    return StasisEnd(channel=Channel.from_json(req_object(raw, "channel")), timestamp=ts)


def _state_change(raw: Mapping[str, Any], ts: datetime | None) -> Event:
    return ChannelStateChange(channel=Channel.from_json(req_object(raw, "channel")), timestamp=ts)


def _destroyed(raw: Mapping[str, Any], ts: datetime | None) -> Event:
    return ChannelDestroyed(
        channel=Channel.from_json(req_object(raw, "channel")),
        cause=req_int(raw, "cause"),
        cause_txt=req_str(raw, "cause_txt"),
        timestamp=ts,
    )


# include/asterisk/channel.h: the soft-hangup flag of a system shutdown ("core stop",
# "core restart"); ARI's DELETE gives AST_SOFTHANGUP_EXPLICIT (32) instead
SOFTHANGUP_SHUTDOWN = 1 << 2


def _hangup_request(raw: Mapping[str, Any], ts: datetime | None) -> Event:
    cause = opt_int(raw, "cause")
    shutdown = False
    # main/channel.c: a soft hangup carries AST_SOFTHANGUP_* flags (e.g. 32) as "cause",
    # and ast_queue_hangup_with_cause(-1) a -1; neither is a Q.850 cause
    if opt_bool(raw, "soft"):
        shutdown = cause is not None and cause > 0 and bool(cause & SOFTHANGUP_SHUTDOWN)
        cause = None
    elif cause is not None and cause < 0:
        cause = None
    return ChannelHangupRequest(
        channel=Channel.from_json(req_object(raw, "channel")),
        cause=cause,
        shutdown=shutdown,
        timestamp=ts,
    )


def _entered_bridge(raw: Mapping[str, Any], ts: datetime | None) -> Event:
    # events.json marks `channel` optional, but Asterisk 22 (main/stasis_bridges.c) never
    # sends this event without it
    return ChannelEnteredBridge(
        bridge=Bridge.from_json(req_object(raw, "bridge")),
        channel=Channel.from_json(req_object(raw, "channel")),
        timestamp=ts,
    )


def _left_bridge(raw: Mapping[str, Any], ts: datetime | None) -> Event:
    return ChannelLeftBridge(
        bridge=Bridge.from_json(req_object(raw, "bridge")),
        channel=Channel.from_json(req_object(raw, "channel")),
        timestamp=ts,
    )


def _dial(raw: Mapping[str, Any], ts: datetime | None) -> Event:
    caller = opt_object(raw, "caller")
    return Dial(
        peer=Channel.from_json(req_object(raw, "peer")),
        caller=None if caller is None else Channel.from_json(caller),
        dialstatus=req_str(raw, "dialstatus"),
        timestamp=ts,
    )


def _playback(kind: type[PlaybackStarted | PlaybackFinished]) -> _Decoder:
    def decode(raw: Mapping[str, Any], ts: datetime | None) -> Event:
        return kind(playback=Playback.from_json(req_object(raw, "playback")), timestamp=ts)

    return decode


def _recording(kind: type[RecordingStarted | RecordingFinished | RecordingFailed]) -> _Decoder:
    def decode(raw: Mapping[str, Any], ts: datetime | None) -> Event:
        return kind(recording=LiveRecording.from_json(req_object(raw, "recording")), timestamp=ts)

    return decode


def _replaced(raw: Mapping[str, Any], ts: datetime | None) -> Event:
    return ApplicationReplaced(timestamp=ts)


_Decoder = Callable[[Mapping[str, Any], datetime | None], Event]

_DECODERS: dict[str, _Decoder] = {
    "StasisStart": _stasis_start,
    "StasisEnd": _stasis_end,
    "ChannelStateChange": _state_change,
    "ChannelDestroyed": _destroyed,
    "ChannelHangupRequest": _hangup_request,
    "ChannelEnteredBridge": _entered_bridge,
    "ChannelLeftBridge": _left_bridge,
    "Dial": _dial,
    "PlaybackStarted": _playback(PlaybackStarted),
    "PlaybackFinished": _playback(PlaybackFinished),
    "RecordingStarted": _recording(RecordingStarted),
    "RecordingFinished": _recording(RecordingFinished),
    "RecordingFailed": _recording(RecordingFailed),
    "ApplicationReplaced": _replaced,
}


def decode_event(raw: Mapping[str, Any]) -> Event:
    """Decode one websocket message (already parsed JSON) into an `Event`.

    Raises `EventDecodeError`, and nothing else, when the message is malformed: not an object,
    no string `type`, or a field of a known event missing or of the wrong type.
    """
    if not isinstance(raw, Mapping):
        raise EventDecodeError(f"an event must be a JSON object, got {type(raw).__name__}")
    kind = raw.get("type")
    if not isinstance(kind, str) or not kind:
        raise EventDecodeError("event has no string 'type'")
    try:
        timestamp = opt_datetime(raw, "timestamp")
        decoder = _DECODERS.get(kind)
        if decoder is None:
            return UnknownEvent(raw=raw, timestamp=timestamp)
        return decoder(raw, timestamp)
    except EventDecodeError:
        raise
    except AriDecodeError as exc:
        raise EventDecodeError(f"{kind}: {exc.message}") from exc
