"""Recordings read straight from Asterisk's recording spool, where this process shares it.

Fetching a finished recording over ARI costs a REST request to download it, the transfer of
the whole file through Asterisk's HTTP server, and a second request to delete it: per call,
that was the largest piece of work left for both processes (README.md, "Performance"). Where
callrec sees Asterisk's spool directory (the local stack; a volume shared with the Asterisk
container), the archiver reads the file there and deletes it there instead.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

from callrec.archive.errors import RecordingNotStored
from callrec.errors import ConfigError
from callrec.tasks import BlockingRunner

# The names of recordings callrec asks for (`callrec-<call id>`): anything else is refused
# before it can become part of a path.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_COPY_BUFFER = 1 << 20  # a call's recording is a few hundred kB: one read, one write


class SpoolRecordings:
    """Asterisk's stored recordings as files in `directory` (its `astspooldir/recording`):
    what the archiver needs of the ARI client, without ARI."""

    def __init__(
        self,
        directory: Path,
        extension: str = "wav",
        *,
        run_blocking: BlockingRunner = asyncio.to_thread,
    ) -> None:
        self.directory = directory
        self.extension = extension
        self._run_blocking = run_blocking

    def check(self) -> None:
        """Refuse to start with a spool that is not there (a wrong setting) or that this
        process may not read and clear: every recording would stay there unarchived."""
        if not self.directory.is_dir():
            raise ConfigError(
                f"CALLREC_ASTERISK_RECORDINGS_DIR: {self.directory} is not a directory"
            )
        if not os.access(self.directory, os.R_OK | os.W_OK | os.X_OK):
            raise ConfigError(
                f"CALLREC_ASTERISK_RECORDINGS_DIR: {self.directory} is not readable and "
                f"writable by this service's account (uid {os.geteuid()}): it reads each "
                "recording there and deletes it once archived (make the account a member of "
                "Asterisk's group, the directory group-writable)"
            )

    def path(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a recording name of callrec: {name!r}")
        return self.directory / f"{name}.{self.extension}"

    async def download_recording(self, name: str, dest: Path) -> int:
        """Copy the stored recording into `dest`; `RecordingNotStored` (and no `dest`) if
        Asterisk holds no such recording."""
        return await self._run_blocking(_copy, self.path(name), dest)

    async def delete_stored_recording(self, name: str) -> None:
        try:
            await self._run_blocking(self.path(name).unlink)
        except FileNotFoundError as exc:
            raise RecordingNotStored(f"no stored recording {name} in {self.directory}") from exc


def _copy(src: Path, dest: Path) -> int:
    try:
        source = src.open("rb")
    except FileNotFoundError as exc:
        raise RecordingNotStored(f"no stored recording {src.name} in {src.parent}") from exc
    with source, dest.open("wb") as out:
        shutil.copyfileobj(source, out, _COPY_BUFFER)
        return out.tell()
