"""`/healthz` and `/metrics` (Prometheus text format) of the running service."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiohttp import web

from callrec.archive.files import RecordingArchiver
from callrec.archive.store import CallStore
from callrec.ari.client import AriClient
from callrec.calls.manager import CallManager
from callrec.histograms import Histogram
from callrec.loop_lag import LoopLag

MIN_FREE_BYTES = 64 * 1024 * 1024  # below this the archive is reported as (nearly) full
# Seconds a look at the archive's filesystem may take: a hung network mount is reported as
# an archive that cannot be written, and holds up no call.
ARCHIVE_LOOK_TIMEOUT = 2.0


@dataclass
class RetentionRuns:
    """What the service's retention runs did since it started."""

    purged_total: int = 0
    failures_total: int = 0
    failing_since: float | None = None  # unix time of the first failure of a run of them
    last_success: float | None = None  # unix time


@dataclass
class Probes:
    ari: AriClient
    store: CallStore
    archiver: RecordingArchiver
    manager: CallManager
    retention: RetentionRuns
    loop_lag: LoopLag
    # numbers of services whose notice cannot be played: their calls go unrecorded
    services_without_notice: Callable[[], list[str]] = field(default=list)

    def __post_init__(self) -> None:
        # one thread of its own: a filesystem that hangs holds this one, not asyncio's pool
        self._looker = ThreadPoolExecutor(1, thread_name_prefix="health")

    async def archive_state(self) -> tuple[bool, int]:
        look = asyncio.get_running_loop().run_in_executor(self._looker, self._archive_state)
        try:
            return await asyncio.wait_for(look, ARCHIVE_LOOK_TIMEOUT)
        except TimeoutError:
            return False, 0

    def _archive_state(self) -> tuple[bool, int]:
        root = self.archiver.root
        try:
            st = os.statvfs(root)
        except OSError:
            return False, 0
        free = st.f_bavail * st.f_frsize
        writable = os.access(root, os.W_OK) and not self.archiver.disk_full
        return writable and free >= MIN_FREE_BYTES, free

    async def checks(self) -> dict[str, bool]:
        archive_ok, _ = await self.archive_state()
        return {
            "ari_connected": self.ari.connected,
            "database_reachable": self.store.db_available,
            "archive_writable": archive_ok,
        }


def _sample(value: float) -> str:
    """A sample in full: `:g` kept six digits (a counter past a million moved by tens)."""
    if isinstance(value, bool | int):
        return str(int(value))
    return repr(float(value))


def add_routes(app: web.Application, probes: Probes) -> None:
    async def healthz(request: web.Request) -> web.Response:
        checks = await probes.checks()
        ok = all(checks.values())
        runs = probes.retention
        body = {"status": "ok" if ok else "degraded", **checks,
                # not a cause for 503 (nothing is lost while it fails), an alarm all the same
                "retention_failing": runs.failing_since is not None,
                # nor this (calls still reach agents), but those calls are not recorded
                "services_without_notice": probes.services_without_notice(),
                "journal_rejected": probes.store.rejected_operations,
                "journal_backlog": probes.store.journal_backlog,
                "recordings_pending": probes.archiver.pending,
                "active_calls": probes.manager.active_calls}
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        lines = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{labels} {_sample(value)}")

        def histogram(name: str, help_text: str, h: Histogram) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} histogram")
            for le, n in h.cumulative():
                lines.append(f'{name}_bucket{{le="{le}"}} {n}')
            lines.append(f"{name}_sum {_sample(h.sum)}")
            lines.append(f"{name}_count {h.count}")

        reasons = probes.manager.calls_by_end_reason
        metric("callrec_calls_total", "counter", "Finished calls by end reason.",
               [(f'{{end_reason="{r}"}}', n) for r, n in sorted(reasons.items())] or
               [('{end_reason="completed"}', 0)])
        metric("callrec_active_calls", "gauge", "Calls in progress.",
               [("", probes.manager.active_calls)])
        metric("callrec_recording_bytes_total", "counter",
               "Bytes of recordings archived by this process.",
               [("", probes.archiver.bytes_archived)])
        metric("callrec_ari_connected", "gauge", "1 while the ARI events websocket is up.",
               [("", 1 if probes.ari.connected else 0)])
        metric("callrec_ari_rest_on_websocket", "gauge",
               "1 while REST requests travel on the ARI events websocket (else HTTP).",
               [("", 1 if probes.ari.rest_on_websocket else 0)])
        metric("callrec_ari_requests_total", "counter", "ARI REST requests by transport.",
               [('{transport="websocket"}', probes.ari.websocket_requests),
                ('{transport="http"}', probes.ari.http_requests)])
        metric("callrec_ari_reconnects_total", "counter", "ARI websocket reconnections.",
               [("", probes.ari.reconnects)])
        metric("callrec_ari_rejected_events_total", "counter",
               "Malformed ARI events dropped.", [("", probes.ari.rejected_events)])
        metric("callrec_ari_events_waiting", "gauge",
               "Events read from Asterisk, not yet handed to the call flow.",
               [("", probes.ari.events_waiting)])
        metric("callrec_ari_events_waiting_max", "gauge",
               "The most events waiting there at once since the start.",
               [("", probes.ari.events_waiting_max)])
        metric("callrec_call_events_waiting", "gauge",
               "Events queued for calls in progress, not yet handled by their call's task.",
               [("", probes.manager.events_waiting)])
        metric("callrec_journal_backlog", "gauge",
               "Archive writes waiting in the local journal for PostgreSQL.",
               [("", probes.store.journal_backlog)])
        metric("callrec_recordings_pending", "gauge",
               "Recordings kept in Asterisk until the archive can take them.",
               [("", probes.archiver.pending)])
        metric("callrec_database_up", "gauge", "1 while PostgreSQL answers.",
               [("", 1 if probes.store.db_available else 0)])
        archive_ok, free = await probes.archive_state()
        metric("callrec_archive_writable", "gauge", "1 while recordings can be archived.",
               [("", 1 if archive_ok else 0)])
        metric("callrec_archive_free_bytes", "gauge", "Free bytes on the archive filesystem.",
               [("", free)])
        runs = probes.retention
        metric("callrec_purged_calls_total", "counter",
               "Calls deleted by retention runs of this process.",
               [("", runs.purged_total)])
        metric("callrec_retention_failures_total", "counter",
               "Retention runs of this process that failed (each is retried).",
               [("", runs.failures_total)])
        metric("callrec_retention_last_success_timestamp_seconds", "gauge",
               "When a retention run of this process last succeeded (0: none yet).",
               [("", runs.last_success or 0)])
        metric("callrec_services_without_notice", "gauge",
               "Services whose recording notice cannot be played (their calls go unrecorded).",
               [("", len(probes.services_without_notice()))])
        metric("callrec_journal_rejected_total", "counter",
               "Journalled writes PostgreSQL refused, set aside in journal.rejected.jsonl.",
               [("", probes.store.rejected_operations)])
        histogram("callrec_notice_wait_seconds",
                  "Caller's wait from entering the application to the notice playing.",
                  probes.manager.notice_wait)
        histogram("callrec_agent_join_seconds",
                  "Agent's wait from answering to being in the call's bridge.",
                  probes.manager.agent_join)
        histogram("callrec_loop_lag_seconds",
                  "How late callrec's event loop ran a timer (callrec busy or short of CPU).",
                  probes.loop_lag.histogram)
        metric("callrec_loop_lag_max_seconds", "gauge",
               "The latest the event loop has run a timer since the start.",
               [("", probes.loop_lag.worst)])
        return web.Response(text="\n".join(lines) + "\n",
                            content_type="text/plain", charset="utf-8")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
