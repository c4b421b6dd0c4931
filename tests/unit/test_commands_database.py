"""The commands say what is wrong (a database they cannot reach, prompts they cannot find)
in their message and exit code, without a traceback; the schema migrates only as its owner."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from callrec.cli import main
from devstack.ports import free_block


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """The commands configure logging onto the stderr pytest captures for this test only."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def closed_port() -> int:
    return free_block(1, start=41000, end=49000)  # nothing listens there


@pytest.mark.parametrize("url", [
    "postgresql://callrec_owner:x@127.0.0.1:{port}/callrec",  # refused
    "postgresql://callrec_owner:x@[::1/callrec",  # not a URL asyncpg can parse
])
def test_migrate_with_an_unreachable_database(
    url: str, closed_port: int, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CALLREC_DATABASE_OWNER_URL", url.format(port=closed_port))
    assert main(["db", "migrate"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("callrec: cannot connect to the database as its owner:")
    assert "Traceback" not in err


def test_migrate_does_not_fall_back_to_the_services_role(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CALLREC_DATABASE_OWNER_URL", raising=False)
    monkeypatch.setenv("CALLREC_DATABASE_URL", "postgresql://callrec_app:x@127.0.0.1:1/callrec")
    assert main(["db", "migrate"]) == 1
    assert "set CALLREC_DATABASE_OWNER_URL" in capsys.readouterr().err


@pytest.mark.parametrize("url", [
    "postgresql://callrec_app:x@127.0.0.1:{port}/callrec",
    "postgresql://callrec_app:x@[::1/callrec",
    "postgresql://callrec_app:x@127.0.0.1:{port}/callrec?sslmode=sometimes",
])
def test_privacy_commands_with_an_unreachable_database(
    url: str, closed_port: int, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CALLREC_DATABASE_URL", url.format(port=closed_port))
    monkeypatch.setenv("CALLREC_USER", "dpo")
    assert main(["audit", "verify"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("callrec: cannot connect to the database:"), err


def test_prompts_list_fails_when_it_finds_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CALLREC_PROMPTS_DIR", f"{tmp_path}/absent")
    monkeypatch.setenv("CALLREC_PROMPT_CACHE_DIR", f"{tmp_path}/cache")
    assert main(["prompts", "list"]) == 1
    assert "prompts directory does not exist" in capsys.readouterr().err
