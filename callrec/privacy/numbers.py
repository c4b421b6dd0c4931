"""Phone numbers as the privacy operations take them, and their keyed hash.

A requester's number is canonicalised to E.164 (national numbers get the clinic's country
code), matched against calls in every form caller ID may have used, and stored in records
that outlive the calls only as an HMAC-SHA256 under the deployment's secret key."""

from __future__ import annotations

import hashlib
import hmac
import re

from callrec.privacy.errors import Invalid

COUNTRY_CODE = "358"  # Finland, the controller's country (seed document)
_SEPARATORS = re.compile(r"[ \-().]")
#: What is trimmed around a number: ASCII whitespace only, as the database's
#: caller_number_key() trims it (str.strip() would take Unicode spaces too, and the two would
#: disagree on which calls are a number's).
WHITESPACE = " \t\n\r\f\v"
_SHAPE = re.compile(r"^\+?[0-9]{3,20}$")


def canonical_number(text: str) -> str:
    """'040 123 4567' -> '+358401234567'; raise Invalid for anything not a phone number."""
    compact = _SEPARATORS.sub("", text.strip(WHITESPACE))
    if not _SHAPE.match(compact):
        raise Invalid("a phone number has 3-20 digits, optionally a leading +")
    if compact.startswith("+"):
        return compact
    if compact.startswith("00"):
        return "+" + compact[2:]
    if compact.startswith("0"):
        return "+" + COUNTRY_CODE + compact[1:]
    if compact.startswith(COUNTRY_CODE) and len(compact) >= len(COUNTRY_CODE) + 5:
        return "+" + compact  # international without the plus, as some trunks send it
    return compact  # short or service numbers stay as they are


def number_variants(canonical: str) -> tuple[str, ...]:
    """Every spelling of one number caller ID may deliver (international, 00-, national)."""
    forms = [canonical]
    if canonical.startswith("+"):
        forms.append("00" + canonical[1:])
        forms.append(canonical[1:])
        if canonical.startswith("+" + COUNTRY_CODE):
            forms.append("0" + canonical[1 + len(COUNTRY_CODE):])
    # only spellings that mean this number and no other: the same calls are then found by
    # these variants (export, erasure) and by the keyed hash (holds)
    return tuple(f for f in dict.fromkeys(forms) if canonical_number(f) == canonical)


def stored_number_key(raw: str) -> str:
    """The form a stored caller_number is hashed in; hostile caller ID is hashed verbatim."""
    try:
        return canonical_number(raw)
    except Invalid:
        return raw


class NumberHasher:
    """Keyed hash of numbers: the same number always maps to the same opaque value."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the secret key must be at least 32 bytes")
        self._key = key

    def digest(self, canonical: str) -> str:
        return hmac.new(self._key, canonical.encode(), hashlib.sha256).hexdigest()

    def of_stored(self, raw: str) -> str:
        return self.digest(stored_number_key(raw))


def number_target(digest: str) -> str:
    """How a number appears as an audit target: never in clear."""
    return f"number:{digest}"
