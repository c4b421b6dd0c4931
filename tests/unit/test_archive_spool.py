"""Recordings read from Asterisk's spool directory: what the archiver needs of ARI, as files."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from callrec.archive.errors import RecordingNotStored
from callrec.archive.spool import SpoolRecordings
from callrec.errors import ConfigError

pytestmark = pytest.mark.timeout(10)
NAME = "callrec-8d6f4a52-5b0e-4f53-9a3c-2f1e0c9b7a11"


def test_a_stored_recording_is_copied_then_deleted(tmp_path: Path) -> None:
    spool = SpoolRecordings(tmp_path / "recording")
    spool.directory.mkdir()
    data = bytes(range(256)) * 1500  # 384 kB: more than one copy buffer's worth is fine too
    (spool.directory / f"{NAME}.wav").write_bytes(data)
    dest = tmp_path / "out.partial"
    assert asyncio.run(spool.download_recording(NAME, dest)) == len(data)
    assert dest.read_bytes() == data
    assert (spool.directory / f"{NAME}.wav").exists(), "kept until the archive has it"
    asyncio.run(spool.delete_stored_recording(NAME))
    assert not (spool.directory / f"{NAME}.wav").exists()


def test_a_missing_recording_is_not_found_and_writes_nothing(tmp_path: Path) -> None:
    spool = SpoolRecordings(tmp_path)
    dest = tmp_path / "out.partial"
    with pytest.raises(RecordingNotStored):
        asyncio.run(spool.download_recording(NAME, dest))
    assert not dest.exists()
    with pytest.raises(RecordingNotStored):
        asyncio.run(spool.delete_stored_recording(NAME))


@pytest.mark.parametrize("name", ["", "../etc/passwd", "a/b", ".hidden", "x" * 200, "a b",
                                  "callrec-1\x00", "/abs"])
def test_names_callrec_never_gives_are_refused_before_any_path(tmp_path: Path, name: str) -> None:
    spool = SpoolRecordings(tmp_path / "recording")
    with pytest.raises(ValueError, match="not a recording name"):
        spool.path(name)
    with pytest.raises(ValueError):
        asyncio.run(spool.download_recording(name, tmp_path / "out"))
    with pytest.raises(ValueError):
        asyncio.run(spool.delete_stored_recording(name))


def test_a_spool_that_is_not_there_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        SpoolRecordings(tmp_path / "nowhere").check()
    SpoolRecordings(tmp_path).check()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the check as another account")
def test_a_spool_this_account_may_not_clear_stops_the_start() -> None:
    from devstack.account import closed_directory
    from devstack.paths import REPO, venv_python

    if closed_directory(REPO) is not None:
        pytest.skip("the clone is closed to other accounts")
    nobody = pwd.getpwnam("nobody")
    spool = Path(tempfile.mkdtemp(prefix="callrec-spool-"))
    try:
        spool.chmod(0o755)  # Asterisk's, readable by others but not writable
        check = ("from pathlib import Path; from callrec.archive.spool import SpoolRecordings; "
                 f"SpoolRecordings(Path({str(spool)!r})).check()")
        as_nobody = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                     "--clear-groups", str(venv_python()), "-c", check]

        def run_check() -> subprocess.CompletedProcess[str]:
            return subprocess.run(as_nobody, cwd=REPO, capture_output=True, text=True,
                                  timeout=30, env={**os.environ, "HOME": "/nonexistent"})

        out = run_check()
        assert out.returncode != 0
        assert f"{spool} is not readable and writable by this service's account" in out.stderr
        os.chown(spool, nobody.pw_uid, nobody.pw_gid)  # now it may
        out = run_check()
        assert out.returncode == 0, out.stderr
    finally:
        shutil.rmtree(spool)
