"""Capacity, CPU share and latency: SIPp load against callrec and against the baseline,
side by side on the same machine, the two interleaved step by step so drift hits both."""

from __future__ import annotations

import asyncio
import math
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import cpu, steps, taskqueue
from bench.baseline import BaselineAsterisk, cdr_count, recordings_since, shortest_conversation
from bench.load import LoadAgent, LoadCaller
from bench.observer import Observer, latencies
from bench.stacks import NOTICE_SECONDS, SERVICE_NUMBER
from bench.stats import bucket_quantile, summarize
from devstack.errors import StackError
from devstack.proc import read_pid
from devstack.stack import Stack

ANSWER_AFTER = 0.3  # the agent phone rings this long
# SIPp writes its statistics every second; standing still this long is SIPp's own stall,
# not a slow recorder's (a CPU-starved process still gets its turn within milliseconds)
STOOD_STILL_S = 3.0
# how often a failed step is run again because its load generator stood still
VOID_RETRIES = 1
BYTES_PER_SECOND = 16000  # 8 kHz 16-bit mono WAV


@dataclass(frozen=True)
class LoadShape:
    conversation: float = 20.0  # seconds the parties talk once the agent answered
    window: float = 25.0  # seconds during which new calls arrive, at the step's rate
    settle: float = 90.0  # how long to wait for the last calls to be archived
    # A quiet pause before each step: a step right after the other target's heavier one ran
    # into its aftermath (callrec at 16 calls/s after the baseline's 20: 385 and 351 of 400
    # archived, callers' wait p99 6.4 and 8.1 s; with 60 s between: 399 and 400, 4.9 and
    # 4.7 s), and the search puts callrec after the baseline's heavier steps more often.
    pause: float = 60.0

    @property
    def caller_talk(self) -> float:
        """The caller's SIPp hangs up this long after its 200 OK (the answer, before the
        notice): notice + ringing + conversation."""
        return NOTICE_SECONDS + ANSWER_AFTER + 0.7 + self.conversation

    def calls(self, rate: float) -> int:
        return max(1, round(rate * self.window))


# a Prometheus histogram's cumulative buckets: (upper bound, count), +Inf last
LagReading = list[tuple[float, int]]

# (calls of the step found archived, what was counted: for the notes of a failed step)
ArchiveCount = Callable[["LoadCaller", float, "LoadShape"], tuple[int, str]]


@dataclass
class Target:
    """Something SIPp can load: callrec's stack or the baseline, and how to count what it
    archived."""

    name: str
    sip_port: int
    asterisk_pid: Callable[[], int | None]
    app_pid: Callable[[], int | None]
    archived: ArchiveCount
    numbers: int = 0  # caller numbers used so far (each call gets a fresh one)
    log: list[str] = field(default_factory=list)
    # the recorder's event-loop lateness histogram, for whether it kept up (callrec only)
    loop_lag: Callable[[], LagReading] | None = None
    # Asterisk's queue of events for the recorder's ARI application (callrec only)
    event_queue: taskqueue.AppQueue | None = None
    # the agent phones answering this target's calls (their SIPp statistics show stalls)
    agents: list[LoadAgent] = field(default_factory=list)


def callrec_loop_lag(stack: Stack) -> Callable[[], LagReading]:
    """Reads `callrec_loop_lag_seconds` from the service's /metrics: `(le, count)` buckets."""
    prefix = 'callrec_loop_lag_seconds_bucket{le="'

    def read() -> LagReading:
        with urllib.request.urlopen(stack.web_url + "/metrics", timeout=10) as resp:  # noqa: S310 - our own local URL
            body = resp.read().decode()
        out = []
        for line in body.splitlines():
            if line.startswith(prefix):
                le, _, count = line[len(prefix):].partition('"} ')
                out.append((math.inf if le == "+Inf" else float(le), int(float(count))))
        return out

    return read


def callrec_archived(stack: Stack) -> ArchiveCount:
    """Calls of this step with a completed row, a conversation of at least 0.9 of the
    shape's (the floor the baseline's CDR `billsec` and MixMonitor file are held to), a
    recording that covers the conversation the row records (answer to end, less 1.5 s) and
    at least that floor, and the file on disk with the recorded size.

    Under load the caller waits longer for the agent and, hanging up at a fixed time, talks
    less: past the floor, a call that waited too long fails as the baseline's does (without
    the floor, callrec passed steps whose callers waited 17 s at p99 and talked 7 s)."""

    def count(caller: LoadCaller, since: float, shape: LoadShape) -> tuple[int, str]:
        numbers = caller.numbers()
        min_s = int(shape.conversation * 0.9)
        # generated digits and numbers: nothing from outside reaches the SQL text
        span = f"c.caller_number BETWEEN '{numbers[0]}' AND '{numbers[-1]}'"
        where = (f"{span} AND c.end_reason = 'completed' AND r.duration_ms >= "
                 "extract(epoch FROM c.ended_at - c.answered_at) * 1000 - 1500 "
                 f"AND c.ended_at - c.answered_at >= interval '{min_s} seconds' "
                 f"AND r.duration_ms >= {min_s * 1000}")
        sql = f"SELECT r.path, r.bytes FROM calls c JOIN recordings r ON r.call_id = c.id WHERE {where}"  # noqa: S608, E501
        rows = stack.pg.psql(sql)
        ok = 0
        lines = rows.splitlines()
        for line in lines:
            path, size = line.rsplit("|", 1)
            file = stack.archive_dir / path
            if file.is_file() and file.stat().st_size == int(size):
                ok += 1
        waits = stack.pg.psql(
            "SELECT round(percentile_disc(0.5) WITHIN GROUP (ORDER BY w)::numeric, 2), "  # noqa: S608
            "round(percentile_disc(0.99) WITHIN GROUP (ORDER BY w)::numeric, 2) FROM ("
            "SELECT extract(epoch FROM c.answered_at - c.started_at) AS w FROM calls c "
            f"WHERE {span}) x").strip().replace("|", " s, p99 ")
        detail = f"wait to answer p50 {waits} s"
        if ok == len(numbers):
            return ok, detail
        # say where the others are: still open, ended otherwise, or without a recording
        states = stack.pg.psql(
            "SELECT c.state || '/' || coalesce(c.end_reason, '-') || "  # noqa: S608
            "CASE WHEN r.call_id IS NULL THEN '/no recording' ELSE '' END, count(*), "
            "min(r.duration_ms), min(extract(epoch FROM c.ended_at - c.answered_at)) "
            f"FROM calls c LEFT JOIN recordings r ON r.call_id = c.id WHERE {span} GROUP BY 1")
        return ok, (f"{detail}; complete rows with recordings {len(lines)}, files {ok}; rows "
                    f"by state/end reason (count, min recording ms, min talk s): "
                    f"{states.strip().replace(chr(10), ', ')}")

    return count


def baseline_archived(instance: BaselineAsterisk, stack: Stack) -> ArchiveCount:
    """Calls of this step with an answered CDR row in PostgreSQL whose conversation (the
    agent's answer to the hang-up, written by the baseline's dialplan) reaches the floor
    callrec's calls are held to, and MixMonitor files at least that long (the smaller of
    the two counts). Until 2026-11-30 the rows were counted by billsec, which runs from the
    caller's Answer() before the notice: a caller kept waiting for the agent still passed."""

    def count(caller: LoadCaller, since: float, shape: LoadShape) -> tuple[int, str]:
        min_s = int(shape.conversation * 0.9)
        numbers = caller.numbers()
        rows = cdr_count(stack.pg, numbers[0], numbers[-1], min_s)
        files = recordings_since(instance, since, min_s * BYTES_PER_SECOND)
        shortest = shortest_conversation(stack.pg, numbers[0], numbers[-1])
        return min(rows, files), (f"CDR rows with a conversation of {min_s} s or more {rows}, "
                                  f"MixMonitor files {files}; shortest conversation "
                                  f"{shortest or '-'} s")

    return count


def _cpu(pid: int | None) -> float:
    return cpu.cpu_seconds(pid) if pid else 0.0


@dataclass
class StepRun:
    result: steps.StepResult
    asterisk_cpu: float
    app_cpu: float
    seconds: float
    loop_lag_p99_s: float | None = None  # bucket bound; inf: later than the last bound
    event_queue_max_depth: int | None = None
    event_queue_per_call: float | None = None  # messages through it per call offered
    stood_still_s: float = 0.0  # the longest stall of the step's SIPp processes

    @property
    def void(self) -> bool:
        """Failed while its load generator stood still: says nothing of the target."""
        return not self.result.ok and self.stood_still_s >= STOOD_STILL_S


def _sched(pid: int | None) -> tuple[float, float] | None:
    try:
        return cpu.main_thread_sched(pid) if pid else None
    except (OSError, ValueError):
        return None


def _queue(target: Target, *, reset: bool = False) -> taskqueue.QueueStats | None:
    if target.event_queue is None:
        return None
    try:
        if reset:
            target.event_queue.reset()
            return None
        return target.event_queue.read()
    except (OSError, StackError, subprocess.SubprocessError):
        return None  # Asterisk is down: its step fails on its own account


def _lag(target: Target) -> LagReading | None:
    if target.loop_lag is None:
        return None
    try:
        return target.loop_lag()
    except OSError:
        return None  # the service is down: its step fails on its own account


def run_step(target: Target, rate: float, shape: LoadShape) -> StepRun:
    """Offer `rate` calls/s for the window; wait for SIPp and for the archive to settle."""
    calls = shape.calls(rate)
    since = time.time()
    ast0, app0 = _cpu(target.asterisk_pid()), _cpu(target.app_pid())
    lag0 = _lag(target)
    sched0 = _sched(target.app_pid())
    _queue(target, reset=True)
    t0 = time.monotonic()
    caller = LoadCaller(sip_port=target.sip_port, service_number=SERVICE_NUMBER,
                        talk_seconds=shape.caller_talk, calls=calls, rate=rate, limit=calls,
                        first_number=target.numbers)
    target.numbers += calls
    caller.start()
    try:
        caller.wait(timeout=shape.window + shape.caller_talk + 240)
    except Exception:
        caller.stop()
    completed, failed, peak = caller.outcome()
    stood_still = max([caller.stood_still(since), *(a.stood_still(since) for a in target.agents)])
    deadline = time.monotonic() + shape.settle
    archived, detail = target.archived(caller, since, shape)
    while archived < completed and time.monotonic() < deadline:
        time.sleep(1)
        archived, detail = target.archived(caller, since, shape)
    ast1, app1 = _cpu(target.asterisk_pid()), _cpu(target.app_pid())
    lag1 = _lag(target)
    sched1 = _sched(target.app_pid())
    queue = _queue(target)
    wall = time.monotonic() - t0
    lag_p99 = bucket_quantile(lag0, lag1, 0.99) if lag0 and lag1 else None
    notes = f"SIPp failed {failed}" if failed else ""
    if failed:
        notes += "; " + caller.output()[-300:].replace("\n", " ")
    if detail:
        notes += f" archive: {detail}"
    if stood_still >= STOOD_STILL_S:
        notes += f"; a SIPp process stood still for {stood_still:.1f} s"
    if lag_p99 is not None:
        # whether the recorder itself kept up: its loop on time means the limit was elsewhere
        notes += f"; {target.name} event loop late p99 <= {lag_p99:g} s"
    if sched0 and sched1:
        # busy near 100 %: the recorder is the bottleneck; waiting: the machine is out of CPU
        ran, waited = (b - a for a, b in zip(sched0, sched1, strict=True))
        notes += (f"; {target.name} main thread busy {100 * ran / wall:.0f} %, ready but "
                  f"waiting for a CPU {100 * waited / wall:.0f} % of the step")
    per_call = queue.processed / calls if queue else None
    if queue is not None:
        # at the high water mark Asterisk stops taking new calls for a while
        notes += (f"; Asterisk's event queue for {target.name}: {per_call:.0f} messages per "
                  f"call, deepest {queue.max_depth} (alert at {taskqueue.HIGH_WATER})")
    return StepRun(steps.StepResult(rate, calls, completed, archived, peak, notes.strip()),
                   ast1 - ast0, app1 - app0, wall, lag_p99,
                   queue.max_depth if queue else None, per_call, stood_still)


def interleaved_search(targets: list[Target], plan: steps.Plan, shape: LoadShape,
                       say: Callable[[str], None],
                       pause: Callable[[float], None] = time.sleep) -> dict[
                           str, tuple[steps.Search, list[StepRun]]]:
    """Step every target through the rates `plan` gives it, one step per target in turn so
    that drift hits all alike, until each target's search is over; `shape.pause` seconds of
    quiet before each step but the first."""
    out: dict[str, tuple[steps.Search, list[StepRun]]] = {
        t.name: (steps.Search(), []) for t in targets}
    first = True
    while True:
        todo = [(t, rate) for t in targets
                if (rate := plan.next_rate(out[t.name][0])) is not None]
        if not todo:
            return out
        for t, rate in todo:
            for attempt in range(VOID_RETRIES + 1):
                if not first and shape.pause > 0:
                    pause(shape.pause)
                first = False
                run = run_step(t, rate, shape)
                r = run.result
                say(f"  {t.name:8} {rate:5.1f} calls/s: offered {r.offered}, completed "
                    f"{r.completed}, archived {r.archived}, peak {r.peak_concurrent} "
                    f"concurrent ({run.seconds:.0f} s) {'ok' if r.ok else 'FAILED ' + r.notes}")
                if not run.void or attempt == VOID_RETRIES:
                    break
                # the failure may be the load generator's alone: the same rate once more,
                # the void run kept apart for the record
                out[t.name][0].void.append(r)
                say(f"  {t.name:8} {rate:5.1f} calls/s: void (SIPp stood still "
                    f"{run.stood_still_s:.1f} s), run again")
            out[t.name][0].steps.append(run.result)
            out[t.name][1].append(run)


def cpu_share(runs: list[StepRun]) -> cpu.CpuShare | None:
    """The recorder's CPU per call relative to Asterisk's over the passing steps."""
    good = [r for r in runs if r.result.ok]
    if not good:
        return None
    calls = sum(r.result.archived for r in good)
    return cpu.CpuShare(calls, sum(r.app_cpu for r in good), sum(r.asterisk_cpu for r in good))


def passing_steps(runs: list[StepRun]) -> list[cpu.Step]:
    """Each passing step's rate, archived calls and Asterisk's CPU (for `cpu.matched`)."""
    return [cpu.Step(r.result.rate, r.result.archived, r.asterisk_cpu)
            for r in runs if r.result.ok]


async def measure_latency(stack: Stack, concurrent: int, conversation: float,
                          first_number: int) -> dict[str, Any]:
    """Offer `concurrent` calls fast enough that they are all up together; Asterisk's
    timestamps give notice and join latencies."""
    rate = max(1.0, concurrent / 10)
    shape = LoadShape(conversation=conversation)
    async with Observer(stack.ari_url, stack.ari_user, stack.ari_password) as obs:
        caller = LoadCaller(sip_port=stack.sip_port, service_number=SERVICE_NUMBER,
                            talk_seconds=shape.caller_talk + concurrent / rate,
                            calls=concurrent, rate=rate, limit=concurrent,
                            first_number=first_number)
        caller.start()
        await asyncio.to_thread(caller.wait, shape.caller_talk + concurrent / rate + 240)
        await asyncio.sleep(1)
    completed, failed, peak = caller.outcome()
    lat = latencies(obs.events)
    return {
        "concurrent_target": concurrent, "peak_concurrent": peak, "completed": completed,
        "failed": failed,
        "notice_ms": summarize(lat.notice_ms).as_dict() if lat.notice_ms else None,
        "join_ms": summarize(lat.join_ms).as_dict() if lat.join_ms else None,
    }


def pids(stack: Stack) -> tuple[Callable[[], int | None], Callable[[], int | None]]:
    return (lambda: read_pid(stack.asterisk.pidfile)), (lambda: read_pid(stack.service_pidfile))


def start_agent(port: int) -> LoadAgent:
    return LoadAgent(name="agent1", port=port, answer_after=ANSWER_AFTER,
                     talk_seconds=3600).start()
