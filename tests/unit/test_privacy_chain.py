"""The audit hash chain as pure functions: canonical form and every kind of tampering."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from callrec.privacy import chain


def _build(n: int) -> list[chain.Entry]:
    entries: list[chain.Entry] = []
    prev = chain.GENESIS
    start = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    for i in range(1, n + 1):
        e = chain.Entry(
            seq=i, at=start + timedelta(seconds=i), actor=f"user{i % 3}", action="listen",
            target=f"call:{i}", reason="quality review ä", details={"n": i, "x": ["a", None]},
            prev_hash=prev,
        )
        e = dataclasses.replace(e, hash=chain.entry_hash(e))
        entries.append(e)
        prev = e.hash
    return entries


def test_intact_chain_verifies() -> None:
    entries = _build(5)
    verdict = chain.verify(entries, 5, entries[-1].hash)
    assert verdict.ok and verdict.entries == 5 and verdict.problems == ()


def test_empty_chain_with_genesis_head_verifies() -> None:
    assert chain.verify([], 0, chain.GENESIS).ok


def test_serialisation_is_canonical() -> None:
    e = _build(1)[0]
    same_instant = dataclasses.replace(e, at=e.at.astimezone(timezone(timedelta(hours=2))),
                                       details={"x": ["a", None], "n": 1})
    assert chain.serialise(e) == chain.serialise(same_instant)
    assert b'"prev_hash":"' + chain.GENESIS.encode() in chain.serialise(e)
    assert "ä".encode() in chain.serialise(e)


@pytest.mark.parametrize("field,value", [
    ("actor", "mallory"), ("action", "search"), ("target", "call:99"), ("reason", ""),
    ("details", {"n": 99, "x": ["a", None]}),
    ("at", datetime(2026, 1, 1, 12, 0, 2, 123457, tzinfo=UTC)),
])
def test_any_edited_field_is_detected(field: str, value: Any) -> None:
    entries = _build(4)
    entries[1] = dataclasses.replace(entries[1], **{field: value})
    verdict = chain.verify(entries, 4, entries[-1].hash)
    assert not verdict.ok
    assert "entry 2 was altered (hash mismatch)" in verdict.problems


def test_edit_with_recomputed_hash_breaks_the_next_link() -> None:
    entries = _build(4)
    forged = dataclasses.replace(entries[1], reason="nothing to see")
    entries[1] = dataclasses.replace(forged, hash=chain.entry_hash(forged))
    verdict = chain.verify(entries, 4, entries[-1].hash)
    assert verdict.problems == ("entry 3 does not follow its predecessor (prev_hash)",)


def test_deleted_middle_entry_is_detected() -> None:
    entries = _build(5)
    del entries[2]
    verdict = chain.verify(entries, 5, entries[-1].hash)
    assert "entries 3..3 are missing" in verdict.problems
    assert "entry 4 does not follow its predecessor (prev_hash)" in verdict.problems


def test_deleted_last_entry_is_detected_through_the_head() -> None:
    entries = _build(5)
    head_hash = entries[-1].hash
    verdict = chain.verify(entries[:-1], 5, head_hash)
    assert verdict.problems == ("entries 5..5 after the last one are missing",)


def test_head_pointing_elsewhere_is_detected() -> None:
    entries = _build(3)
    assert not chain.verify(entries, 3, "f" * 64).ok
    assert not chain.verify(entries, 2, entries[1].hash).ok


def test_details_refuse_values_jsonb_would_change() -> None:
    with pytest.raises(ValueError):
        chain.canonical_details({"ratio": 0.5})
    with pytest.raises(ValueError):
        chain.canonical_details({"s": "a\x00b"})
    with pytest.raises(ValueError):
        chain.canonical_details({1: "x"})
    assert chain.canonical_details({"t": (1, "a")}) == {"t": [1, "a"]}


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError):
        chain.format_time(datetime(2026, 1, 1))


def test_anchors_catch_a_cut_tail_with_a_rewound_head() -> None:
    entries = _build(6)
    anchor = {6: entries[5].hash}
    assert chain.verify(entries, 6, entries[5].hash, anchor).ok
    # the owner deletes 5..6 and rewinds the head row to entry 4: only the anchor notices
    assert chain.verify(entries[:4], 4, entries[3].hash).ok
    verdict = chain.verify(entries[:4], 4, entries[3].hash, anchor)
    assert verdict.problems == ("anchored entry 6 is missing",)
    assert not chain.verify(entries, 6, entries[5].hash, {2: "0" * 64}).ok


def test_anchor_parsing() -> None:
    digest = "ab" * 32
    assert chain.parse_anchor(f"12:{digest}") == (12, digest)
    for bad in ("12", f"x:{digest}", "12:abc", f"12:{digest.upper()}"):
        with pytest.raises(ValueError):
            chain.parse_anchor(bad)
