"""SIPp peers with real RTP audio: callers dialling a service number and agent phones
answering at their static contacts. Each peer sends a sine tone of its own frequency, so
a recording can be checked by content (one tone per party)."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from devstack.errors import StackError
from devstack.ports import free_block

SCENARIOS = Path(__file__).resolve().parent / "sipp"
# Tone files are the same for every run: made once, kept beside the work directories.
TONES = Path(tempfile.gettempdir()) / "callrec-tones"
# Set to keep SIPp's work directories (scenarios, traces, statistics) after the process exits.
KEEP_ENV = "CALLREC_KEEP_SIPP"
_URI_USER_SAFE = set(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,;?/"
)


def tone_file(hz: int, seconds: int = 30, directory: Path = TONES) -> Path:
    """Raw headerless a-law (RTP payload type 8) of a sine tone, made with sox."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"tone-{hz}hz-{seconds}s.alaw"
    if not path.exists():
        tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")  # processes may race
        subprocess.run(
            ["sox", "-n", "-r", "8000", "-c", "1", "-e", "a-law", "-t", "raw", str(tmp),
             "synth", str(seconds), "sine", str(hz), "vol", "0.5"],
            check=True, capture_output=True,
        )
        tmp.rename(path)
    return path


def sip_uri_user(text: str) -> str:
    """Percent-encode a caller number for the From URI's user part (RFC 3261 escapes)."""
    return "".join(c if c in _URI_USER_SAFE else "".join(f"%{b:02X}" for b in c.encode())
                   for c in text)


def sip_display(text: str) -> str:
    """A quoted display name with `"` and `\\` escaped, followed by a space; '' for none."""
    if not text:
        return ""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '" '


_own_dirs: dict[bool, Path] = {}


def new_workdir(*, memory: bool = False) -> Path:
    """A fresh work directory for one SIPp process. They all sit in one directory of this
    process's own, removed when it exits unless CALLREC_KEEP_SIPP is set (a test or a
    benchmark step starts dozens; left behind, they piled up in /tmp by the hundred).
    `memory`: in /dev/shm where there is one, so that SIPp never waits for the disk."""
    if memory not in _own_dirs:
        shm = Path("/dev/shm")
        base = shm if memory and shm.is_dir() and os.access(shm, os.W_OK) else None
        own = Path(tempfile.mkdtemp(prefix="callrec-sipp-", dir=base))
        if not os.environ.get(KEEP_ENV):
            atexit.register(shutil.rmtree, own, ignore_errors=True)
        _own_dirs[memory] = own
    return Path(tempfile.mkdtemp(dir=_own_dirs[memory]))


# A SIPp process binds its SIP port and, from its `-mp` media port M, M (audio) and M + 2
# (video). With the SIP port at a block's base and M = base + 2, a block of 4 let the video
# port land on the next block's SIP port (SIPp then exits 254); a block of 8 holds them all.
SIPP_BLOCK = 8


def _ports(count: int = SIPP_BLOCK) -> int:
    return free_block(count, start=30000, end=39000, step=count)


@dataclass
class _Sipp:
    workdir: Path = field(default_factory=new_workdir)
    proc: subprocess.Popen[bytes] | None = None

    def _render(self, template: str, values: dict[str, str], name: str) -> Path:
        text = (SCENARIOS / template).read_text()
        for key, value in values.items():
            text = text.replace(f"@{key}@", value)
        text = text.replace('encoding="ISO-8859-1"', 'encoding="UTF-8"')
        path = self.workdir / name
        path.write_text(text, encoding="utf-8")
        return path

    def _spawn(self, argv: list[str]) -> None:
        if shutil.which("sipp") is None:
            raise StackError("SIPp is not installed: apt-get install sip-tester")
        log = open(self.workdir / "sipp.out", "wb")  # noqa: SIM115 (owned by the process)
        self.proc = subprocess.Popen(
            ["sipp", *argv, "-nostdin", *self._trace_args()],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=self.workdir, start_new_session=True,
        )
        log.close()

    def _trace_args(self) -> list[str]:
        """What SIPp writes down: every message and every error (see `messages`)."""
        return ["-trace_msg", "-trace_err", "-message_file", str(self.workdir / "messages.log"),
                "-error_file", str(self.workdir / "errors.log")]

    def wait(self, timeout: float) -> int:
        assert self.proc is not None, "not started"
        return self.proc.wait(timeout=timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGUSR1)  # SIPp: quit after current calls abort
            self.proc.wait(timeout=3)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def messages(self) -> str:
        """Every SIP message SIPp sent and received so far."""
        try:
            return (self.workdir / "messages.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        parts = []
        for name in ("sipp.out", "errors.log"):
            p = self.workdir / name
            if p.exists():
                parts.append(p.read_text(errors="replace")[-4000:])
        return "\n".join(parts)


@dataclass
class Caller(_Sipp):
    """One call into the PBX: `Caller(...).start()`, then `wait(timeout)` for SIPp's exit code
    (0: the call went through as scripted)."""

    sip_port: int = 5060
    service_number: str = "0103808000"
    caller_number: str = "0401234567"
    caller_name: str = ""
    tone_hz: int = 440
    talk_seconds: float = 5.0  # hang up this long after the answer, unless hung up on first
    calls: int = 1  # several calls of the same script, `rate` per second, `limit` at once
    rate: float = 1.0
    limit: int = 1

    def start(self) -> Caller:
        base = _ports()
        user = sip_uri_user(self.caller_number)
        scenario = self._render(
            "caller.xml",
            {
                "FROM_DISPLAY": sip_display(self.caller_name),
                "FROM_USER": user,
                "TONE": str(tone_file(self.tone_hz)),
                "TALK_MS": str(int(self.talk_seconds * 1000)),
            },
            "caller.xml",
        )
        if not user:  # no user part at all: the URI is just the host
            text = scenario.read_text().replace("<sip:@[local_ip]", "<sip:[local_ip]")
            scenario.write_text(text)
        self._spawn(
            [f"127.0.0.1:{self.sip_port}", "-sf", str(scenario), "-s", self.service_number,
             "-i", "127.0.0.1", "-p", str(base), "-mi", "127.0.0.1", "-mp", str(base + 2),
             "-m", str(self.calls), "-r", str(self.rate), "-l", str(self.limit),
             "-timeout", str(int(self.talk_seconds + 120)), "-timeout_error"]
        )
        return self


@dataclass
class Agent(_Sipp):
    """An agent phone listening at its static contact (127.0.0.1:<port>); answers every
    call after `answer_after` seconds, or rejects every call with `reject` (e.g. 486)."""

    name: str = "agent1"
    port: int = 5071
    tone_hz: int = 1000
    answer_after: float = 1.0
    talk_seconds: float = 3600.0  # hang up after this long unless the caller does first
    reject: int | None = None

    def start(self) -> Agent:
        media = _ports()
        if self.reject is not None:
            reasons = {486: "Busy Here", 480: "Temporarily Unavailable", 603: "Decline",
                       404: "Not Found", 503: "Service Unavailable"}
            scenario = self._render(
                "agent-reject.xml",
                {"REJECT_CODE": str(self.reject),
                 "REJECT_REASON": reasons.get(self.reject, "Rejected")},
                f"{self.name}.xml",
            )
        else:
            scenario = self._render(
                "agent.xml",
                {
                    "AGENT": self.name,
                    "TONE": str(tone_file(self.tone_hz)),
                    "ANSWER_MS": str(max(1, int(self.answer_after * 1000))),
                    "TALK_MS": str(int(self.talk_seconds * 1000)),
                },
                f"{self.name}.xml",
            )
        self._spawn(
            ["-sf", str(scenario), "-i", "127.0.0.1", "-p", str(self.port),
             "-mi", "127.0.0.1", "-mp", str(media)]
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # SIPp binds its port shortly after start
            if not self.running:
                raise StackError(f"SIPp agent {self.name} exited: {self.output()}")
            import socket

            from devstack.ports import is_free

            if not is_free(self.port, socket.SOCK_DGRAM):
                return self
            time.sleep(0.05)
        raise StackError(f"SIPp agent {self.name} did not bind port {self.port}")

    def invites(self) -> list[str]:
        """The INVITEs this agent received, as text."""
        blocks = re.split(r"^-{20,}.*$", self.messages(), flags=re.MULTILINE)
        return [b for b in blocks
                if "message received" in b and re.search(r"^\s*INVITE sip:", b, re.MULTILINE)]
