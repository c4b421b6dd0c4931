"""The real stack for benchmarks and drills: devstack's `Stack`, with room for hundreds of
calls (a wide RTP port range), a fixed studio notice (no text-to-speech, same audio as the
baseline plays) and a routing file with one service answered by agent1."""

from __future__ import annotations

import dataclasses
import random
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devstack.errors import StackError
from devstack.ports import is_free
from devstack.stack import Stack, StackConfig

SERVICE_NUMBER = "0103808000"
NOTICE_SECONDS = 3
RTP_PORTS = 4000  # two ports (RTP + RTCP) per channel, two channels per call

ROUTING = f"""
[defaults]
ring_timeout = 30
max_wait = 120
timezone = "Europe/Helsinki"

[[agent]]
id = "agent1"
endpoint = "PJSIP/agent1"
name = "Aino Agentti"

[[service]]
number = "{SERVICE_NUMBER}"
name = "Ajanvaraus"
language = "fi"
agents = ["agent1"]
strategy = "in_order"
"""


def rtp_block(count: int = RTP_PORTS) -> int:
    """A free UDP range above the ones devstack's test stacks and SIPp use (RTP is UDP only;
    Asterisk skips a port that is taken meanwhile)."""
    bases = list(range(40000, 65000 - count, 500))
    random.shuffle(bases)
    for base in bases:
        if all(is_free(p, socket.SOCK_DGRAM) for p in range(base, base + count, 2)):
            return base
    raise StackError(f"no {count} free UDP ports between 40000 and 65000")


def make_prompt(path: Path, seconds: float, hz: int) -> None:
    """A studio 'recording' (8 kHz 16-bit mono WAV tone) made with sox."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(path), "synth", str(seconds),
         "sine", str(hz), "vol", "0.3"],
        check=True, capture_output=True,
    )


def seed(directory: Path, routing: str = ROUTING) -> None:
    """Routing file and prompt sources, written before `Stack.up` (which keeps them)."""
    (directory / "config").mkdir(parents=True, exist_ok=True)
    (directory / "config" / "routing.toml").write_text(routing)
    prompts = directory / "prompts"
    make_prompt(prompts / "fi" / "notice.wav", NOTICE_SECONDS, 523)
    make_prompt(prompts / "fi" / "closed.wav", 1, 392)


def build_prompts(stack: Stack) -> None:
    from callrec.prompts.build import build_prompts as build

    report = build(stack.prompts_dir, stack.state_dir / "prompt-cache")
    failed = [r for r in report.results if r.status == "failed"]
    if failed:
        raise RuntimeError(f"prompts not built: {failed}")


def notice_file(stack: Stack) -> Path:
    """The built notice (8 kHz WAV) the service plays: the baseline plays the same audio."""
    found = sorted((stack.state_dir / "prompt-cache").glob("notice-fi-*.wav"))
    if not found:
        raise RuntimeError("no built notice in the prompt cache")
    return found[-1]


def configure(directory: Path) -> StackConfig:
    cfg = StackConfig.ephemeral(directory)
    start = rtp_block()
    return dataclasses.replace(cfg, rtp_start=start, rtp_end=start + RTP_PORTS - 1)


@contextmanager
def running_stack(with_service: bool = True, routing: str = ROUTING) -> Iterator[Stack]:
    """A fresh stack in a temporary directory, destroyed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="callrec-bench-"))
    directory.chmod(0o755)
    stack = Stack(configure(directory))
    try:
        seed(directory, routing)
        stack.up(with_service=False, log=directory / "setup.log")
        build_prompts(stack)
        if with_service:
            stack.start_service()
        yield stack
    finally:
        stack.destroy()
        shutil.rmtree(directory, ignore_errors=True)
