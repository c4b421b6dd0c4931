"""CALLREC_NICE: the priority the service takes at start, inherited by its later threads,
and a clear warning where it may not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from callrec import scheduling

pytestmark = pytest.mark.timeout(30)

# In a child of its own session, so that neither this process nor its session group is
# touched: nice 5 lowers the priority, which needs no privilege.
CHILD = """
import json, os, threading
from pathlib import Path
from callrec.scheduling import apply_nice
go = threading.Event()
earlier = threading.Thread(target=go.wait); earlier.start()
applied = apply_nice(5)
before = os.getpriority(os.PRIO_PROCESS, earlier.native_id)
go.set(); earlier.join()
seen = {}
def later():
    seen["thread"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
t = threading.Thread(target=later); t.start(); t.join()
group = Path("/proc/self/autogroup")
print(json.dumps({"applied": applied, "main": os.getpriority(os.PRIO_PROCESS, 0),
                  "thread": seen["thread"], "earlier": before,
                  "group": group.read_text() if group.exists() else None}))
"""


def test_the_process_and_its_later_threads_take_the_priority() -> None:
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         check=True, start_new_session=True, cwd=Path(__file__).parents[2])
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert (got["applied"], got["main"], got["thread"], got["earlier"]) == (True, 5, 5, 5)
    if got["group"] is not None:  # a kernel with autogroup scheduling
        assert got["group"].split()[-2:] == ["nice", "5"], got["group"]
    assert os.getpriority(os.PRIO_PROCESS, 0) == ours


def test_without_the_privilege_it_warns_and_goes_on(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    def refuse(which: int, who: int, value: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    group = tmp_path / "autogroup"
    group.write_text("/autogroup-1 nice 0\n")
    with capture_logs() as logs:
        assert scheduling.apply_nice(-10, autogroup=group) is False
    assert [e["log_level"] for e in logs] == ["warning"]
    assert "CAP_SYS_NICE" in logs[0]["event"]
    assert group.read_text() == "/autogroup-1 nice 0\n", "nothing half-applied"


def test_the_session_group_is_set_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[int, int, int]] = []
    monkeypatch.setattr(os, "setpriority", lambda *a: calls.append(a))
    monkeypatch.setattr(scheduling, "_threads", lambda: [7, 8])
    group = tmp_path / "autogroup"
    group.write_text("/autogroup-1 nice 0\n")
    assert scheduling.apply_nice(-10, autogroup=group) is True
    assert calls == [(os.PRIO_PROCESS, 0, -10), (os.PRIO_PROCESS, 7, -10),
                     (os.PRIO_PROCESS, 8, -10)]
    assert group.read_text() == "-10\n"
    # no autogroup file (a kernel without it, or inside a container's cgroup): only the nice
    assert scheduling.apply_nice(-10, autogroup=tmp_path / "none") is True


def test_nonsense_is_refused() -> None:
    for bad in (-21, 20):
        with pytest.raises(ValueError, match="-20 to 19"):
            scheduling.apply_nice(bad)


def test_a_group_already_at_the_value_is_left_alone(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    # the local stack sets it as root before the service takes an account that may not
    monkeypatch.setattr(os, "setpriority", lambda *a: None)
    group = tmp_path / "autogroup"
    group.write_text("/autogroup-1 nice -10\n")
    with capture_logs() as logs:
        assert scheduling.apply_nice(-10, autogroup=group) is True
    assert group.read_text() == "/autogroup-1 nice -10\n"
    assert [e["log_level"] for e in logs] == ["info"]
