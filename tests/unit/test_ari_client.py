"""AriClient without a network: URL building, error mapping, and the event loop's behaviour
fed by scripted websockets (the real websocket is exercised in tests/integration)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from aiohttp import WSMessage, WSMsgType
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.ari import errors
from callrec.ari.backoff import Backoff
from callrec.ari.client import (
    WEBSOCKET_REQUESTS_IN_FLIGHT,
    AriClient,
    _basic_auth,
    _list_of,
    _query,
    _quoted,
    _segment,
)
from callrec.ari.events import (
    ApplicationReplaced,
    Connected,
    Disconnected,
    Event,
    StasisStart,
    UnknownEvent,
)
from callrec.ari.models import (
    Application,
    Bridge,
    StoredRecording,
    endpoint_state,
    startup_time,
)
from tests.polling import eventually
from tests.unit.test_ari_samples import bridge, sample

# -- pure helpers ------------------------------------------------------------------------


def test_constructor_does_no_io_and_rest_needs_start() -> None:
    ari = AriClient("http://127.0.0.1:1", "u", "p", "callrec")
    assert not ari.connected
    assert (ari.reconnects, ari.rejected_events) == (0, 0)
    with pytest.raises(RuntimeError, match="async with"):
        ari._require_session()


@pytest.mark.parametrize(
    "base", ["http://h:8088", "http://h:8088/", "http://h:8088/ari", "http://h:8088/ari/"]
)
def test_urls_are_built_under_ari(base: str) -> None:
    ari = AriClient(base, "u", "p", "callrec")
    assert str(ari._url("channels", "1764357885.17", "answer")) == (
        "http://h:8088/ari/channels/1764357885.17/answer"
    )


def test_recording_names_keep_their_slashes_encoded() -> None:
    ari = AriClient("http://h:8088", "u", "p", "callrec")
    url = ari._url("recordings", "stored", "2026/11/28/6f1c", "file")
    assert url.raw_path == "/ari/recordings/stored/2026%2F11%2F28%2F6f1c/file"
    assert url.with_query([("media", "sound:x")]).raw_path == url.raw_path


@pytest.mark.parametrize(
    ("value", "quoted"),
    [("a b", "a%20b"), ("x?y#z", "x%3Fy%23z"), ("100%", "100%25"), ("ä", "%C3%A4")],
)
def test_segments_are_fully_quoted(value: str, quoted: str) -> None:
    assert _segment(value) == quoted


@pytest.mark.parametrize("value", ["", ".", "..", "a/../b", "../etc"])
def test_traversal_segments_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"segment|not allowed"):
        _segment(value)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_quoting_matches_the_standard_library(value: str) -> None:
    # the fast path for plain values must not change what is sent
    assert _quoted(value) == quote(value, safe="")
    params = [(value, value), ("app", "callrec"), ("x", "")]
    assert _query(params) == urlencode(params, quote_via=quote)


def test_basic_auth_header() -> None:
    # RFC 7617 example
    assert _basic_auth("Aladdin", "open sesame") == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, errors.AriBadRequest),
        (404, errors.AriNotFound),
        (409, errors.AriConflict),
        (412, errors.AriInvalidState),
        (422, errors.AriUnprocessable),
        (500, errors.AriServerError),
        (503, errors.AriStarting),  # booting or shutting down: a moment's unavailability
        (401, errors.AriError),
        (403, errors.AriError),
    ],
)
def test_status_maps_to_typed_error(status: int, kind: type[errors.AriError]) -> None:
    exc = errors.error_for_status(status, f"GET /ari/x: {status} Channel not found")
    assert type(exc) is kind
    assert exc.ari_status == status
    assert "Channel not found" in str(exc)
    # what is retried is an AriUnavailable (a recording's archiving once gave up on a 503)
    assert isinstance(exc, errors.AriUnavailable) == (status == 503)
    assert exc.http_status == (503 if status == 503 else 502)


def test_error_tree() -> None:
    assert issubclass(errors.AriInvalidState, errors.AriConflict)
    from callrec.errors import CallrecError

    for cls in (errors.AriNotFound, errors.AriUnavailable, errors.EventDecodeError):
        assert issubclass(cls, errors.AriError)
        assert issubclass(cls, CallrecError)
    assert errors.AriUnavailable().http_status == 503
    assert errors.AriUnavailable().message == "Asterisk is unavailable"


def test_rest_models_decode() -> None:
    app = Application.from_json(
        {
            "name": "callrec",
            "channel_ids": ["1764357885.17"],
            "bridge_ids": ["call-6f1c"],
            "endpoint_ids": [],
            "device_names": [],
            "events_allowed": [],
            "events_disallowed": [],
        }
    )
    assert app == Application("callrec", ("1764357885.17",), ("call-6f1c",))
    assert _list_of([bridge()], Bridge.from_json, "bridges") == [Bridge("call-6f1c", "mixing", ())]
    assert StoredRecording.from_json({"name": "a/b", "format": "wav"}).name == "a/b"
    assert endpoint_state(
        {"technology": "PJSIP", "resource": "agent1", "state": "online", "channel_ids": []}
    ) == ("online")
    assert endpoint_state({"technology": "PJSIP", "resource": "x", "channel_ids": []}) == (
        "unknown"
    )
    with pytest.raises(errors.AriDecodeError, match="list"):
        _list_of({"message": "x"}, Bridge.from_json, "bridges")
    with pytest.raises(errors.AriDecodeError, match="channel_ids"):
        Application.from_json({"name": "callrec", "bridge_ids": []})



def test_startup_time_of_asterisk() -> None:
    # what Asterisk 22 answered to GET /asterisk/info?only=status
    raw = {"status": {"startup_time": "2026-11-29T17:01:42.977+0000",
                      "last_reload_time": "2026-11-29T17:01:42.977+0000"}}
    assert startup_time(raw) == datetime(2026, 11, 29, 17, 1, 42, 977000, tzinfo=UTC)
    for bad, field in (({}, "status"), ({"status": {}}, "startup_time"),
                       ({"status": {"startup_time": "yesterday"}}, "startup_time")):
        with pytest.raises(errors.AriDecodeError, match=field):
            startup_time(bad)

# -- the event loop, fed by scripted websockets ------------------------------------------


def text(obj: Any) -> WSMessage:
    return WSMessage(WSMsgType.TEXT, obj if isinstance(obj, str) else json.dumps(obj), None)


class ScriptedSocket:
    """Plays a list of messages, then reports the close it was given."""

    def __init__(
        self,
        messages: list[WSMessage],
        *,
        end: WSMessage | None = None,
        close_code: int = 1000,
        error: BaseException | None = None,
        hang: bool = False,
    ) -> None:
        self._messages = list(messages)
        self._end = end or WSMessage(WSMsgType.CLOSE, 1000, "")
        self.close_code = close_code
        self._error = error
        self._hang = hang
        self.closed = False

    async def receive(self) -> WSMessage:
        await asyncio.sleep(0)
        if self._messages:
            return self._messages.pop(0)
        if self._hang:
            await asyncio.Event().wait()
        return self._end

    def exception(self) -> BaseException | None:
        return self._error

    async def close(self) -> bool:
        self.closed = True
        return True


class Harness:
    """Runs `run_events` against a queue of scripted connection attempts."""

    def __init__(self, attempts: list[ScriptedSocket | None], *, rest: bool = False) -> None:
        self.ari = AriClient(
            "http://127.0.0.1:1",
            "u",
            "p",
            "callrec",
            backoff_factory=lambda: Backoff(uniform=lambda: 0.0),
            rest_over_websocket=rest,
        )
        self.attempts = list(attempts)
        self.sockets = [a for a in attempts if a is not None]
        self.events: list[Event] = []
        self.connected_seen: list[bool] = []
        self.connects = 0
        self.exhausted = asyncio.Event()
        self.arrived = asyncio.Condition()
        self.ari._connect_events = self._connect  # type: ignore[method-assign]

    async def _connect(self) -> Any:
        self.connects += 1
        if not self.attempts:
            self.exhausted.set()
            await asyncio.Event().wait()
        return self.attempts.pop(0)

    async def handler(self, event: Event) -> None:
        self.events.append(event)
        self.connected_seen.append(self.ari.connected)
        async with self.arrived:
            self.arrived.notify_all()

    async def wait_events(self, count: int) -> None:
        async with asyncio.timeout(5), self.arrived:
            await self.arrived.wait_for(lambda: len(self.events) >= count)

    async def run(self) -> list[Event]:
        task = asyncio.create_task(self.ari.run_events(self.handler))
        async with asyncio.timeout(5):
            await self.exhausted.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return self.events


def kinds(events: list[Event]) -> list[str]:
    return [e.type for e in events]


async def test_events_waiting_for_a_slow_handler_are_counted_not_dropped() -> None:
    """The events' queue is unbounded (the reader also takes REST answers the handler may
    wait for), so what waits there is shown instead: now and at its most."""
    socket = ScriptedSocket([text(sample("StasisStart")) for _ in range(6)], hang=True)
    h = Harness([socket])
    release = asyncio.Event()
    handled: list[Event] = []

    async def slow(event: Event) -> None:
        handled.append(event)
        if isinstance(event, StasisStart):
            await release.wait()

    task = asyncio.create_task(h.ari.run_events(slow))
    try:
        async def all_read() -> bool:
            return h.ari.events_waiting == 5  # the first is in the handler
        await eventually(all_read, timeout=5, what="five events waiting")
        assert h.ari.events_waiting_max == 5
        release.set()
        async def all_handled() -> bool:
            return len(handled) == 7  # Connected and six StasisStarts
        await eventually(all_handled, timeout=5, what="every event handled")
        assert h.ari.events_waiting == 0 and h.ari.events_waiting_max == 5
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert h.ari.events_waiting == 0  # no connection, nothing waiting


async def test_good_events_are_delivered_in_order_and_bad_ones_counted() -> None:
    start = sample("StasisStart")
    varset = {"type": "ChannelVarset", "variable": "X", "value": "1"}
    broken = sample("ChannelDestroyed")
    del broken["cause"]
    first = ScriptedSocket(
        [
            text(start),
            text("{not json"),
            text([1, 2]),
            text(broken),
            WSMessage(WSMsgType.BINARY, b"\x00", None),
            text(varset),
            text(sample("StasisEnd")),
        ]
    )
    h = Harness([first])
    events = await h.run()
    assert kinds(events) == [
        "Connected",
        "StasisStart",
        "ChannelVarset",
        "StasisEnd",
        "Disconnected",
    ]
    assert events[0] == Connected(reconnect=False, timestamp=events[0].timestamp)
    assert isinstance(events[1], StasisStart)
    assert isinstance(events[2], UnknownEvent)
    assert h.ari.rejected_events == 4
    assert h.ari.reconnects == 0
    assert first.closed
    disconnected = events[-1]
    assert isinstance(disconnected, Disconnected)
    assert "closed by Asterisk" in disconnected.reason
    assert h.connected_seen == [True, True, True, True, False]
    assert not h.ari.connected


async def test_reconnects_after_drops_and_failed_attempts() -> None:
    h = Harness(
        [
            None,  # Asterisk not up yet: no Connected, no Disconnected
            ScriptedSocket([text(sample("StasisStart"))]),
            None,
            None,
            ScriptedSocket(
                [],
                end=WSMessage(WSMsgType.ERROR, RuntimeError("x"), None),
                error=aiohttp.ServerTimeoutError("No PONG received after 5.0 seconds"),
            ),
            ScriptedSocket([], end=WSMessage(WSMsgType.CLOSED, None, None)),
        ]
    )
    events = await h.run()
    assert kinds(events) == [
        "Connected",
        "StasisStart",
        "Disconnected",
        "Connected",
        "Disconnected",
        "Connected",
        "Disconnected",
    ]
    flags = [e.reconnect for e in events if isinstance(e, Connected)]
    assert flags == [False, True, True]
    assert h.ari.reconnects == 2
    reasons = [e.reason for e in events if isinstance(e, Disconnected)]
    assert "No PONG" in reasons[1]
    assert h.connects == 7
    assert all(s.closed for s in h.sockets)


async def test_application_replaced_is_delivered_then_the_socket_is_given_up() -> None:
    replaced = ScriptedSocket([text(sample("ApplicationReplaced"))], hang=True)
    h = Harness([replaced, ScriptedSocket([])])
    events = await h.run()
    assert kinds(events) == [
        "Connected",
        "ApplicationReplaced",
        "Disconnected",
        "Connected",
        "Disconnected",
    ]
    assert isinstance(events[1], ApplicationReplaced)
    assert isinstance(events[2], Disconnected) and "replaced" in events[2].reason
    assert replaced.closed
    assert h.ari.reconnects == 1


async def test_a_failing_handler_does_not_stop_the_stream() -> None:
    seen: list[str] = []

    async def handler(event: Event) -> None:
        seen.append(event.type)
        if isinstance(event, StasisStart):
            raise RuntimeError("bug in the consumer")

    h = Harness([ScriptedSocket([text(sample("StasisStart")), text(sample("StasisEnd"))])])
    h.handler = handler  # type: ignore[method-assign]
    await h.run()
    assert seen == ["Connected", "StasisStart", "StasisEnd", "Disconnected"]


async def test_cancel_closes_the_socket_and_propagates() -> None:
    live = ScriptedSocket([text(sample("StasisStart"))], hang=True)
    h = Harness([live])
    task = asyncio.create_task(h.ari.run_events(h.handler))
    await h.wait_events(2)
    assert h.ari.connected
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert live.closed
    assert not h.ari.connected
    assert kinds(h.events) == ["Connected", "StasisStart"]


async def test_run_events_cannot_run_twice() -> None:
    h = Harness([ScriptedSocket([], hang=True)])
    task = asyncio.create_task(h.ari.run_events(h.handler))
    await h.wait_events(1)
    with pytest.raises(RuntimeError, match="already running"):
        await h.ari.run_events(h.handler)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- REST requests on the events websocket -----------------------------------------------


class AnsweringSocket(ScriptedSocket):
    """A live socket that answers each RESTRequest through `respond` (None: no answer)."""

    def __init__(
        self,
        respond: Any,
        messages: list[WSMessage] | None = None,
    ) -> None:
        super().__init__(messages or [], hang=True)
        self.respond = respond
        self.requests: list[dict[str, Any]] = []
        self._more = asyncio.Event()
        self._asked = asyncio.Event()

    async def send_str(self, data: str) -> None:
        request = json.loads(data)
        self.requests.append(request)
        self._asked.set()
        answer = self.respond(request)
        if answer is not None:
            self.push(answer)

    def push(self, obj: Any) -> None:
        self._messages.append(text(obj))
        self._more.set()

    async def wait_requests(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.requests) < count:
                self._asked.clear()
                await self._asked.wait()

    def drop(self) -> None:
        self._hang = False
        self._more.set()

    async def receive(self) -> WSMessage:
        while not self._messages and self._hang:
            self._more.clear()
            await self._more.wait()
        return await super().receive()


def reply(request: dict[str, Any], status: int = 200, body: Any = None) -> dict[str, Any]:
    return {
        "type": "RESTResponse",
        "request_id": request["request_id"],
        "status_code": status,
        "reason_phrase": "OK" if status < 400 else "Not Found",
        "uri": request["uri"],
        "message_body": None if body is None else json.dumps(body),
    }


def pong(request: dict[str, Any]) -> dict[str, Any] | None:
    if request["uri"] == "asterisk/ping":
        return reply(request, body={"ping": "pong"})
    if request["uri"] == "bridges/b1":
        return reply(request, body={"id": "b1", "bridge_type": "mixing", "channels": []})
    if request["uri"].startswith("channels/gone"):
        return reply(request, 404, {"message": "Channel not found"})
    return None


async def running(h: Harness) -> asyncio.Task[None]:
    await h.ari.start()
    task = asyncio.create_task(h.ari.run_events(h.handler))
    await h.wait_events(1)
    return task


async def stop(h: Harness, task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await h.ari.close()


async def test_names_and_paths_go_on_the_websocket_quoted_as_one_segment() -> None:
    # Asterisk splits the path at '/' and then unquotes each segment, as over HTTP
    sock = AnsweringSocket(lambda r: reply(r) if r["uri"] != "asterisk/ping" else pong(r))
    h = Harness([sock], rest=True)
    task = await running(h)
    await h.ari.hangup("PJSIP/agent1-0000002a")
    await h.ari.stop_recording("2026/11/29/x")
    assert [r["uri"] for r in sock.requests[1:]] == [
        "channels/PJSIP%2Fagent1-0000002a?reason=normal",
        "recordings/live/2026%2F11%2F29%2Fx/stop",
    ]
    # what the HTTP path refuses, the websocket path refuses too, before sending
    for bad in ("", ".", ".."):
        with pytest.raises(ValueError, match="segment"):
            await h.ari.hangup(bad)
    assert len(sock.requests) == 3
    await stop(h, task)


async def test_requests_go_on_the_websocket_once_asterisk_answers_there() -> None:
    sock = AnsweringSocket(pong)
    h = Harness([sock], rest=True)
    task = await running(h)
    assert h.ari.rest_on_websocket
    assert sock.requests[0]["uri"] == "asterisk/ping"  # the probe, before Connected
    assert await h.ari.get_bridge("b1") == Bridge("b1", "mixing", ())
    with pytest.raises(errors.AriNotFound, match="Channel not found"):
        await h.ari.answer("gone1")
    assert [r["uri"] for r in sock.requests[1:]] == ["bridges/b1", "channels/gone1/answer"]
    assert [r["method"] for r in sock.requests[1:]] == ["GET", "POST"]
    assert h.ari.websocket_requests == 3
    await stop(h, task)
    assert not h.ari.rest_on_websocket


async def test_query_and_body_travel_in_the_request() -> None:
    sock = AnsweringSocket(lambda r: reply(r) if r["uri"] != "asterisk/ping" else pong(r))
    h = Harness([sock], rest=True)
    task = await running(h)
    await h.ari.hangup("c1", reason="answered_elsewhere")
    await h.ari._request("PUT", "x", params=[("a", "b c&d")], body={"k": ["v"]})
    hangup, put = sock.requests[1:]
    assert hangup["uri"] == "channels/c1?reason=answered_elsewhere" and hangup["method"] == "DELETE"
    assert "message_body" not in hangup
    assert put["uri"] == "x?a=b%20c%26d"
    assert put["content_type"] == "application/json"
    assert json.loads(put["message_body"]) == {"k": ["v"]}
    await stop(h, task)


async def test_answers_find_their_requests_in_any_order() -> None:
    held: list[dict[str, Any]] = []

    def later(request: dict[str, Any]) -> dict[str, Any] | None:
        if request["uri"] == "asterisk/ping":
            return pong(request)
        held.append(request)
        return None

    sock = AnsweringSocket(later)
    h = Harness([sock], rest=True)
    task = await running(h)
    first = asyncio.create_task(h.ari._request("GET", "one"))
    second = asyncio.create_task(h.ari._request("GET", "two"))
    await sock.wait_requests(3)
    sock.push(reply(held[1], body={"n": 2}))
    sock.push({"type": "RESTResponse", "request_id": "nobody", "status_code": 200})
    sock.push({"type": "RESTResponse", "request_id": ["x"], "status_code": 200})
    sock.push(reply(held[0], body={"n": 1}))
    assert await first == {"n": 1} and await second == {"n": 2}
    await stop(h, task)


async def test_a_malformed_answer_is_a_decode_error() -> None:
    def odd(request: dict[str, Any]) -> dict[str, Any] | None:
        if request["uri"] == "asterisk/ping":
            return pong(request)
        answer = reply(request)
        answer["status_code"] = "200"
        return answer

    h = Harness([AnsweringSocket(odd)], rest=True)
    task = await running(h)
    with pytest.raises(errors.AriDecodeError, match="malformed"):
        await h.ari._request("GET", "x")
    await stop(h, task)


async def test_a_request_waiting_when_the_socket_drops_may_have_been_done() -> None:
    # sent: Asterisk may have carried it out before the socket went. Taken for "not done"
    # (AriUnavailable), a bridge add that happened failed its call, a recording that started
    # was given up on and left in Asterisk's spool
    sock = AnsweringSocket(pong)
    h = Harness([sock, ScriptedSocket([], hang=True)], rest=True)
    task = await running(h)
    waiting = asyncio.create_task(h.ari._request("POST", "bridges", "b1", "addChannel"))
    await sock.wait_requests(2)
    sock.drop()
    with pytest.raises(errors.AriNoAnswer, match="closed before the answer"):
        await waiting
    await stop(h, task)


class ClosingSocket(AnsweringSocket):
    """Answers the probe, then cannot write any more: the socket is going."""

    async def send_str(self, data: str) -> None:
        if self.requests:
            raise ConnectionResetError("Cannot write to closing transport")
        await super().send_str(data)


async def test_a_request_the_closing_socket_cannot_take_goes_over_http() -> None:
    sock = ClosingSocket(pong)
    h = Harness([sock], rest=True)
    task = await running(h)
    with pytest.raises(errors.AriUnavailable) as failed:  # nothing listens at the HTTP address
        await h.ari._request("GET", "asterisk", "info")
    assert not isinstance(failed.value, errors.AriNoAnswer), "never sent: not done"
    assert h.ari.http_requests == 1, "it went over HTTP"
    sock.closed = True  # and once the socket says it is closed, it is not tried at all
    with pytest.raises(errors.AriUnavailable):
        await h.ari._request("GET", "asterisk", "info")
    assert (h.ari.http_requests, len(sock.requests)) == (2, 1)
    await stop(h, task)


async def test_an_http_request_cut_after_it_was_written_may_have_been_done() -> None:
    async def read_then_hang_up(reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(read_then_hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ari = AriClient(f"http://127.0.0.1:{port}", "u", "p", "callrec")
    await ari.start()
    try:
        with pytest.raises(errors.AriNoAnswer, match="ServerDisconnected"):
            await ari._request("POST", "channels", "c1", "answer")
    finally:
        await ari.close()
        server.close()
        await server.wait_closed()


async def test_a_request_left_unanswered_is_told_apart_from_one_never_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # no answer: Asterisk may have done it all the same (a channel made late), so the call flow
    # must not take it for a refusal; an HTTP address nobody listens at is a plain failure
    sock = AnsweringSocket(lambda r: pong(r) if r["uri"] == "asterisk/ping" else None)
    h = Harness([sock], rest=True)
    h.ari.request_timeout = 0.2
    task = await running(h)
    with pytest.raises(errors.AriNoAnswer, match=r"no answer within 0\.2 s"):
        await h.ari._request("POST", "channels", "c1", "snoop")
    assert sock.requests[-1]["uri"] == "channels/c1/snoop"
    # with the websocket full, a request goes over HTTP
    monkeypatch.setattr("callrec.ari.client.WEBSOCKET_REQUESTS_IN_FLIGHT", 0)
    with pytest.raises(errors.AriUnavailable) as refused:
        await h.ari._request("GET", "recordings", "a b")
    assert not isinstance(refused.value, errors.AriNoAnswer)
    await stop(h, task)


async def test_an_asterisk_that_ignores_websocket_requests_keeps_http(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("callrec.ari.client.REST_PROBE_TIMEOUT", 0.05)
    sock = AnsweringSocket(lambda r: None)
    h = Harness([sock], rest=True)
    task = await running(h)
    assert [r["uri"] for r in sock.requests] == ["asterisk/ping"]
    assert not h.ari.rest_on_websocket
    assert h.ari.connected
    await stop(h, task)


async def test_a_handler_may_await_a_request_on_the_same_socket() -> None:
    # the reader answers requests while the handler still holds the previous event
    sock = AnsweringSocket(pong, [text(sample("StasisStart")), text(sample("StasisEnd"))])
    h = Harness([sock], rest=True)
    answers: list[Any] = []

    async def handler(event: Event) -> None:
        if isinstance(event, StasisStart):
            answers.append(await h.ari._request("GET", "asterisk", "ping"))
        await Harness.handler(h, event)

    h.handler = handler  # type: ignore[method-assign]
    task = await running(h)
    await h.wait_events(3)
    assert answers == [{"ping": "pong"}]
    assert kinds(h.events) == ["Connected", "StasisStart", "StasisEnd"]
    await stop(h, task)


async def test_requests_beyond_the_websocket_limit_go_over_http() -> None:
    # Asterisk answers one socket's requests in turn: a backlog there overflows to HTTP
    sock = AnsweringSocket(lambda r: pong(r) if r["uri"] == "asterisk/ping" else None)
    h = Harness([sock], rest=True)
    task = await running(h)
    held = [asyncio.create_task(h.ari._request("GET", "slow", str(i)))
            for i in range(WEBSOCKET_REQUESTS_IN_FLIGHT)]
    await sock.wait_requests(1 + WEBSOCKET_REQUESTS_IN_FLIGHT)
    with pytest.raises(errors.AriUnavailable):  # nothing listens at the HTTP address
        await h.ari._request("GET", "overflow")
    assert (h.ari.http_requests, len(sock.requests)) == (1, 1 + WEBSOCKET_REQUESTS_IN_FLIGHT)
    for request in sock.requests[1:]:
        sock.push(reply(request, body={"uri": request["uri"]}))
    assert [await t for t in held] == [
        {"uri": f"slow/{i}"} for i in range(WEBSOCKET_REQUESTS_IN_FLIGHT)
    ]
    assert h.ari.websocket_requests == 1 + WEBSOCKET_REQUESTS_IN_FLIGHT
    await stop(h, task)


# -- what must never stop the event stream -------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000  # deeper than json.loads can go: RecursionError


async def test_too_deeply_nested_event_is_rejected_and_the_stream_goes_on() -> None:
    h = Harness([ScriptedSocket([text(sample("StasisStart")),
                                 WSMessage(WSMsgType.TEXT, DEEP, None),
                                 text(sample("StasisEnd"))])])
    events = await h.run()
    assert kinds(events) == ["Connected", "StasisStart", "StasisEnd", "Disconnected"]
    assert h.ari.rejected_events == 1
    assert h.ari.reconnects == 0  # rejected, not a reason to reconnect


async def test_too_deeply_nested_answer_is_a_decode_error_not_the_end_of_events() -> None:
    # The answer to the websocket probe once escaped as RecursionError and ended run_events
    # for good: no events, no reconnection.
    def deep(request: dict[str, Any]) -> dict[str, Any] | None:
        answer = reply(request)
        answer["message_body"] = DEEP
        return answer

    sock = AnsweringSocket(deep, [text(sample("StasisStart"))])
    h = Harness([sock], rest=True)
    task = await running(h)
    await h.wait_events(2)
    assert kinds(h.events) == ["Connected", "StasisStart"]
    assert not h.ari.rest_on_websocket  # the probe failed: REST stays on HTTP
    await stop(h, task)


async def test_a_failure_while_setting_up_a_connection_costs_only_that_connection() -> None:
    h = Harness([ScriptedSocket([text(sample("StasisStart"))], hang=True),
                 ScriptedSocket([text(sample("StasisEnd"))])])
    real_filter = h.ari._filter_events
    calls = 0

    async def failing_once() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("a bug")
        await real_filter()

    h.ari._filter_events = failing_once  # type: ignore[method-assign]
    events = await h.run()
    assert kinds(events) == ["Disconnected", "Connected", "StasisEnd", "Disconnected"]
    first = events[0]
    assert isinstance(first, Disconnected) and "KeyError" in first.reason
    assert all(s.closed for s in h.sockets)
