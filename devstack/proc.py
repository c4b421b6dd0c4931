"""Background processes with pid files, so `make down` can find and stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from devstack.errors import NotReady, StackError

# Children started by this process: kept so they are reaped (no zombies, and no
# ResourceWarning from a Popen collected while its child still runs).
_children: dict[int, subprocess.Popen[bytes]] = {}


def _start_time(pid: int) -> str | None:
    """When the process started (clock ticks since boot, /proc/<pid>/stat field 22): with
    the pid it names one process, where a pid alone may name another after a reboot."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def spawn(
    argv: Sequence[str],
    log: Path,
    pidfile: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start a detached process (own session) whose output goes to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    pidfile.write_text(f"{proc.pid} {_start_time(proc.pid) or ''}".rstrip() + "\n")
    return proc.pid


def read_pid(pidfile: Path) -> int | None:
    """The pid if that process still runs: a pid file left by a reboot may name another
    process now (`make down` would signal its whole group), told apart by its start time."""
    try:
        fields = pidfile.read_text().split()
        pid = int(fields[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    if len(fields) > 1 and _start_time(pid) != fields[1]:
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, parent has not reaped it) still answers kill(0).
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def stop(pidfile: Path, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Signal the process group, wait, then SIGKILL what is left."""
    pid = read_pid(pidfile)
    if pid is not None:
        _signal_group(pid, sig)
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            _signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
    pidfile.unlink(missing_ok=True)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def wait_until(check: object, timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll `check()` until it is truthy; raise NotReady naming `what`. A StackError from
    `check` (the process exited) ends the wait at once."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except StackError:
            raise
        except Exception as exc:  # polling: the thing is not ready yet
            last_exc = exc
        time.sleep(interval)
    raise NotReady(f"{what} not ready after {timeout:.0f}s (last error: {last_exc!r})")
