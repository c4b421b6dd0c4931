"""The results table and bench/results/latest.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
GOALS = {
    "capacity_ratio": (">=", 0.95),
    "cpu_share": ("<=", 0.05),
    "notice_p99_ms": ("<", 100.0),
    "join_p99_ms": ("<", 50.0),
    "lookup_p99_ms": ("<", 20.0),
    "purge_per_s": (">=", 2000.0),
}


def verdict(key: str, value: float | None) -> str:
    if value is None:
        return "not measured"
    op, goal = GOALS[key]
    ok = {">=": value >= goal, "<=": value <= goal, "<": value < goal}[op]
    return "met" if ok else "NOT met"


def table(results: dict[str, Any]) -> str:
    rows = [("figure", "value", "goal", "verdict")]
    for key, (op, goal) in GOALS.items():
        value = results.get(key)
        shown = "-" if value is None else (f"{value:.3f}" if value < 10 else f"{value:,.1f}")
        rows.append((key, shown, f"{op} {goal:g}", verdict(key, value)))
    for key, value in results.get("extra", {}).items():
        rows.append((key, str(value), "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write(results: dict[str, Any], name: str = "latest.json") -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path
