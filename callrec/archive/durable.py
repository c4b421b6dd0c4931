"""Making a change to a folder's entries (a file created, renamed in or removed) survive a
power cut: the file's own fsync does not cover its name in the folder."""

from __future__ import annotations

import os
from pathlib import Path


def sync_folder(folder: Path) -> None:
    """fsync a folder, so the entries added to or removed from it so far are on disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
