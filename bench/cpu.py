"""CPU time of processes from /proc (utime + stime of every thread), and per-call shares."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_stat(text: str) -> float:
    """CPU seconds (user + system) from the text of /proc/<pid>/stat.

    The command name (field 2) is in parentheses and may itself hold spaces or ')':
    fields are counted after the last ')'."""
    try:
        rest = text[text.rindex(")") + 2 :].split()
        utime, stime = int(rest[11]), int(rest[12])  # fields 14 and 15 of proc(5)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"not a /proc/<pid>/stat line: {text[:80]!r}") from exc
    return (utime + stime) / CLOCK_TICKS


def cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float:
    return parse_stat((proc / str(pid) / "stat").read_text())


@dataclass(frozen=True)
class CpuShare:
    """CPU seconds per call of the recorder and of Asterisk over one measured window."""

    calls: int
    app_seconds: float
    asterisk_seconds: float

    @property
    def app_per_call(self) -> float:
        return self.app_seconds / self.calls

    @property
    def asterisk_per_call(self) -> float:
        return self.asterisk_seconds / self.calls

    @property
    def share(self) -> float:
        """The recorder's CPU per call as a fraction of Asterisk's."""
        if self.asterisk_seconds <= 0:
            raise ValueError("Asterisk used no measurable CPU: the window is too short")
        return self.app_seconds / self.asterisk_seconds


@dataclass(frozen=True)
class Step:
    """One passing capacity step of a target: its rate, calls archived, Asterisk's CPU."""

    rate: float
    calls: int
    asterisk_seconds: float


@dataclass(frozen=True)
class Matched:
    """Asterisk's CPU per call under callrec and under the baseline, over the rates both
    passed."""

    rates: tuple[float, ...]
    callrec_per_call: float
    baseline_per_call: float

    @property
    def ratio(self) -> float:
        return self.callrec_per_call / self.baseline_per_call


def matched(callrec: list[Step], baseline: list[Step]) -> Matched | None:
    """Compare Asterisk's CPU per call at the same rates only. Per call it falls as the rate
    rises (the baseline's in one run: 143 ms at 4 calls/s, 121 at 18), so averages over
    each target's own passing steps favour the target that passed higher rates."""
    common = sorted({s.rate for s in callrec} & {s.rate for s in baseline})
    if not common:
        return None

    def per_call(steps: list[Step]) -> float:
        chosen = [s for s in steps if s.rate in common]
        calls = sum(s.calls for s in chosen)
        if calls <= 0:
            raise ValueError("no calls in the matched steps")
        return sum(s.asterisk_seconds for s in chosen) / calls

    return Matched(tuple(common), per_call(callrec), per_call(baseline))


def share(calls: int, app: tuple[float, float], asterisk: tuple[float, float]) -> CpuShare:
    """From (before, after) CPU-second readings of both processes over `calls` calls."""
    if calls <= 0:
        raise ValueError("no calls in the measured window")
    app_used, ast_used = app[1] - app[0], asterisk[1] - asterisk[0]
    if app_used < 0 or ast_used < 0:
        raise ValueError("CPU time went backwards: a process was restarted during the window")
    return CpuShare(calls, app_used, ast_used)


def main_thread_sched(pid: int, proc: Path = Path("/proc")) -> tuple[float, float]:
    """(seconds on a CPU, seconds ready but waiting for one) of a process's main thread,
    from /proc/<pid>/task/<pid>/schedstat (nanoseconds; the kernel keeps it with
    CONFIG_SCHED_INFO, as Debian's does)."""
    text = (proc / str(pid) / "task" / str(pid) / "schedstat").read_text()
    try:
        ran, waited, _ = (int(x) for x in text.split())
    except ValueError as exc:
        raise ValueError(f"not a schedstat line: {text[:80]!r}") from exc
    return ran / 1e9, waited / 1e9
