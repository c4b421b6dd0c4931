"""Phone-number canonicalisation, spellings and the keyed hash."""

from __future__ import annotations

import pytest

from callrec.privacy.errors import Invalid
from callrec.privacy.numbers import (
    NumberHasher,
    canonical_number,
    number_target,
    number_variants,
    stored_number_key,
)


@pytest.mark.parametrize("text,expected", [
    ("040 123 4567", "+358401234567"),
    ("+358 40 123-4567", "+358401234567"),
    ("00358401234567", "+358401234567"),
    ("(09) 123 456", "+3589123456"),
    ("+46701234567", "+46701234567"),
    ("358401234567", "+358401234567"),
    ("112", "112"),
])
def test_canonical_forms(text: str, expected: str) -> None:
    assert canonical_number(text) == expected


@pytest.mark.parametrize("bad", ["", "abc", "040-12a", "+", "12", "1" * 21, "'; DROP TABLE",
                                 "+358 40\n123", "0401234567; 0501234567"])
def test_malformed_numbers_are_refused(bad: str) -> None:
    with pytest.raises(Invalid):
        canonical_number(bad)


def test_variants_cover_the_spellings_caller_id_uses() -> None:
    assert set(number_variants("+358401234567")) == {
        "+358401234567", "00358401234567", "358401234567", "0401234567"}
    assert number_variants("112") == ("112",)
    assert set(number_variants("+46701234567")) == {"+46701234567", "0046701234567"}


@pytest.mark.parametrize("canonical", ["+358401234567", "+46701234567", "112", "+3589123"])
def test_every_variant_maps_back_to_its_number(canonical: str) -> None:
    hasher = NumberHasher(b"k" * 32)
    for variant in number_variants(canonical):
        assert canonical_number(variant) == canonical
        assert hasher.of_stored(variant) == hasher.digest(canonical)


def test_keyed_hash_is_stable_keyed_and_opaque() -> None:
    a = NumberHasher(b"k" * 32)
    b = NumberHasher(b"j" * 32)
    d = a.digest("+358401234567")
    assert d == a.digest("+358401234567") == a.of_stored("040 1234567")
    assert d != b.digest("+358401234567")
    assert len(d) == 64 and "358401234567" not in d
    assert number_target(d) == f"number:{d}"
    with pytest.raises(ValueError):
        NumberHasher(b"short")


def test_hostile_stored_caller_id_is_hashed_verbatim() -> None:
    assert stored_number_key("anonymous") == "anonymous"
    assert stored_number_key("0401234567") == "+358401234567"
