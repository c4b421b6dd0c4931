"""Archive <-> rows <-> Asterisk spool: what the drills check after every fault."""

from __future__ import annotations

import hashlib
import time
import wave
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from devstack.stack import Stack


@dataclass
class CallRow:
    id: str
    caller_number: str
    end_reason: str | None
    state: str
    talk_s: float | None
    path: str | None
    sha256: str | None
    bytes: int | None
    duration_ms: int | None
    ended_at: float | None  # seconds since the epoch


def rows(stack: Stack, numbers: Iterable[str] | None = None) -> list[CallRow]:
    out = stack.pg.psql(
        "SELECT c.id, c.caller_number, coalesce(c.end_reason, ''), c.state, "
        "coalesce(extract(epoch FROM c.ended_at - c.answered_at)::text, ''), "
        "coalesce(r.path, ''), coalesce(r.sha256, ''), coalesce(r.bytes::text, ''), "
        "coalesce(r.duration_ms::text, ''), coalesce(extract(epoch FROM c.ended_at)::text, '') "
        "FROM calls c LEFT JOIN recordings r ON r.call_id = c.id ORDER BY c.caller_number"
    )
    wanted = set(numbers) if numbers is not None else None
    result = []
    for line in out.splitlines():
        cid, number, reason, state, talk, path, sha, size, dur, ended = line.split("|")
        if wanted is not None and number not in wanted:
            continue
        result.append(CallRow(cid, number, reason or None, state, float(talk) if talk else None,
                              path or None, sha or None, int(size) if size else None,
                              int(dur) if dur else None, float(ended) if ended else None))
    return result


@dataclass
class Reconciliation:
    missing_rows: list[str] = field(default_factory=list)  # caller numbers without a row
    duplicate_rows: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # rows never closed
    without_recording: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)  # row says file, disk has none
    bad_files: list[str] = field(default_factory=list)  # size or SHA-256 differ from the row
    orphan_files: list[str] = field(default_factory=list)  # files no row names
    partial_files: list[str] = field(default_factory=list)
    spool_left: list[str] = field(default_factory=list)  # recordings left in Asterisk

    def problems(self) -> dict[str, list[str]]:
        return {k: v[:10] for k, v in vars(self).items() if v}


def reconcile(stack: Stack, numbers: list[str], recorded: bool = True) -> Reconciliation:
    r = Reconciliation()
    all_rows = rows(stack)
    mine = [x for x in all_rows if x.caller_number in set(numbers)]
    seen: dict[str, int] = {}
    for x in mine:
        seen[x.caller_number] = seen.get(x.caller_number, 0) + 1
    r.missing_rows = [n for n in numbers if n not in seen]
    r.duplicate_rows = [n for n, c in seen.items() if c > 1]
    r.unfinished = [x.caller_number for x in mine if x.state != "done" or not x.end_reason]
    if recorded:
        r.without_recording = [x.caller_number for x in mine if x.path is None]
    named = {x.path for x in all_rows if x.path}
    root = stack.archive_dir
    for x in mine:
        if x.path is None:
            continue
        file = root / x.path
        if not file.is_file():
            r.missing_files.append(x.path)
            continue
        data = file.read_bytes()
        if len(data) != x.bytes or hashlib.sha256(data).hexdigest() != x.sha256:
            r.bad_files.append(x.path)
    for file in root.rglob("*"):
        if not file.is_file():
            continue
        rel = str(file.relative_to(root))
        if file.name.endswith(".partial"):
            r.partial_files.append(rel)
        elif file.suffix == ".wav" and rel not in named:
            r.orphan_files.append(rel)
    spool = stack.asterisk.recordings
    r.spool_left = [str(p.relative_to(spool)) for p in spool.rglob("*") if p.is_file()]
    return r


def wait_reconciled(stack: Stack, numbers: list[str], timeout: float,
                    recorded: bool = True) -> Reconciliation:
    """Poll until nothing is wrong or the time is up; the last reconciliation either way."""
    deadline = time.monotonic() + timeout
    while True:
        result = reconcile(stack, numbers, recorded)
        if not result.problems() or time.monotonic() > deadline:
            return result
        time.sleep(1)


def dominant_tone(path: str, candidates: list[int]) -> int:
    """Which candidate frequency holds the most energy in the middle second of a WAV."""
    with wave.open(path) as w:
        rate = w.getframerate()
        frames = w.readframes(w.getnframes())
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float64)
    mid = len(samples) // 2
    window = samples[max(0, mid - rate // 2): max(0, mid - rate // 2) + rate]
    spectrum = np.abs(np.fft.rfft(window))
    hz_per_bin = rate / len(window)
    return max(candidates, key=lambda f: spectrum[round(f / hz_per_bin)])
