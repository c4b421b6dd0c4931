"""Loading the secret key for keyed number hashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from callrec.errors import ConfigError
from callrec.privacy.keys import load_secret_key

KEY = "k" * 40


def test_key_from_environment_text() -> None:
    assert load_secret_key({"CALLREC_SECRET_KEY": KEY}) == KEY.encode()


def test_key_from_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    assert load_secret_key({"CALLREC_SECRET_KEY_FILE": str(path)}) == KEY.encode()
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="others"):
        load_secret_key({"CALLREC_SECRET_KEY_FILE": str(path)})


@pytest.mark.parametrize("env,message", [
    ({}, "set CALLREC_SECRET_KEY"),
    ({"CALLREC_SECRET_KEY": "short"}, "at least 32 bytes"),
    ({"CALLREC_SECRET_KEY": KEY, "CALLREC_SECRET_KEY_FILE": "/x"}, "only one"),
    ({"CALLREC_SECRET_KEY_FILE": "/nonexistent/key"}, "cannot read"),
    # deploy/env.example's, 37 bytes: long enough, and in every clone of the repository
    ({"CALLREC_SECRET_KEY": "change-me-to-64-random-hex-characters"}, "example"),
])
def test_bad_key_configuration(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_secret_key(env)
