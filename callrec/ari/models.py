"""ARI objects as frozen dataclasses, decoded from Asterisk's JSON.

Field shapes follow rest-api/api-docs/*.json of Asterisk 22; only what callrec uses is kept.
Every `from_json` raises `AriDecodeError` (naming the field) when the JSON does not match.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from callrec.ari.errors import AriDecodeError
from callrec.ari.fields import (
    as_object,
    opt_datetime,
    opt_int,
    opt_str,
    req_object,
    req_str,
    req_str_tuple,
    req_text,
)


@dataclass(frozen=True)
class CallerId:
    name: str
    number: str

    @classmethod
    def from_json(cls, raw: Any) -> CallerId:
        obj = as_object(raw, "CallerID")
        return cls(name=req_text(obj, "name"), number=req_text(obj, "number"))


@dataclass(frozen=True)
class Channel:
    id: str
    name: str
    state: str
    caller: CallerId
    connected: CallerId
    exten: str
    context: str
    creationtime: datetime | None
    protocol_id: str  # the SIP Call-ID for PJSIP channels, "" for others

    @classmethod
    def from_json(cls, raw: Any) -> Channel:
        obj = as_object(raw, "Channel")
        dialplan = req_object(obj, "dialplan")
        return cls(
            id=req_str(obj, "id"),
            name=req_str(obj, "name"),
            state=req_str(obj, "state"),
            caller=CallerId.from_json(req_object(obj, "caller")),
            connected=CallerId.from_json(req_object(obj, "connected")),
            exten=req_str(dialplan, "exten"),
            context=req_str(dialplan, "context"),
            creationtime=opt_datetime(obj, "creationtime"),
            # optional here although documented as required: absent before Asterisk 18
            protocol_id=opt_str(obj, "protocol_id") or "",
        )


@dataclass(frozen=True)
class Bridge:
    id: str
    bridge_type: str
    channels: tuple[str, ...]

    @classmethod
    def from_json(cls, raw: Any) -> Bridge:
        obj = as_object(raw, "Bridge")
        return cls(
            id=req_str(obj, "id"),
            bridge_type=req_str(obj, "bridge_type"),
            channels=req_str_tuple(obj, "channels"),
        )


@dataclass(frozen=True)
class Playback:
    id: str
    media_uri: str
    target_uri: str
    state: str  # queued, playing, done, failed, ...

    @classmethod
    def from_json(cls, raw: Any) -> Playback:
        obj = as_object(raw, "Playback")
        return cls(
            id=req_str(obj, "id"),
            media_uri=req_str(obj, "media_uri"),
            target_uri=req_str(obj, "target_uri"),
            state=req_str(obj, "state"),
        )


@dataclass(frozen=True)
class LiveRecording:
    name: str
    format: str
    target_uri: str
    state: str  # queued, recording, paused, done, failed, canceled
    duration: int | None  # seconds, present once finished
    cause: str | None  # why it failed

    @classmethod
    def from_json(cls, raw: Any) -> LiveRecording:
        obj = as_object(raw, "LiveRecording")
        return cls(
            name=req_str(obj, "name"),
            format=req_str(obj, "format"),
            target_uri=req_str(obj, "target_uri"),
            state=req_str(obj, "state"),
            duration=opt_int(obj, "duration"),
            cause=opt_str(obj, "cause"),
        )


@dataclass(frozen=True)
class StoredRecording:
    name: str
    format: str

    @classmethod
    def from_json(cls, raw: Any) -> StoredRecording:
        obj = as_object(raw, "StoredRecording")
        return cls(name=req_str(obj, "name"), format=req_str(obj, "format"))


@dataclass(frozen=True)
class Application:
    name: str
    channel_ids: tuple[str, ...]
    bridge_ids: tuple[str, ...]

    @classmethod
    def from_json(cls, raw: Any) -> Application:
        obj = as_object(raw, "Application")
        return cls(
            name=req_str(obj, "name"),
            channel_ids=req_str_tuple(obj, "channel_ids"),
            bridge_ids=req_str_tuple(obj, "bridge_ids"),
        )


def endpoint_state(raw: Any) -> str:
    """The `state` of an ARI Endpoint object ("unknown" when Asterisk leaves it out)."""
    obj: Mapping[str, Any] = as_object(raw, "Endpoint")
    return opt_str(obj, "state") or "unknown"


def startup_time(raw: Any) -> datetime:
    """When this Asterisk started, from `GET /asterisk/info?only=status` (an AsteriskInfo)."""
    status = req_object(as_object(raw, "AsteriskInfo"), "status")
    started = opt_datetime(status, "startup_time")
    if started is None:
        raise AriDecodeError("AsteriskInfo.status has no startup_time")
    return started
