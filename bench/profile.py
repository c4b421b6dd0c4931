"""Sampling profile of the running service with py-spy (collapsed stacks), summarised."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path


def collapsed_totals(text: str) -> tuple[int, Counter[str], Counter[str]]:
    """(samples, own samples per frame, inclusive samples per frame) from py-spy's raw
    (collapsed) output: one `frame;frame;...;leaf COUNT` line per distinct stack."""
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return total, own, inclusive


def record(pid: int, seconds: int, out: Path) -> Path | None:
    """py-spy record of `pid` for `seconds`; None when py-spy is not installed."""
    spy = shutil.which("py-spy") or str(Path(__file__).resolve().parent.parent / ".venv" /
                                         "bin" / "py-spy")
    if not Path(spy).exists():
        return None
    subprocess.run([spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "100",
                    "--format", "raw", "-o", str(out), "--nonblocking"],
                   check=True, capture_output=True, timeout=seconds + 60)
    return out


def summary(text: str, top: int = 12) -> dict[str, object]:
    total, own, inclusive = collapsed_totals(text)
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str], keep: str = "") -> list[tuple[str, float]]:
        items = [(f, n) for f, n in counter.most_common() if keep in f]
        return [(f, round(100 * n / total, 1)) for f, n in items[:top]]

    idle = sum(n for f, n in own.items() if "select" in f or "epoll" in f or "poll " in f)
    return {"samples": total, "idle_pct": round(100 * idle / total, 1),
            "own_pct": share(own), "callrec_inclusive_pct": share(inclusive, "callrec/")}
