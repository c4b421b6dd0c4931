"""/healthz and /metrics of the running service on the real stack."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from devstack.proc import read_pid
from devstack.stack import Stack
from tests.polling import eventually

pytestmark = pytest.mark.stack


async def _get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def _rest_on_websocket(web_url: str) -> bool | None:
    _, _, body = await _get(web_url + "/metrics")
    return True if "\ncallrec_ari_rest_on_websocket 1\n" in body else None


async def test_healthz_reports_each_dependency(stack: Stack) -> None:
    status, ctype, body = await _get(stack.web_url + "/healthz")
    assert status == 200, body
    assert ctype.startswith("application/json")
    health = json.loads(body)
    assert health["status"] == "ok"
    assert health["ari_connected"] is True
    assert health["database_reachable"] is True
    assert health["archive_writable"] is True
    assert health["journal_backlog"] == 0
    assert health["recordings_pending"] == 0
    # the demo's every service has its notice built (the stack builds the prompts)
    assert health["services_without_notice"] == []


async def test_metrics_are_prometheus_text_with_the_promised_series(stack: Stack) -> None:
    status, ctype, body = await _get(stack.web_url + "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    for series in ("callrec_active_calls", "callrec_recording_bytes_total",
                   "callrec_ari_reconnects_total", "callrec_journal_backlog",
                   "callrec_purged_calls_total", "callrec_ari_connected",
                   "callrec_archive_writable", "callrec_database_up",
                   "callrec_services_without_notice"):
        assert series in samples, series
    assert any(name.startswith("callrec_calls_total{end_reason=") for name in samples)
    assert samples["callrec_ari_connected"] == 1
    assert samples["callrec_services_without_notice"] == 0
    # an idle service has handled every event it read (the events' queues are watched,
    # not bounded: the reader also takes the answers a call's task may wait for)
    assert samples["callrec_ari_events_waiting"] == 0
    assert samples["callrec_call_events_waiting"] == 0
    # its value is whatever the most was since start: only its presence is promised here
    assert "callrec_ari_events_waiting_max" in samples
    # Asterisk 22.10 answers REST requests on the events websocket (asked right after connect)
    await eventually(lambda: _rest_on_websocket(stack.web_url), timeout=10)
    _, _, body = await _get(stack.web_url + "/metrics")
    assert '\ncallrec_ari_requests_total{transport="websocket"} ' in body
    assert '\ncallrec_ari_requests_total{transport="http"} ' in body
    assert '\ncallrec_ari_requests_total{transport="websocket"} 0\n' not in body  # the probe
    assert samples["callrec_database_up"] == 1
    assert "# TYPE callrec_calls_total counter" in body
    for name in ("callrec_notice_wait_seconds", "callrec_agent_join_seconds",
                 "callrec_loop_lag_seconds"):
        assert f"# TYPE {name} histogram" in body
        buckets = [line for line in body.splitlines() if line.startswith(f"{name}_bucket{{")]
        assert buckets[-1].startswith(f'{name}_bucket{{le="+Inf"}} ')
        assert f"\n{name}_count " in body and f"\n{name}_sum " in body

    # the loop-lag probe runs (4 wake-ups a second) and an idle service keeps up
    async def lag_count() -> float:
        _, _, text = await _get(stack.web_url + "/metrics")
        line = next(x for x in text.splitlines() if x.startswith("callrec_loop_lag_seconds_count "))
        return float(line.split()[1])

    first = await lag_count()
    await eventually(lambda: _more(lag_count, first), timeout=5, what="the loop-lag probe")
    _, _, body = await _get(stack.web_url + "/metrics")
    worst = next(x for x in body.splitlines() if x.startswith("callrec_loop_lag_max_seconds "))
    assert 0 <= float(worst.split()[1]) < 5.0, worst


async def _more(read: Callable[[], Awaitable[float]], than: float) -> bool:
    return await read() > than


async def test_ari_reconnect_is_counted(stack: Stack) -> None:
    async def reconnects() -> float:
        _, _, body = await _get(stack.web_url + "/metrics")
        line = next(x for x in body.splitlines() if x.startswith("callrec_ari_reconnects_total "))
        return float(line.split()[1])

    before = await reconnects()
    stack.asterisk.cli("ari shutdown websocket sessions")

    async def counted() -> bool:
        return await reconnects() > before

    await eventually(counted, timeout=20, what="ARI reconnect counted")
    status, _, _ = await _get(stack.web_url + "/healthz")
    assert status == 200


def test_the_local_stack_runs_callrec_ahead_of_asterisk(stack: Stack) -> None:
    # CALLREC_NICE=-10 from devstack: every thread of the service, and its session group
    pid = read_pid(stack.service_pidfile)
    assert pid is not None
    tasks = Path(f"/proc/{pid}/task")
    nices = {int((t / "stat").read_text().rsplit(")", 1)[1].split()[16]) for t in tasks.iterdir()}
    assert nices == {-10}, nices
    group = Path(f"/proc/{pid}/autogroup")
    if group.exists():
        assert group.read_text().split()[-2:] == ["nice", "-10"]
    asterisk = read_pid(stack.asterisk.pidfile)
    assert asterisk is not None
    assert os.getpriority(os.PRIO_PROCESS, asterisk) == 0, "Asterisk itself is left as it is"
