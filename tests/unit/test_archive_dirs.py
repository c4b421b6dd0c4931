"""The archive's day folders are made durable level by level before a recording goes in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from callrec.archive import files


def test_each_new_folder_is_synced_in_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    (tmp_path / "2026").mkdir()  # the year exists: only month and day are new
    day = tmp_path / "2026" / "11" / "30"
    files._make_dirs(day)
    assert day.is_dir() and oct(day.stat().st_mode & 0o777) == oct(files.DIR_MODE)
    assert synced == [str(tmp_path / "2026"), str(tmp_path / "2026" / "11")]
    synced.clear()
    files._make_dirs(day)  # there already: nothing to do
    assert synced == []
