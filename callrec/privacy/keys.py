"""The deployment's secret key for keyed number hashes (CALLREC_SECRET_KEY[_FILE])."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from callrec.errors import ConfigError

MIN_KEY_BYTES = 32


def load_secret_key(env: Mapping[str, str] | None = None) -> bytes:
    """The key from CALLREC_SECRET_KEY (text) or the file CALLREC_SECRET_KEY_FILE.

    The file must not be readable by others. Changing the key makes existing number holds
    and case hashes unmatchable, so keep it with the database backups' secrets."""
    env = os.environ if env is None else env
    text = env.get("CALLREC_SECRET_KEY", "")
    file = env.get("CALLREC_SECRET_KEY_FILE", "")
    if text and file:
        raise ConfigError("set only one of CALLREC_SECRET_KEY and CALLREC_SECRET_KEY_FILE")
    if file:
        path = Path(file)
        try:
            mode = path.stat().st_mode
            data = path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read CALLREC_SECRET_KEY_FILE: {exc.strerror}") from exc
        if mode & (stat.S_IRWXO):
            raise ConfigError("CALLREC_SECRET_KEY_FILE must not be accessible to others")
    elif text:
        data = text.encode()
    else:
        raise ConfigError(
            "set CALLREC_SECRET_KEY or CALLREC_SECRET_KEY_FILE "
            "(e.g. the output of: python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    if b"change-me" in data:
        raise ConfigError("the secret key is still the example of deploy/env.example")
    if len(data) < MIN_KEY_BYTES:
        raise ConfigError(f"the secret key must be at least {MIN_KEY_BYTES} bytes")
    return data
