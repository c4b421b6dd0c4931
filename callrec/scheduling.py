"""The service's CPU priority against Asterisk's media work (CALLREC_NICE).

Each call costs callrec a few milliseconds of CPU, and every one of them is on a caller's or
an agent's path (an agent waits for the recording to start before being connected). When
the machine is out of CPU, a process at the same priority as Asterisk's media threads waits
its turn for each of those milliseconds: measured at 20 calls/s on 2 cores, callrec's loop
ran its timers up to 0.25 s late (p99) and waited for a CPU 3.4 times as long as it ran;
at nice -10, 25 ms. callrec's own use stays small, so a higher priority cannot starve
Asterisk. See README.md, "Performance".
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

#: With autogroup scheduling (Linux's default for processes in sessions of their own), a
#: thread's nice value weighs only within its session's group; the group's own nice value
#: is what weighs against Asterisk's.
AUTOGROUP = Path("/proc/self/autogroup")
TASKS = Path("/proc/self/task")


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir(TASKS)]
    except OSError:
        return []  # no /proc: the main thread's value is all there is


def _group_nice(autogroup: Path) -> int | None:
    """The group's nice value from its line (`/autogroup-42 nice -10`)."""
    words = autogroup.read_text().split()
    try:
        return int(words[words.index("nice") + 1])
    except (ValueError, IndexError):
        return None


def apply_nice(nice: int, autogroup: Path = AUTOGROUP) -> bool:
    """Give this process `nice` (-20..19) before it starts threads (they inherit it); True
    if applied. Without the privilege for a higher priority (CAP_SYS_NICE) it logs why and
    the service runs on at its present priority."""
    if not -20 <= nice <= 19:
        raise ValueError(f"nice must be from -20 to 19, got {nice}")
    try:
        # Linux keeps a nice value per thread; threads started at import (numpy's BLAS
        # pool) are already there, so each is set, the main thread first
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        for tid in _threads():
            with contextlib.suppress(ProcessLookupError):  # a thread that has just ended
                os.setpriority(os.PRIO_PROCESS, tid, nice)
    except PermissionError:
        log.warning("cpu priority not raised: needs CAP_SYS_NICE (or a container's CPU "
                    "weight instead)", nice=nice)
        return False
    if autogroup.exists():
        try:
            # set already by whoever started the service (the local stack does, as root,
            # before it takes its own account, which may not raise it)
            if _group_nice(autogroup) != nice:
                autogroup.write_text(f"{nice}\n")
        except OSError as exc:
            log.warning("cpu priority of the session group not set", nice=nice,
                        error=str(exc))
    log.info("cpu priority set", nice=nice)
    return True
