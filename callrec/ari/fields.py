"""Typed readers for fields of ARI JSON objects.

Each reader checks one field's presence and type and raises `AriDecodeError` naming the field,
so a malformed message is rejected with a precise reason instead of failing somewhere later.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from callrec.ari.errors import AriDecodeError

_MISSING = object()


def _get(obj: Mapping[str, Any], key: str) -> Any:
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        raise AriDecodeError(f"missing field {key!r}")
    return value


def as_object(value: Any, what: str) -> Mapping[str, Any]:
    """`value` as a JSON object (a mapping with string keys)."""
    # json.loads makes dicts; the ABC check is for the rest and costs several times more
    if type(value) is not dict and not isinstance(value, Mapping):
        raise AriDecodeError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def req_object(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    return as_object(_get(obj, key), f"field {key!r}")


def opt_object(obj: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = obj.get(key)
    return None if value is None else as_object(value, f"field {key!r}")


def req_str(obj: Mapping[str, Any], key: str) -> str:
    value = _get(obj, key)
    if not isinstance(value, str):
        raise AriDecodeError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def req_text(obj: Mapping[str, Any], key: str) -> str:
    """A string that came from outside (a caller ID), made safe to store: NULs dropped
    (PostgreSQL's text refuses them) and lone surrogates (valid JSON escapes, no
    character) replaced by U+FFFD (they cannot be encoded as UTF-8 anywhere)."""
    value = req_str(obj, key)
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            value = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    return value


def opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise AriDecodeError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def _check_int(key: str, value: Any) -> int:
    # bool is an int subclass in Python but never an integer in JSON
    if isinstance(value, bool) or not isinstance(value, int):
        raise AriDecodeError(f"field {key!r} must be an integer, got {type(value).__name__}")
    return value


def req_int(obj: Mapping[str, Any], key: str) -> int:
    return _check_int(key, _get(obj, key))


def opt_int(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    return None if value is None else _check_int(key, value)


def opt_bool(obj: Mapping[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise AriDecodeError(f"field {key!r} must be a boolean, got {type(value).__name__}")
    return value


def req_str_tuple(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = _get(obj, key)
    if not isinstance(value, list | tuple):
        raise AriDecodeError(f"field {key!r} must be a list, got {type(value).__name__}")
    for item in value:
        if not isinstance(item, str):
            raise AriDecodeError(f"field {key!r} must hold strings, got {type(item).__name__}")
    return tuple(value)


def opt_datetime(obj: Mapping[str, Any], key: str) -> datetime | None:
    """An ISO 8601 time with UTC offset as Asterisk writes it (2026-11-28T19:24:45.123+0000)."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise AriDecodeError(f"field {key!r} must be a string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except (ValueError, OverflowError) as exc:
        raise AriDecodeError(f"field {key!r} is not an ISO 8601 time: {value[:40]!r}") from exc
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise AriDecodeError(f"field {key!r} has no UTC offset: {value[:40]!r}")
    return parsed
