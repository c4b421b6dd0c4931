"""SIPp load: many callers with distinct numbers and one agent phone answering them all,
both sending real RTP tones. Built on devstack's SIPp runners, without their per-message
traces (at hundreds of calls those cost CPU the machine needs for Asterisk)."""

from __future__ import annotations

import csv
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from devstack.errors import StackError
from devstack.ports import is_free
from devstack.sipp import Agent, Caller, _ports, new_workdir, tone_file


def _in_memory() -> Path:
    # SIPp does its work in one thread: a write of its statistics that waits for the disk
    # (which Asterisk's recordings, the archive and PostgreSQL keep busy) stops its calls too
    return new_workdir(memory=True)


def longest_gap(times: Iterable[float], since: float) -> float:
    """The longest time between two consecutive statistics rows, the later one written at
    or after `since` (seconds; 0 with fewer than two rows). SIPp writes a row every second
    from its one thread, so a long gap is a SIPp that stood still: its calls' messages and
    audio waited with it."""
    gap, last = 0.0, None
    for t in times:
        if last is not None and t >= since:
            gap = max(gap, t - last)
        last = t
    return gap


class _Quiet:
    """SIPp without -trace_msg, but with statistics every second (-trace_stat)."""

    workdir: Path
    proc: subprocess.Popen[bytes] | None

    def _trace_args(self) -> list[str]:
        return ["-trace_err", "-error_file", str(self.workdir / "errors.log"), "-trace_stat",
                "-stf", str(self.stats_path), "-fd", "1"]

    @property
    def stats_path(self) -> Path:
        return self.workdir / "stats.csv"

    def stood_still(self, since: float) -> float:
        """`longest_gap` of this SIPp's statistics since `since` (epoch seconds)."""
        times = []
        for row in self.stats():
            # "date<TAB>time<TAB>epoch"
            stamp = (row.get("CurrentTime") or "").rsplit("\t", 1)[-1]
            try:
                times.append(float(stamp))
            except ValueError:
                continue  # a row cut short by the process's end
        return longest_gap(times, since)

    def stats(self) -> list[dict[str, str]]:
        """SIPp's statistics rows (one per second, and a last one at exit)."""
        try:
            with open(self.stats_path, newline="") as f:
                return list(csv.DictReader(f, delimiter=";"))
        except FileNotFoundError:
            return []


@dataclass
class LoadCaller(_Quiet, Caller):
    """`calls` calls at `rate` per second, caller numbers 0409NNNNNN from `first_number`."""

    workdir: Path = field(default_factory=_in_memory)
    first_number: int = 0

    def start(self) -> LoadCaller:
        base = _ports()
        numbers = self.workdir / "callers.csv"
        numbers.write_text("SEQUENTIAL\n" + "".join(
            f"0409{self.first_number + i:06d};\n" for i in range(self.calls)))
        scenario = self._render(
            "caller.xml",
            {"FROM_DISPLAY": "", "FROM_USER": "[field0]",
             "TONE": str(tone_file(self.tone_hz)),
             "TALK_MS": str(int(self.talk_seconds * 1000))},
            "caller.xml",
        )
        self._spawn(
            [f"127.0.0.1:{self.sip_port}", "-sf", str(scenario), "-s", self.service_number,
             "-inf", str(numbers), "-i", "127.0.0.1", "-p", str(base), "-mi", "127.0.0.1",
             "-mp", str(base + 2), "-m", str(self.calls), "-r", str(self.rate),
             "-l", str(self.limit), "-timeout", str(int(self.talk_seconds + 180)),
             "-timeout_error"]
        )
        return self

    def numbers(self) -> list[str]:
        return [f"0409{self.first_number + i:06d}" for i in range(self.calls)]

    def outcome(self) -> tuple[int, int, int]:
        """(successful, failed, peak concurrent) from SIPp's statistics."""
        rows = self.stats()
        if not rows:
            return 0, 0, 0
        last = rows[-1]
        peak = max(int(r.get("CurrentCall", "0") or 0) for r in rows)
        return (int(last.get("SuccessfulCall(C)", "0") or 0),
                int(last.get("FailedCall(C)", "0") or 0), peak)


@dataclass
class LoadAgent(_Quiet, Agent):
    """One agent phone answering every call it is offered."""

    workdir: Path = field(default_factory=_in_memory)

    def start(self) -> LoadAgent:
        media = _ports()
        scenario = self._render(
            "agent.xml",
            {"AGENT": self.name,
             "TONE": str(tone_file(self.tone_hz)),
             "ANSWER_MS": str(max(1, int(self.answer_after * 1000))),
             "TALK_MS": str(int(self.talk_seconds * 1000))},
            f"{self.name}.xml",
        )
        self._spawn(["-sf", str(scenario), "-i", "127.0.0.1", "-p", str(self.port),
                     "-mi", "127.0.0.1", "-mp", str(media)])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not self.running:
                raise StackError(f"SIPp agent {self.name} exited: {self.output()}")
            if not is_free(self.port, socket.SOCK_DGRAM):
                return self
            time.sleep(0.05)
        raise StackError(f"SIPp agent {self.name} did not bind port {self.port}")
