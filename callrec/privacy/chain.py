"""The audit log's hash chain, as pure functions: canonical form, hashing, verification.

Each entry's hash is SHA-256 over a canonical JSON serialisation of all its fields including
the previous entry's hash, so editing any field, deleting or reordering entries, or cutting
the tail (checked against the separately stored head) is detected."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64


def canonical_details(value: Any) -> Any:
    """Check a details value holds only JSON types that survive jsonb unchanged.

    Floats are refused (jsonb may print them differently); strings must not hold NUL."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("audit details must not contain NUL characters")
        return value
    if isinstance(value, list | tuple):
        return [canonical_details(v) for v in value]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("audit detail keys must be strings")
            out[key] = canonical_details(item)
        return out
    raise ValueError(f"audit details cannot hold {type(value).__name__}")


def format_time(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Entry:
    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    reason: str
    details: Mapping[str, Any]
    prev_hash: str
    hash: str = ""


def serialise(entry: Entry) -> bytes:
    """The canonical bytes an entry's hash covers (everything but the hash itself)."""
    body = {
        "seq": entry.seq,
        "at": format_time(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "reason": entry.reason,
        "details": canonical_details(entry.details),
        "prev_hash": entry.prev_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: Entry) -> str:
    return hashlib.sha256(serialise(entry)).hexdigest()


@dataclass(frozen=True)
class Verdict:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    problems: tuple[str, ...]


class Walker:
    """Checks entries fed one at a time in seq order (a long log never sits in memory)."""

    def __init__(self, anchors: Mapping[int, str] | None = None) -> None:
        self._anchors = dict(anchors or {})
        self._anchored: dict[int, str] = {}
        self.problems: list[str] = []
        self.count = 0
        self._expected_seq = 1
        self._prev = GENESIS
        self._last = (0, GENESIS)

    def feed(self, entry: Entry) -> None:
        self.count += 1
        if entry.seq != self._expected_seq:
            if entry.seq > self._expected_seq:
                self.problems.append(f"entries {self._expected_seq}..{entry.seq - 1} are missing")
            else:
                self.problems.append(f"entry {entry.seq} is out of order")
        if entry.prev_hash != self._prev:
            self.problems.append(f"entry {entry.seq} does not follow its predecessor (prev_hash)")
        if entry_hash(entry) != entry.hash:
            self.problems.append(f"entry {entry.seq} was altered (hash mismatch)")
        if entry.seq in self._anchors:
            self._anchored[entry.seq] = entry.hash
        self._prev = entry.hash
        self._expected_seq = entry.seq + 1
        self._last = (entry.seq, entry.hash)

    def result(self, head_seq: int, head_hash: str) -> Verdict:
        problems = list(self.problems)
        last_seq, last_hash = self._last
        if head_seq > last_seq:
            problems.append(f"entries {last_seq + 1}..{head_seq} after the last one are missing")
        elif head_seq < last_seq:
            problems.append(f"entries after {head_seq} were added behind the chain head")
        elif head_hash != last_hash:
            problems.append(f"the chain head does not match entry {last_seq}")
        # anchors are heads written down outside the database: they catch an owner who cut
        # the tail and rewound the head row to match
        for seq, expected in sorted(self._anchors.items()):
            if seq not in self._anchored:
                problems.append(f"anchored entry {seq} is missing")
            elif self._anchored[seq] != expected:
                problems.append(f"entry {seq} does not match its anchor")
        return Verdict(not problems, self.count, head_seq, head_hash, tuple(problems))


def verify(
    entries: Iterable[Entry],
    head_seq: int,
    head_hash: str,
    anchors: Mapping[int, str] | None = None,
) -> Verdict:
    """Walk entries in seq order; report every break of the chain and a mismatched head."""
    walker = Walker(anchors)
    for entry in entries:
        walker.feed(entry)
    return walker.result(head_seq, head_hash)


def parse_anchor(text: str) -> tuple[int, str]:
    """'SEQ:HASH' as printed by `callrec audit verify`; raises ValueError otherwise."""
    seq, sep, digest = text.strip().partition(":")
    if not sep or not seq.isdigit() or len(digest) != 64 or not all(
        c in "0123456789abcdef" for c in digest
    ):
        raise ValueError(f"not an anchor (SEQ:HASH): {text[:80]!r}")
    return int(seq), digest
