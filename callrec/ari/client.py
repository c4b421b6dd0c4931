"""An asyncio client for Asterisk's REST Interface: REST calls and the events websocket.

Transport only: no call logic. REST errors become the typed exceptions of
`callrec.ari.errors`; the websocket reconnects by itself and reports its state to the handler
as `Connected` / `Disconnected` events.

REST requests travel on the events websocket while it is up and Asterisk answers them there
(`RESTRequest` / `RESTResponse`, Asterisk 22.5 and later), otherwise over HTTP. A request on
the websocket costs a fraction of an HTTP exchange in this process, and a call makes a dozen.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import aiohttp
import structlog
from yarl import URL

from callrec.ari.backoff import Backoff
from callrec.ari.errors import (
    AriDecodeError,
    AriError,
    AriNoAnswer,
    AriNotFound,
    AriUnavailable,
    EventDecodeError,
    error_for_status,
)
from callrec.ari.events import ApplicationReplaced, Connected, Disconnected, Event, decode_event
from callrec.ari.models import (
    Application,
    Bridge,
    Channel,
    LiveRecording,
    Playback,
    StoredRecording,
    endpoint_state,
    startup_time,
)
from callrec.tasks import BlockingRunner

log = structlog.get_logger(__name__)


class _NotSent(AriUnavailable):
    """A request on the websocket that could not be written: not carried out, and free to
    go over HTTP instead."""

EventHandler = Callable[[Event], Awaitable[None]]

HEARTBEAT = 10.0  # seconds between pings; a peer silent for 1.5x this is dropped
# Requests in flight at once (aiohttp's default, made explicit): Asterisk's `sessionlimit`
# (asterisk-conf/http.conf) must leave room for these and the events websocket. At 20 calls/s
# the pool fills now and then; 400 was tried and changed nothing: Asterisk itself answered
# slowly then.
REST_CONNECTIONS = 100
# How long a new events websocket gets to answer a REST request before requests stay on HTTP
# (an Asterisk older than 22.5 ignores them).
REST_PROBE_TIMEOUT = 3.0
# Asterisk answers one websocket's requests one after another, and many wait for a channel's
# thread; with this many unanswered there, further requests go over HTTP, where each
# connection has a thread of its own (under load one slow channel must not hold up the rest).
WEBSOCKET_REQUESTS_IN_FLIGHT = 8
_CHUNK = 1024 * 1024
_Params = list[tuple[str, str]]
_T = TypeVar("_T")


def _basic_auth(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


# what quote(..., safe="") leaves as it is; ids and names are nearly always only this, and
# checking is several times cheaper than quoting (a dozen requests per call)
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def _quoted(value: str) -> str:
    """`value` fully quoted for a URL ('/' becomes %2F)."""
    return value if _UNRESERVED.fullmatch(value) else quote(value, safe="")


def _segment(value: str) -> str:
    """One URL path segment, fully quoted ('/' becomes %2F: recording names contain it)."""
    if not isinstance(value, str) or value in ("", ".", ".."):
        raise ValueError(f"invalid ARI path segment: {value!r}")
    if ".." in value.split("/"):
        raise ValueError(f"'..' is not allowed in an ARI name: {value!r}")
    return _quoted(value)


def _query(params: _Params) -> str:
    return "&".join(f"{_quoted(k)}={_quoted(v)}" for k, v in params)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _list_of(data: Any, decode: Callable[[Any], _T], what: str) -> list[_T]:
    if not isinstance(data, list):
        raise AriDecodeError(f"expected a JSON list of {what}, got {type(data).__name__}")
    return [decode(item) for item in data]


# What json.loads raises for text that is no JSON we can take: RecursionError for nesting
# deeper than the interpreter's stack (a few thousand brackets).
_NOT_JSON = (ValueError, RecursionError)


def _explanation(body: str, fallback: str) -> str:
    """Asterisk's explanation of an error: the body's JSON `message`, or the body text."""
    try:
        data = json.loads(body)
    except _NOT_JSON:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return body.strip()[:200] or fallback


async def _error_text(resp: aiohttp.ClientResponse) -> str:
    """Asterisk's explanation of an HTTP error response."""
    try:
        body = await resp.text()
    except (aiohttp.ClientError, UnicodeDecodeError):
        return resp.reason or ""
    return _explanation(body, resp.reason or "")


def _rest_answer(answer: Mapping[str, Any], what: str) -> Any:
    """The decoded body of a `RESTResponse`, or the typed error for its status."""
    status = answer.get("status_code")
    body = answer.get("message_body")
    if not isinstance(status, int) or not (body is None or isinstance(body, str)):
        raise AriDecodeError(f"{what}: malformed RESTResponse")
    if status >= 400:
        reason = answer.get("reason_phrase")
        message = _explanation(body or "", reason if isinstance(reason, str) else "")
        raise error_for_status(status, f"{what}: {status} {message}")
    return _json_body(body or "", what)


def _json_body(body: str | bytes, what: str) -> Any:
    """An answer's decoded JSON body, or None for an empty one."""
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except _NOT_JSON as exc:
        raise AriDecodeError(f"{what}: answer is not JSON") from exc


class AriClient:
    """REST and events client for one ARI application.

    The constructor does no I/O; `async with AriClient(...) as ari:` (or `start`/`close`)
    opens and closes the HTTP sessions. `base_url` is Asterisk's HTTP server, e.g.
    ``http://127.0.0.1:8088`` (a trailing ``/ari`` is accepted too).
    """

    def __init__(
        self,
        base_url: str,
        user: str,
        password: str,
        app: str,
        *,
        request_timeout: float = 10.0,
        heartbeat: float = HEARTBEAT,
        backoff_factory: Callable[[], Backoff] = Backoff,
        event_types: Iterable[str] | None = None,
        rest_over_websocket: bool = True,
        run_blocking: BlockingRunner = asyncio.to_thread,
    ) -> None:
        base = base_url.rstrip("/")
        if base.endswith("/ari"):
            base = base[: -len("/ari")]
        self._base = base
        self._authorization = _basic_auth(user, password)
        self.app = app
        self.request_timeout = request_timeout
        self._heartbeat = heartbeat
        self._backoff_factory = backoff_factory
        # where a downloaded recording's file writes run: the service gives the archive's
        # own threads
        self._run_blocking = run_blocking
        # Asked of Asterisk after every connect: every event it does not send is one it need
        # not serialise and we need not decode (a call makes dozens we have no use for).
        self._event_types = tuple(sorted(set(event_types))) if event_types is not None else None
        self._session: aiohttp.ClientSession | None = None
        self._ws_session: aiohttp.ClientSession | None = None
        self._connected = False
        self._events_running = False
        self._rest_over_websocket = rest_over_websocket
        # the events websocket while REST requests may travel on it
        self._rest_ws: aiohttp.ClientWebSocketResponse | None = None
        self._replies: dict[str, asyncio.Future[Mapping[str, Any]]] = {}
        self._request_ids = itertools.count(1)
        #: REST requests answered on the events websocket; requests sent over HTTP
        self.websocket_requests = 0
        self.http_requests = 0
        #: successful reconnections of the events websocket (the first connect not counted)
        self.reconnects = 0
        #: websocket messages dropped because they were not well-formed ARI events
        self.rejected_events = 0
        # events read from the websocket, not yet handed to the handler. Unbounded on
        # purpose: the reader also takes the REST answers a handler may be waiting for, so
        # a reader held up by a full queue could wait on itself. It is watched instead.
        self._inbox: asyncio.Queue[Event | str] | None = None
        #: the most events that ever waited there at once
        self.events_waiting_max = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP sessions (no request is sent yet)."""
        if self._session is not None:
            return
        headers = {"Authorization": self._authorization}
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            connector=aiohttp.TCPConnector(limit=REST_CONNECTIONS),
        )
        # the websocket lives for hours: only connecting is bounded, reading is not
        self._ws_session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=self.request_timeout, sock_connect=self.request_timeout
            ),
        )

    async def close(self) -> None:
        """Close the HTTP sessions; cancel and await `run_events` before calling this."""
        sessions = [s for s in (self._session, self._ws_session) if s is not None]
        self._session = self._ws_session = None
        for session in sessions:
            await session.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """True while the events websocket is up."""
        return self._connected

    @property
    def events_waiting(self) -> int:
        """Events read from Asterisk and not yet handed to the handler."""
        return self._inbox.qsize() if self._inbox is not None else 0

    @property
    def rest_on_websocket(self) -> bool:
        """True while REST requests travel on the events websocket."""
        return self._rest_ws is not None

    # -- REST plumbing --------------------------------------------------------------------

    def _url(self, *segments: str) -> URL:
        path = "/".join(_segment(s) for s in segments)
        return URL(f"{self._base}/ari/{path}", encoded=True)

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("AriClient is not started: use 'async with AriClient(...)'")
        return self._session

    async def _request(
        self,
        method: str,
        *segments: str,
        params: _Params | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request; the decoded JSON body, or None for an empty answer."""
        session = self._require_session()
        what = f"{method} /ari/{'/'.join(segments)}"
        ws = self._rest_ws
        if (
            ws is not None
            and not ws.closed  # closing: its reader has not let go of it yet
            and len(self._replies) < WEBSOCKET_REQUESTS_IN_FLIGHT
        ):
            try:
                return _rest_answer(
                    await self._send_on(ws, method, segments, params, body, what), what)
            except _NotSent:
                pass  # the socket went as it was asked to send: HTTP takes it
        self.http_requests += 1
        try:
            async with session.request(
                method, self._url(*segments), params=params, json=body
            ) as resp:
                if resp.status >= 400:
                    message = await _error_text(resp)
                    raise error_for_status(resp.status, f"{what}: {resp.status} {message}")
                payload = await resp.read()
        except AriError:
            raise
        except TimeoutError as exc:
            raise AriNoAnswer(f"{what}: no answer within {self.request_timeout:g} s") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            # the connection went after the request was written: done or not, unknown
            raise AriNoAnswer(f"{what}: {type(exc).__name__}: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise AriUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
        return _json_body(payload, what)

    async def _send_on(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        method: str,
        segments: Sequence[str],
        params: _Params | None,
        body: Mapping[str, Any] | None,
        what: str,
        limit: float | None = None,
    ) -> Mapping[str, Any]:
        """Send one `RESTRequest` on the websocket; its `RESTResponse`, as sent."""
        request_id = str(next(self._request_ids))
        # quoted as over HTTP: Asterisk splits a websocket request's path at '/' and then
        # unquotes each segment, so a channel's name ('PJSIP/agent1-0000002a') or a
        # recording's ('2026/11/29/...') goes as one segment
        uri = "/".join(_segment(s) for s in segments)
        if params:
            uri = f"{uri}?{_query(params)}"
        message: dict[str, str] = {
            "type": "RESTRequest", "request_id": request_id, "method": method, "uri": uri,
        }
        if body is not None:
            message["content_type"] = "application/json"
            message["message_body"] = json.dumps(body)
        limit = self.request_timeout if limit is None else limit
        reply: asyncio.Future[Mapping[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = reply
        try:
            async with asyncio.timeout(limit):
                try:
                    await ws.send_str(json.dumps(message))
                except (aiohttp.ClientError, ConnectionError) as exc:
                    raise _NotSent(f"{what}: {type(exc).__name__}: {exc}") from exc
                answer = await reply
        except TimeoutError as exc:
            raise AriNoAnswer(f"{what}: no answer within {limit:g} s") from exc
        finally:
            del self._replies[request_id]
        self.websocket_requests += 1
        return answer

    def _answered(self, answer: Mapping[str, Any]) -> None:
        request_id = answer.get("request_id")
        reply = self._replies.get(request_id) if isinstance(request_id, str) else None
        if reply is None or reply.done():
            # its request gave up waiting (timed out or cancelled)
            log.info("ari.rest.late_answer", app=self.app, uri=str(answer.get("uri"))[:100])
            return
        reply.set_result(answer)

    def _fail_replies(self, reason: str) -> None:
        # each was sent: Asterisk may have carried it out before the socket went (the call
        # flow takes AriNoAnswer for "maybe done", AriUnavailable for "not done")
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(AriNoAnswer(f"{reason}: it may have been carried out"))

    async def _offer_rest(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Carry REST requests on this websocket from now on if Asterisk answers one there."""
        if not self._rest_over_websocket:
            return
        try:
            answer = await self._send_on(
                ws, "GET", ("asterisk", "ping"), None, None, "GET /ari/asterisk/ping (websocket)",
                limit=REST_PROBE_TIMEOUT,
            )
            _rest_answer(answer, "GET /ari/asterisk/ping (websocket)")
        except AriError as exc:
            log.warning(
                "ari.rest.websocket_unavailable", app=self.app, error=str(exc),
                hint="REST requests go over HTTP; Asterisk 22.5 and later take them on the "
                "events websocket",
            )
            return
        self._rest_ws = ws

    # -- REST: Asterisk and application ---------------------------------------------------

    async def ping(self) -> None:
        """Raises `AriUnavailable` (or another `AriError`) unless Asterisk answers."""
        await self._request("GET", "asterisk", "ping")

    async def asterisk_started_at(self) -> datetime:
        """When Asterisk last started: a later time than before means it restarted."""
        return startup_time(
            await self._request("GET", "asterisk", "info", params=[("only", "status")]))

    async def get_application(self) -> Application:
        return Application.from_json(await self._request("GET", "applications", self.app))

    async def endpoint_state(self, tech: str, resource: str) -> str:
        """e.g. "online", "offline" or "unknown" for PJSIP/agent1."""
        return endpoint_state(await self._request("GET", "endpoints", tech, resource))

    # -- REST: channels -------------------------------------------------------------------

    async def list_channels(self) -> list[Channel]:
        return _list_of(await self._request("GET", "channels"), Channel.from_json, "channels")

    async def get_channel(self, channel_id: str) -> Channel:
        return Channel.from_json(await self._request("GET", "channels", channel_id))

    async def answer(self, channel_id: str) -> None:
        await self._request("POST", "channels", channel_id, "answer")

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        """`reason`: normal, busy, congestion, no_answer, answered_elsewhere, ..."""
        await self._request("DELETE", "channels", channel_id, params=[("reason", reason)])

    async def play(
        self, channel_id: str, media: str | Sequence[str], *, playback_id: str | None = None
    ) -> Playback:
        """Queue one or more media URIs (``sound:...``) on the channel."""
        items = [media] if isinstance(media, str) else list(media)
        if not items:
            raise ValueError("play() needs at least one media URI")
        params: _Params = [("media", m) for m in items]
        if playback_id is not None:
            params.append(("playbackId", playback_id))
        data = await self._request("POST", "channels", channel_id, "play", params=params)
        return Playback.from_json(data)

    async def stop_playback(self, playback_id: str) -> None:
        await self._request("DELETE", "playbacks", playback_id)

    async def ring(self, channel_id: str) -> None:
        await self._request("POST", "channels", channel_id, "ring")

    async def ring_stop(self, channel_id: str) -> None:
        await self._request("DELETE", "channels", channel_id, "ring")

    async def continue_in_dialplan(self, channel_id: str, *, label: str | None = None) -> None:
        """Let the channel leave our application and go on in the dialplan where it entered
        `Stasis()`: at the next priority, or at `label` of the same extension."""
        params: _Params = [("label", label)] if label else []
        await self._request("POST", "channels", channel_id, "continue", params=params)

    async def start_moh(self, channel_id: str) -> None:
        await self._request("POST", "channels", channel_id, "moh")

    async def stop_moh(self, channel_id: str) -> None:
        await self._request("DELETE", "channels", channel_id, "moh")

    async def originate(
        self,
        endpoint: str,
        *,
        channel_id: str,
        app_args: str = "",
        originator: str | None = None,
        timeout: int | None = None,  # noqa: ASYNC109 - seconds Asterisk lets the phone ring
    ) -> Channel:
        """Make a channel and dial it at once: POST /channels with our application.

        `originator` is the id of the channel it is dialled for (Asterisk copies that
        channel's caller id to the new one's connected line). The channel is subscribed to
        our application from the start (its `Dial` events, its hang-up) but enters it,
        with StasisStart, only when answered; a ring timeout ends it with cause 19.
        """
        params: _Params = [("endpoint", endpoint), ("app", self.app), ("channelId", channel_id)]
        if app_args:
            params.append(("appArgs", app_args))
        if originator is not None:
            params.append(("originator", originator))
        if timeout is not None:
            params.append(("timeout", str(int(timeout))))
        return Channel.from_json(await self._request("POST", "channels", params=params))

    # -- REST: bridges --------------------------------------------------------------------

    async def list_bridges(self) -> list[Bridge]:
        return _list_of(await self._request("GET", "bridges"), Bridge.from_json, "bridges")

    async def get_bridge(self, bridge_id: str) -> Bridge:
        return Bridge.from_json(await self._request("GET", "bridges", bridge_id))

    async def create_bridge(
        self, bridge_id: str, *, bridge_type: str = "mixing", name: str | None = None
    ) -> Bridge:
        params: _Params = [("type", bridge_type)]
        if name is not None:
            params.append(("name", name))
        return Bridge.from_json(await self._request("POST", "bridges", bridge_id, params=params))

    async def destroy_bridge(self, bridge_id: str) -> None:
        await self._request("DELETE", "bridges", bridge_id)

    async def add_channel(self, bridge_id: str, channel_id: str) -> None:
        params = [("channel", channel_id)]
        await self._request("POST", "bridges", bridge_id, "addChannel", params=params)

    async def remove_channel(self, bridge_id: str, channel_id: str) -> None:
        params = [("channel", channel_id)]
        await self._request("POST", "bridges", bridge_id, "removeChannel", params=params)

    # -- REST: recordings -----------------------------------------------------------------

    async def record_bridge(
        self, bridge_id: str, name: str, *, format: str = "wav", if_exists: str = "fail"
    ) -> LiveRecording:
        """Record the bridge's mix into ``<spool>/recording/<name>.<format>``."""
        params = [("name", name), ("format", format), ("ifExists", if_exists)]
        data = await self._request("POST", "bridges", bridge_id, "record", params=params)
        return LiveRecording.from_json(data)

    async def snoop(
        self, channel_id: str, *, snoop_id: str, spy: str = "both", app_args: str = ""
    ) -> Channel:
        """A snoop channel on `channel_id` into our application (audio it hears and/or sends)."""
        params: _Params = [("app", self.app), ("spy", spy), ("snoopId", snoop_id)]
        if app_args:
            params.append(("appArgs", app_args))
        data = await self._request("POST", "channels", channel_id, "snoop", params=params)
        return Channel.from_json(data)

    async def record_channel(
        self, channel_id: str, name: str, *, format: str = "wav", if_exists: str = "fail"
    ) -> LiveRecording:
        """Record what the channel reads into ``<spool>/recording/<name>.<format>``."""
        params = [("name", name), ("format", format), ("ifExists", if_exists)]
        data = await self._request("POST", "channels", channel_id, "record", params=params)
        return LiveRecording.from_json(data)

    async def stop_recording(self, name: str) -> None:
        await self._request("POST", "recordings", "live", name, "stop")

    async def recording_is_live(self, name: str) -> bool:
        """Whether Asterisk is still recording `name` (its file not closed yet)."""
        try:
            await self._request("GET", "recordings", "live", name)
        except AriNotFound:
            return False
        return True

    async def list_stored_recordings(self) -> list[StoredRecording]:
        data = await self._request("GET", "recordings", "stored")
        return _list_of(data, StoredRecording.from_json, "stored recordings")

    async def delete_stored_recording(self, name: str) -> None:
        await self._request("DELETE", "recordings", "stored", name)

    async def download_recording(self, name: str, dest: Path) -> int:
        """Stream a stored recording's file into `dest`; returns the bytes written.

        `dest` is created only once Asterisk has answered 200 (`AriNotFound` leaves no file);
        after a failure midway it may hold part of the file: the caller writes to a temporary
        name and renames it when complete.
        """
        session = self._require_session()
        what = f"GET /ari/recordings/stored/{name}/file"
        # a long file may take longer than one request timeout; a stalled read may not
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.request_timeout, sock_read=self.request_timeout
        )
        url = self._url("recordings", "stored", name, "file")
        try:
            async with session.get(url, timeout=timeout) as resp:
                if resp.status >= 400:
                    message = await _error_text(resp)
                    raise error_for_status(resp.status, f"{what}: {resp.status} {message}")
                return await _stream_to_file(resp, dest, self._run_blocking)
        except AriError:
            raise
        except TimeoutError as exc:
            raise AriUnavailable(f"{what}: stalled for {self.request_timeout:g} s") from exc
        except aiohttp.ClientError as exc:
            raise AriUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

    # -- events ---------------------------------------------------------------------------

    async def run_events(self, handler: EventHandler) -> None:
        """Receive events until cancelled, reconnecting with backoff whenever the socket drops.

        `handler` is awaited for each event in arrival order; it must only enqueue (a slow
        reader makes Asterisk drop the socket). `Connected` follows every successful connect,
        `Disconnected` every drop. Exceptions from `handler` are logged, never fatal.
        """
        if self._events_running:
            raise RuntimeError("run_events() is already running on this client")
        self._events_running = True
        backoff = self._backoff_factory()
        first = True
        try:
            while True:
                ws = await self._connect_events()
                if ws is None:
                    await asyncio.sleep(backoff.next_delay())
                    continue
                started = time.monotonic()
                inbox: asyncio.Queue[Event | str] = asyncio.Queue()
                self._inbox = inbox
                reader = asyncio.create_task(self._read(ws, inbox))
                try:
                    self._connected = True
                    await self._filter_events()
                    await self._offer_rest(ws)
                    if not first:
                        self.reconnects += 1
                    log.info(
                        "ari.events.connected", app=self.app, reconnect=not first,
                        rest_on_websocket=self.rest_on_websocket,
                    )
                    await self._deliver(handler, Connected(reconnect=not first, timestamp=_now()))
                    first = False
                    reason = await self._pump(inbox, handler)
                except Exception as exc:
                    # a bug here must cost one connection, not every event from now on
                    log.exception("ari.events.connection_failed", app=self.app)
                    reason = f"callrec failed on this connection: {type(exc).__name__}"
                finally:
                    self._connected = False
                    self._rest_ws = None
                    self._inbox = None
                    reader.cancel()
                    # wait() never raises the reader's own cancellation into this task
                    await asyncio.wait([reader])
                    self._fail_replies("the events websocket closed before the answer")
                    await ws.close()
                lived = time.monotonic() - started
                log.warning("ari.events.disconnected", app=self.app, reason=reason, lived_s=lived)
                await self._deliver(handler, Disconnected(reason=reason, timestamp=_now()))
                backoff.connection_lived(lived)
                await asyncio.sleep(backoff.next_delay())
        finally:
            self._events_running = False

    async def _filter_events(self) -> None:
        """Ask Asterisk to send only the event types we handle (if we were given a list)."""
        if self._event_types is None:
            return
        # RESTResponse is filtered like an event: without it, requests on the websocket go
        # unanswered
        allowed = (*self._event_types, "RESTResponse")
        body = {"allowed": [{"type": t} for t in allowed], "disallowed": []}
        try:
            await self._request("PUT", "applications", self.app, "eventFilter", body=body)
        except AriError as exc:
            # unfiltered events are only more work: everything still arrives
            log.warning("ari.events.filter_failed", app=self.app, error=str(exc))

    async def _connect_events(self) -> aiohttp.ClientWebSocketResponse | None:
        """Open the events websocket, or log why not and return None."""
        if self._ws_session is None:
            raise RuntimeError("AriClient is not started: use 'async with AriClient(...)'")
        params = {"app": self.app, "subscribeAll": "false"}
        try:
            async with asyncio.timeout(self.request_timeout):
                return await self._ws_session.ws_connect(
                    URL(f"{self._base}/ari/events"),
                    params=params,
                    heartbeat=self._heartbeat,
                    autoping=True,
                    max_msg_size=16 * 1024 * 1024,
                )
        except aiohttp.WSServerHandshakeError as exc:
            # 401: wrong ARI credentials; 400/404: ARI disabled or no such app name
            log.error("ari.events.refused", app=self.app, status=exc.status, message=exc.message)
        except TimeoutError:
            log.warning("ari.events.connect_timeout", app=self.app, timeout=self.request_timeout)
        except aiohttp.ClientError as exc:
            log.warning("ari.events.connect_failed", app=self.app, error=str(exc))
        return None

    async def _pump(self, inbox: asyncio.Queue[Event | str], handler: EventHandler) -> str:
        """Deliver the reader's events in order until it reports why the socket closed."""
        while True:
            item = await inbox.get()
            if isinstance(item, str):
                return item
            await self._deliver(handler, item)
            if isinstance(item, ApplicationReplaced):
                # Asterisk sends us nothing more for this app; connecting again takes it back
                log.error(
                    "ari.events.application_replaced",
                    app=self.app,
                    hint="another client connected with the same ARI application name",
                )
                return "application replaced by another websocket"

    async def _read(
        self, ws: aiohttp.ClientWebSocketResponse, inbox: asyncio.Queue[Event | str]
    ) -> None:
        """Read the socket: answers go to their requests at once, events to `inbox`.

        Apart from the pump, so a handler that awaits a REST request cannot hold up its own
        answer. Ends by putting why the socket closed into `inbox`.
        """
        reason = "events reader stopped"
        try:
            reason = await self._receive(ws, inbox)
        except Exception:
            log.exception("ari.events.reader_failed", app=self.app)
            reason = "events reader failed"
        finally:
            inbox.put_nowait(reason)

    async def _receive(
        self, ws: aiohttp.ClientWebSocketResponse, inbox: asyncio.Queue[Event | str]
    ) -> str:
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                data = self._parse(msg.data)
                if data is None:
                    continue
                if data.get("type") == "RESTResponse":
                    self._answered(data)
                    continue
                event = self._event(data)
                if event is not None:
                    inbox.put_nowait(event)
                    self.events_waiting_max = max(self.events_waiting_max, inbox.qsize())
            elif msg.type is aiohttp.WSMsgType.BINARY:
                self._reject("binary message")
            elif msg.type is aiohttp.WSMsgType.ERROR:
                return f"websocket error: {ws.exception() or msg.data}"
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                error = ws.exception()
                if error is not None:
                    return f"websocket closed: {error}"
                return f"closed by Asterisk (code {ws.close_code})"

    def _parse(self, text: str) -> dict[str, Any] | None:
        try:
            data = json.loads(text)
        except _NOT_JSON:
            self._reject("not JSON")
            return None
        if not isinstance(data, dict):
            self._reject("not a JSON object")
            return None
        return data

    def _event(self, data: dict[str, Any]) -> Event | None:
        try:
            return decode_event(data)
        except EventDecodeError as exc:
            self._reject(exc.message)
        except Exception:
            # decode_event promises EventDecodeError only; a bug must not stop the stream
            log.exception("ari.events.decoder_bug")
            self._reject("decoder failure")
        return None

    def _reject(self, reason: str) -> None:
        # the message itself is not logged: it can hold callers' phone numbers
        self.rejected_events += 1
        log.warning("ari.events.rejected", app=self.app, reason=reason)

    async def _deliver(self, handler: EventHandler, event: Event) -> None:
        try:
            await handler(event)
        except Exception:
            log.exception("ari.events.handler_failed", event_type=event.type)


async def _stream_to_file(
    resp: aiohttp.ClientResponse, dest: Path, run_blocking: BlockingRunner
) -> int:
    # File writes go to a thread (a slow disk must not stall the event loop), in pieces of
    # `_CHUNK`: a call's recording is a few hundred kB, so one thread hop for the whole file
    # rather than one per network read.
    written = 0
    pending = bytearray()
    async for chunk in resp.content.iter_any():
        pending += chunk
        if len(pending) >= _CHUNK:
            await run_blocking(_write_piece, dest, bytes(pending), written == 0)
            written += len(pending)
            pending.clear()
    if pending or written == 0:
        await run_blocking(_write_piece, dest, bytes(pending), written == 0)
        written += len(pending)
    return written


def _write_piece(dest: Path, data: bytes, first: bool) -> None:
    with dest.open("wb" if first else "ab") as f:
        f.write(data)


def _now() -> datetime:
    return datetime.now(UTC)
