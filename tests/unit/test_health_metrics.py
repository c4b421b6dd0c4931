"""`/metrics` and `/healthz` of the service, on stand-ins for its parts: samples in full,
the retention runs and refused writes counted, a hung archive filesystem holding up nothing."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from callrec import health
from callrec.histograms import Histogram
from callrec.loop_lag import LoopLag

pytestmark = pytest.mark.timeout(20)


def _probes(tmp_path: Path) -> health.Probes:
    manager = SimpleNamespace(calls_by_end_reason={"completed": 1234567}, active_calls=2,
                              notice_wait=Histogram(), agent_join=Histogram(),
                              events_waiting=3)
    ari = SimpleNamespace(connected=True, rest_on_websocket=True, websocket_requests=10,
                          http_requests=0, reconnects=0, rejected_events=0,
                          events_waiting=7, events_waiting_max=1500)
    store = SimpleNamespace(db_available=True, journal_backlog=0, rejected_operations=4)
    archiver = SimpleNamespace(root=tmp_path, disk_full=False, pending=0,
                               bytes_archived=5_000_123_456)
    runs = health.RetentionRuns(purged_total=3, failures_total=2, failing_since=time.time(),
                                last_success=1_780_000_000.5)
    return health.Probes(cast(Any, ari), cast(Any, store), cast(Any, archiver),
                         cast(Any, manager), runs, LoopLag(),
                         services_without_notice=lambda: ["0103808001"])


async def _client(probes: health.Probes) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    health.add_routes(app, probes)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_metrics_give_every_digit_and_count_what_failed(tmp_path: Path) -> None:
    client = await _client(_probes(tmp_path))
    try:
        text = await (await client.get("/metrics")).text()
    finally:
        await client.close()
    lines = set(text.splitlines())
    # `:g` wrote 1.23457e+06: a counter past a million moved in steps of ten
    assert 'callrec_calls_total{end_reason="completed"} 1234567' in lines
    assert "callrec_recording_bytes_total 5000123456" in lines
    assert "callrec_retention_failures_total 2" in lines
    assert "callrec_retention_last_success_timestamp_seconds 1780000000.5" in lines
    assert "callrec_journal_rejected_total 4" in lines
    assert "callrec_services_without_notice 1" in lines
    assert {"callrec_ari_events_waiting 7", "callrec_ari_events_waiting_max 1500",
            "callrec_call_events_waiting 3"} <= lines


async def test_healthz_tells_of_failing_retention_without_turning_red(tmp_path: Path) -> None:
    client = await _client(_probes(tmp_path))
    try:
        resp = await client.get("/healthz")
        body = await resp.json()
    finally:
        await client.close()
    assert resp.status == 200 and body["status"] == "ok"
    assert body["retention_failing"] is True and body["journal_rejected"] == 4
    # calls of that service reach agents, unrecorded: an alarm, not a reason to take the
    # service out of rotation
    assert body["services_without_notice"] == ["0103808001"]


async def test_a_hung_archive_filesystem_is_reported_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.statvfs
    released = threading.Event()

    def hung(path: Any) -> os.statvfs_result:
        released.wait(10)  # an NFS server gone away, until the test lets it answer
        return real(path)

    monkeypatch.setattr(health.os, "statvfs", hung)
    monkeypatch.setattr(health, "ARCHIVE_LOOK_TIMEOUT", 0.2)
    probes = _probes(tmp_path)
    assert await probes.archive_state() == (False, 0)
    assert not released.is_set(), "answered while the filesystem still hung"
    released.set()
    monkeypatch.setattr(health.os, "statvfs", real)
    monkeypatch.setattr(health, "ARCHIVE_LOOK_TIMEOUT", 5.0)
    ok, free = await probes.archive_state()  # behind the hung look, answered once it ends
    assert ok and free > 0


async def test_a_failed_retention_run_is_tried_again_soon_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database away at the moment of the daily run cost a whole day of deletions."""
    import asyncio

    from callrec import service
    from callrec.settings import Settings
    from devstack.ports import free_block

    dead = free_block(1, start=41000, end=49000)
    settings = Settings.from_env({
        "CALLREC_DATABASE_URL": f"postgresql://callrec_app:x@127.0.0.1:{dead}/callrec",
        "CALLREC_ARI_URL": "http://127.0.0.1:9", "CALLREC_ARI_USER": "x",
        "CALLREC_ARI_PASSWORD": "x", "CALLREC_ARCHIVE_DIR": str(tmp_path),
        "CALLREC_CONFIG": str(tmp_path / "r.toml"),
    })
    svc = service.build_service(settings)
    svc.retention_first_delay = 0.0  # the interval stays a day
    monkeypatch.setattr(service, "RETENTION_RETRY_FIRST", 0.1)
    task = asyncio.create_task(service._retention_loop(svc))
    try:
        for _ in range(100):
            if svc.retention_runs.failures_total >= 3:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    runs = svc.retention_runs
    assert runs.failures_total >= 3 and runs.failing_since is not None
    assert runs.last_success is None
