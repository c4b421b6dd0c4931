"""`callrec serve`: the long-running service, wired in one place (`create_service`).

Constructors do no I/O; every part with a lifecycle is started and stopped by an entry of
aiohttp's `cleanup_ctx`, in order (loop lag, store, routing, ARI + call manager, retention),
and stopped in reverse: tasks are cancelled, then awaited."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
import uvloop
from aiohttp import web

from callrec import health
from callrec.archive.files import RecordingArchiver
from callrec.archive.spool import SpoolRecordings
from callrec.archive.store import CallStore
from callrec.archive.threads import ArchiveThreads
from callrec.ari.client import AriClient
from callrec.ari.events import Connected, Event
from callrec.calls.manager import CallManager
from callrec.calls.plan import services_without_notice
from callrec.errors import ConfigError
from callrec.logs import configure_logging
from callrec.loop_lag import LoopLag
from callrec.prompts import http as prompts_http
from callrec.prompts.catalog import PromptCatalog
from callrec.routing.loader import RoutingProvider
from callrec.scheduling import apply_nice
from callrec.settings import Settings
from callrec.tasks import cancel_and_wait
from callrec.web.console import add_console

log = structlog.get_logger(__name__)


@dataclass
class Service:
    """Every part of the running service (built without I/O)."""

    settings: Settings
    store: CallStore
    archiver: RecordingArchiver
    routing: RoutingProvider
    prompts: PromptCatalog
    ari: AriClient
    manager: CallManager
    threads: ArchiveThreads
    retention_interval: float = 24 * 3600.0
    retention_first_delay: float = 300.0
    retention_runs: health.RetentionRuns = field(default_factory=health.RetentionRuns)
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    loop_lag: LoopLag = field(default_factory=LoopLag)


SERVICE = web.AppKey("service", Service)

#: Seconds before a failed retention run is tried again (doubling while it keeps failing, up
#: to the interval between runs).
RETENTION_RETRY_FIRST = 300.0


def build_service(settings: Settings) -> Service:
    threads = ArchiveThreads()
    store = CallStore(settings.database_url, settings.journal_dir, run_blocking=threads.run)
    spool = (SpoolRecordings(settings.asterisk_recordings_dir, run_blocking=threads.run)
             if settings.asterisk_recordings_dir is not None else None)
    archiver = RecordingArchiver(settings.archive_dir, store, spool=spool,
                                 run_blocking=threads.run)
    routing = RoutingProvider(settings.config_path, prompts_dir=settings.prompts_dir)
    prompts = PromptCatalog(settings.prompts_dir, settings.prompt_cache_dir, settings.public_url)
    ari = AriClient(settings.ari_url, settings.ari_user, settings.ari_password,
                    settings.app_name, event_types=CallManager.EVENT_TYPES,
                    run_blocking=threads.run)
    manager = CallManager(ari, store, archiver, routing, prompts, settings.app_name)
    return Service(settings, store, archiver, routing, prompts, ari, manager, threads,
                   retention_interval=settings.retention_interval_hours * 3600)


def create_service(settings: Settings) -> web.Application:
    svc = build_service(settings)
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app[SERVICE] = svc
    prompts_http.add_routes(app, svc.prompts)
    health.add_routes(app, health.Probes(
        svc.ari, svc.store, svc.archiver, svc.manager, svc.retention_runs, svc.loop_lag,
        services_without_notice=lambda: services_without_notice(svc.routing.current(),
                                                                svc.prompts)))
    add_console(app, svc)
    app.cleanup_ctx.extend([_loop_lag_ctx, _store_ctx, _routing_ctx, _calls_ctx,
                            _retention_ctx])
    return app


async def _loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[SERVICE].loop_lag.run(), name="loop-lag")
    try:
        yield
    finally:
        await cancel_and_wait(task)


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICE]
    svc.settings.archive_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    if isinstance(svc.archiver.spool, SpoolRecordings):
        svc.archiver.spool.check()
    await svc.store.start()
    retries = asyncio.create_task(svc.archiver.run_retries(), name="archive-retries")
    try:
        yield
    finally:
        try:
            await cancel_and_wait(retries)
            await svc.store.close()
        finally:
            # last: closing the store may still write the journal on them
            await svc.threads.close()


async def _routing_ctx(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICE]
    svc.routing.current()  # a broken routing file at start-up is fatal, with its errors
    await svc.routing.start()
    try:
        yield
    finally:
        await svc.routing.close()


async def _calls_ctx(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICE]

    async def on_event(event: Event) -> None:
        if isinstance(event, Connected):
            # Reconcile in the background: the event reader must never wait on REST calls.
            task = asyncio.create_task(svc.manager.reconcile(), name="reconcile")
            svc.background.add(task)
            task.add_done_callback(svc.background.discard)
        await svc.manager.handle(event)

    await svc.ari.start()
    events = asyncio.create_task(svc.ari.run_events(on_event), name="ari-events")
    try:
        yield
    finally:
        # each step whatever the one before raised (an events task that had died re-raises
        # its error here): the calls' ends are written, the client closed
        try:
            await cancel_and_wait(events)
        finally:
            try:
                for task in list(svc.background):
                    task.cancel()
                await asyncio.gather(*svc.background, return_exceptions=True)
                await svc.manager.close()
            finally:
                await svc.ari.close()


async def _retention_ctx(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICE]
    task = asyncio.create_task(_retention_loop(svc), name="retention")
    try:
        yield
    finally:
        await cancel_and_wait(task)


async def _retention_loop(svc: Service) -> None:
    """The daily retention run (§9), evidence in the audit log."""
    from callrec.privacy.service import run_retention

    runs = svc.retention_runs
    await asyncio.sleep(svc.retention_first_delay)
    while True:
        try:
            pool = await asyncpg.create_pool(svc.settings.database_url, min_size=1, max_size=2)
            try:
                report = await run_retention(pool, svc.settings.archive_dir, _secret_key(),
                                             months=svc.settings.retention_months)
            finally:
                await pool.close()
            runs.purged_total += len(report.purged)
            runs.last_success, runs.failing_since = time.time(), None
            log.info("retention_run", purged=len(report.purged),
                     held_skipped=report.held_skipped, audit_seq=report.audit_seq)
            pause = svc.retention_interval
        except asyncio.CancelledError:
            raise
        except Exception:  # the failure is logged with its cause, and retried
            runs.failures_total += 1
            if runs.failing_since is None:
                runs.failing_since = time.time()
            # sooner than the next day's run (a database away for a moment must not cost a
            # day of deletions), less often while it keeps failing
            failing_for = time.time() - runs.failing_since
            pause = min(svc.retention_interval, max(RETENTION_RETRY_FIRST, failing_for))
            log.exception("retention_run_failed", retry_in_s=round(pause))
        await asyncio.sleep(pause)


def _secret_key() -> bytes | None:
    """The key if it is set and usable: retention needs it only to match holds on a number
    (without it such a run says so); the rest of it runs without."""
    from callrec.privacy.keys import load_secret_key

    try:
        return load_secret_key()
    except ConfigError as exc:
        log.warning("retention_without_secret_key", error=exc.message)
        return None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the service (ARI app, archive, web)")
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    # a reload (SIGHUP) is the routing provider's once it runs; until then and after it, the
    # signal's default (terminate) would cut the start or the journal's last writes
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    configure_logging(settings.log_format, logging.INFO, cache=True)
    if settings.nice is not None:
        apply_nice(settings.nice)  # first: the threads started later inherit it
    app = create_service(settings)
    log.info("callrec_starting", web=f"{settings.web_host}:{settings.web_port}",
             ari=settings.ari_url, app=settings.app_name)
    # uvloop: the same asyncio API with a cheaper event loop and socket transports, which is
    # where most of the service's CPU per call went (README.md, "Performance")
    web.run_app(app, host=settings.web_host, port=settings.web_port, print=None,
                access_log=None, loop=uvloop.new_event_loop())
    return 0
