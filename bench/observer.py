"""Latency from Asterisk's own event timestamps: a second ARI application subscribed to
everything (`subscribeAll`) watches the calls callrec handles, without touching callrec.

- notice latency: the caller channel entering `Stasis()` (the ChannelDialplan event for the
  Stasis application: the moment StasisStart is sent) -> PlaybackStarted on that channel;
- join latency: the agent channel going Up (the agent answered) -> the agent channel entering
  the recorded bridge (ChannelEnteredBridge).
Both ends are stamped by Asterisk with one clock, so the figures include the websocket trip
to callrec, its processing and its REST calls back."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

OBSERVER_APP = "bench-observer"


def parse_ts(text: str) -> datetime:
    """Asterisk's event timestamp, e.g. 2026-11-28T19:44:11.538+0000."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")


@dataclass
class Latencies:
    notice_ms: list[float] = field(default_factory=list)
    join_ms: list[float] = field(default_factory=list)


def latencies(events: Iterable[Mapping[str, Any]], app: str = "callrec") -> Latencies:
    """Pair the events of each channel (pure: takes decoded ARI event dicts)."""
    stasis: dict[str, datetime] = {}
    up: dict[str, datetime] = {}
    out = Latencies()
    noticed: set[str] = set()
    joined: set[str] = set()
    for ev in events:
        kind = ev.get("type")
        ts = ev.get("timestamp")
        if not isinstance(ts, str):
            continue
        when = parse_ts(ts)
        if kind == "ChannelDialplan":
            args = str(ev.get("dialplan_app_data", "")).split(",")
            is_caller = args[0] == app and not (len(args) > 1 and args[1].startswith("agent:"))
            if ev.get("dialplan_app") == "Stasis" and is_caller:
                stasis.setdefault(ev["channel"]["id"], when)
        elif kind == "PlaybackStarted":
            target = str(ev["playback"].get("target_uri", ""))
            if target.startswith("channel:"):
                cid = target.split(":", 1)[1]
                if cid in stasis and cid not in noticed:
                    noticed.add(cid)
                    out.notice_ms.append((when - stasis[cid]).total_seconds() * 1000)
        elif kind == "ChannelStateChange":
            ch = ev["channel"]
            if ch.get("state") == "Up" and ch["id"] not in stasis:
                up.setdefault(ch["id"], when)
        elif kind == "ChannelEnteredBridge":
            cid = ev["channel"]["id"]
            if cid in up and cid not in joined:
                joined.add(cid)
                out.join_ms.append((when - up[cid]).total_seconds() * 1000)
    return out


class Observer:
    """Collects every ARI event of the system while running (async context manager)."""

    def __init__(self, ari_url: str, user: str, password: str) -> None:
        self._url = ari_url.rstrip("/")
        self._auth = aiohttp.BasicAuth(user, password)
        self.events: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Observer:
        self._session = aiohttp.ClientSession(auth=self._auth)
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _read(self) -> None:
        assert self._session is not None
        ws_url = self._url.replace("http", "ws", 1) + "/ari/events"
        params = {"app": OBSERVER_APP, "subscribeAll": "true"}
        async with self._session.ws_connect(ws_url, params=params, heartbeat=20) as ws:
            self._ready.set()
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.events.append(json.loads(msg.data))
