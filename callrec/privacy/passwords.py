"""Password policy and argon2id hashing (§10: every user has their own password)."""

from __future__ import annotations

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from callrec.privacy.errors import Invalid

MIN_LENGTH = 12
MAX_LENGTH = 1024  # argon2 copes, but an unbounded input is a cheap denial of service

_hasher = argon2.PasswordHasher(type=argon2.Type.ID)
# Verified against when the account does not exist, so both paths cost the same time.
_DUMMY_HASH = _hasher.hash("callrec-no-such-account-placeholder")


def check_policy(password: str, username: str = "") -> None:
    """Raise Invalid if the password is too short, too long or trivially guessable."""
    if len(password) < MIN_LENGTH:
        raise Invalid(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise Invalid(f"a password may have at most {MAX_LENGTH} characters")
    if username and username.lower() in password.lower():
        raise Invalid("a password must not contain the username")
    if len(set(password)) < 4:
        raise Invalid("a password needs more than a few distinct characters")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True if the password matches; a missing account still spends one verification.
    A password longer than any the policy allows is checked as its first MAX_LENGTH + 1
    characters (it cannot match; a megabyte of it would cost its hashing)."""
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password[:MAX_LENGTH + 1]) \
            and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)
