"""Zip bundles (access exports, disclosures) written whole or not at all."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeAlias, TypeVar

import asyncpg
import structlog

from callrec.archive.durable import sync_folder
from callrec.privacy.errors import Conflict, Invalid
from callrec.tasks import to_the_end

P = ParamSpec("P")
R = TypeVar("R")

log = structlog.get_logger(__name__)

_CHUNK = 1 << 20

#: Called in the transaction that registers a bundle, with what the bundle is of
#: ("case:<n>", "disclosure:<n>") and its SHA-256: the console keeps its own record of the
#: bundle in the same commit, so that a bundle made is never one it cannot hand out.
Keeper: TypeAlias = Callable[[asyncpg.Connection, str, str], Awaitable[None]]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class BundleWriter:
    """Collects members in a temp file next to `out`; `commit()` renames it into place.

    Use as a context manager: leaving it without commit (an error, a cancellation) removes the
    temp file, so a reader never sees a partial zip."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._tmp: Path | None = None
        self._zip: zipfile.ZipFile | None = None
        self._files: list[dict[str, Any]] = []

    def __enter__(self) -> BundleWriter:
        parent = self.out.parent
        if not parent.is_dir():
            raise Invalid(f"output directory does not exist: {parent}")
        if self.out.exists():
            raise Conflict(f"refusing to overwrite {self.out}")
        try:
            fd, name = tempfile.mkstemp(prefix=f".{self.out.name}.", suffix=".part", dir=parent)
        except OSError as exc:
            raise Invalid(f"cannot write to {parent}: {exc.strerror}") from exc
        os.close(fd)
        self._tmp = Path(name)
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_DEFLATED)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def _open_zip(self) -> zipfile.ZipFile:
        if self._zip is None:
            raise RuntimeError("the bundle is not open")
        return self._zip

    @property
    def files(self) -> list[dict[str, Any]]:
        return list(self._files)

    def add_file(self, name: str, source: Path, **extra: Any) -> str:
        """Copy a file in; returns the SHA-256 of the bytes actually written."""
        archive = self._open_zip()
        digest = hashlib.sha256()
        size = 0
        with source.open("rb") as src, archive.open(name, "w") as dst:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                dst.write(chunk)
        sha = digest.hexdigest()
        self._files.append({"name": name, "sha256": sha, "bytes": size, **extra})
        return sha

    def add_bytes(self, name: str, data: bytes, *, listed: bool = True) -> str:
        self._open_zip().writestr(name, data)
        sha = hashlib.sha256(data).hexdigest()
        if listed:
            self._files.append({"name": name, "sha256": sha, "bytes": len(data)})
        return sha

    def add_manifest(self, manifest: dict[str, Any]) -> str:
        data = json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=True).encode()
        return self.add_bytes("manifest.json", data, listed=False)

    def commit(self) -> Path:
        """Finish the zip, fsync it and rename it to `out` (atomic on one filesystem)."""
        self._open_zip().close()
        self._zip = None
        if self._tmp is None:
            raise RuntimeError("the bundle is not open")
        with self._tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(self._tmp, 0o600)
        if self.out.exists():
            raise Conflict(f"refusing to overwrite {self.out}")
        os.replace(self._tmp, self.out)
        self._tmp = None
        sync_folder(self.out.parent)
        return self.out


async def write_to_the_end(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """`asyncio.to_thread` for a bundle's writer: cancelled, it still waits for the thread
    (which cannot be stopped) before raising, so that cleanup sees the file it renamed."""
    return await to_the_end(asyncio.to_thread(fn, *args, **kwargs))


@contextlib.asynccontextmanager
async def withdrawn_unless_registered(out: Path) -> AsyncIterator[None]:
    """Around a bundle's writing and the transaction that registers and audits it: if that
    transaction does not commit (the database gone, a cancellation), the zip written to
    `out` is removed, so that no bundle of personal data is left without its audit entry.

    The zip is written before the commit because an answered access request drops the clear
    number: a commit without its zip could not be done again."""
    if await asyncio.to_thread(out.exists):
        raise Conflict(f"refusing to overwrite {out}")
    try:
        yield
    except (Exception, asyncio.CancelledError):
        try:
            # on the loop, not a thread: a second cancellation must not cut the cleanup
            out.unlink()  # noqa: ASYNC240 (one unlink, on the failure path only)
        except FileNotFoundError:
            pass  # the failure came before the zip was in place
        except OSError as exc:
            log.error("bundle_not_withdrawn", out=str(out), error=exc.strerror)
        else:
            log.warning("bundle_withdrawn", out=str(out),
                        why="its register and audit entry did not commit")
        raise
