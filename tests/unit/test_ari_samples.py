"""Realistic ARI JSON samples (no tests here), shaped as Asterisk 22 writes them
(rest-api/api-docs/events.json, channels.json, bridges.json, ...)."""

from __future__ import annotations

import copy
from typing import Any

TS = "2026-11-28T19:24:45.123+0000"


def channel(
    channel_id: str = "1764357885.17",
    *,
    name: str = "PJSIP/caller-00000004",
    state: str = "Ring",
    number: str = "0401234567",
    exten: str = "0912345",
) -> dict[str, Any]:
    return {
        "id": channel_id,
        "name": name,
        "state": state,
        "protocol_id": "1-4711@127.0.0.1",
        "caller": {"name": "", "number": number},
        "connected": {"name": "", "number": ""},
        "accountcode": "",
        "dialplan": {
            "context": "from-pstn",
            "exten": exten,
            "priority": 2,
            "app_name": "Stasis",
            "app_data": f"callrec,{exten}",
        },
        "creationtime": "2026-11-28T19:24:44.870+0000",
        "language": "fi",
    }


def bridge(bridge_id: str = "call-6f1c", channels: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "id": bridge_id,
        "technology": "simple_bridge",
        "bridge_type": "mixing",
        "bridge_class": "stasis",
        "creator": "Stasis",
        "name": "",
        "channels": list(channels),
        "creationtime": TS,
        "video_mode": "none",
    }


def playback(state: str = "playing") -> dict[str, Any]:
    return {
        "id": "pb-6f1c",
        "media_uri": "sound:http://127.0.0.1:8080/prompts/notice-fi-3.wav",
        "target_uri": "channel:1764357885.17",
        "language": "fi",
        "state": state,
    }


def live_recording(state: str = "recording", **extra: Any) -> dict[str, Any]:
    rec = {
        "name": "2026/11/28/6f1c",
        "format": "wav",
        "target_uri": "bridge:call-6f1c",
        "state": state,
    }
    rec.update(extra)
    return rec


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "timestamp": TS,
        "application": "callrec",
        "asterisk_id": "52:54:00:12:34:56",
        **fields,
    }


# one realistic message of every event type callrec decodes
SAMPLES: dict[str, dict[str, Any]] = {
    "StasisStart": event("StasisStart", args=["0912345"], channel=channel()),
    "StasisEnd": event("StasisEnd", channel=channel(state="Up")),
    "ChannelStateChange": event("ChannelStateChange", channel=channel(state="Up")),
    "ChannelDestroyed": event(
        "ChannelDestroyed", cause=16, cause_txt="Normal Clearing", channel=channel()
    ),
    "ChannelHangupRequest": event("ChannelHangupRequest", cause=16, channel=channel()),
    "ChannelEnteredBridge": event(
        "ChannelEnteredBridge", bridge=bridge(channels=("1764357885.17",)), channel=channel()
    ),
    "ChannelLeftBridge": event("ChannelLeftBridge", bridge=bridge(), channel=channel()),
    "Dial": event(
        "Dial",
        peer=channel("agent1-6f1c", name="PJSIP/agent1-00000005", state="Down"),
        caller=channel(),
        dialstatus="RINGING",
        dialstring="agent1",
    ),
    "PlaybackStarted": event("PlaybackStarted", playback=playback()),
    "PlaybackFinished": event("PlaybackFinished", playback=playback("done")),
    "RecordingStarted": event("RecordingStarted", recording=live_recording()),
    "RecordingFinished": event(
        "RecordingFinished",
        recording=live_recording("done", duration=42, talking_duration=0, silence_duration=0),
    ),
    "RecordingFailed": event(
        "RecordingFailed", recording=live_recording("failed", cause="Recording failed")
    ),
    "ApplicationReplaced": event("ApplicationReplaced"),
}


def sample(kind: str) -> dict[str, Any]:
    """A fresh, mutable copy of the sample of `kind`."""
    return copy.deepcopy(SAMPLES[kind])
