"""Export and disclosure bundles made in the console, kept for their maker to download.

The privacy layer writes the zip (atomically) into the console's private bundle directory
under a name the server makes up; the download URL carries only the bundle's random id, and
only the account that made the bundle, still holding the role that made it, may fetch it
(audited). Bundles are deleted after `KEEP`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from callrec.privacy import audit
from callrec.privacy.bundles import Keeper
from callrec.privacy.core import ServiceCore
from callrec.privacy.errors import NotFound, Unavailable
from callrec.privacy.roles import Actor, Operation

log = structlog.get_logger(__name__)

KEEP = timedelta(hours=24)
_KIND_OPERATION = {"access-export": Operation.REQUEST_EXPORT, "disclosure": Operation.DISCLOSE}


@dataclass(frozen=True)
class Bundle:
    id: UUID
    kind: str
    ref: str
    path: Path
    sha256: str

    @property
    def download_name(self) -> str:
        return f"{self.kind}-{self.ref.replace(':', '-')}.zip"


class BundlesMixin(ServiceCore):
    """Needs `bundle_dir` (a private directory) set by the console."""

    bundle_dir: Path

    def new_bundle_path(self, kind: str) -> tuple[UUID, Path]:
        bundle_id = uuid.uuid4()
        self.bundle_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return bundle_id, self.bundle_dir / f"{kind}-{bundle_id}.zip"

    def bundle_keeper(self, actor: Actor, bundle_id: UUID, kind: str, path: Path) -> Keeper:
        """What the privacy layer calls in the transaction that registers the bundle: the
        console's own row commits with it or not at all."""

        async def keep(conn: asyncpg.Connection, ref: str, sha256: str) -> None:
            await conn.execute(
                "INSERT INTO web_bundles (id, kind, ref, file_name, created_by, expires_at,"
                " sha256) VALUES ($1, $2, $3, $4, $5, now() + $6::interval, $7)",
                bundle_id, kind, ref, path.name, actor.username, KEEP, sha256,
            )

        return keep

    async def bundles_by(self, actor: Actor) -> list[dict[str, Any]]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, kind, ref, created_at, expires_at, sha256 FROM web_bundles"
                " WHERE created_by = $1 AND expires_at > now() ORDER BY created_at DESC",
                actor.username,
            )
        return [dict(r) for r in rows]

    async def open_bundle(self, actor: Actor, bundle_id: UUID) -> Bundle:
        """The maker's own bundle, with the role that made it; the download is audited."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM web_bundles WHERE id = $1 AND expires_at > now()", bundle_id
            )
            op = _KIND_OPERATION[row["kind"]] if row is not None else Operation.REQUEST_EXPORT
            await self._authorize(conn, actor, op, f"bundle:{bundle_id}")
            if row is None or row["created_by"] != actor.username:
                raise NotFound("no such bundle (or it has expired)")
            path = self.bundle_dir / row["file_name"]
            if not path.is_file():
                raise Unavailable("the bundle file is gone; make it again")
            async with conn.transaction():
                await audit.append(
                    conn, actor=actor.username, action="download", target=row["ref"],
                    reason=f"{row['kind']} bundle", details={"bundle": str(bundle_id),
                                                             "sha256": row["sha256"]},
                )
        return Bundle(row["id"], row["kind"], row["ref"], path, row["sha256"])

    async def remove_expired_bundles(self) -> int:
        """Expired bundles, and any file of the bundle directory older than `KEEP` that no
        row names (a zip or temp file left by a crash of the process while it was written)."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "DELETE FROM web_bundles WHERE expires_at <= now() RETURNING file_name"
            )
            known = {r["file_name"] for r in await conn.fetch("SELECT file_name FROM web_bundles")}
        expired = [row["file_name"] for row in rows]
        stray = await asyncio.to_thread(self._stray_bundle_files, known)
        for name in [*expired, *stray]:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread((self.bundle_dir / name).unlink)
        if expired or stray:
            log.info("web.bundles_removed", count=len(expired), stray=len(stray))
        return len(expired) + len(stray)

    def _stray_bundle_files(self, known: set[str]) -> list[str]:
        cutoff = time.time() - KEEP.total_seconds()
        try:
            entries = list(os.scandir(self.bundle_dir))
        except FileNotFoundError:
            return []
        stray = []
        for entry in entries:
            try:
                old = entry.is_file(follow_symlinks=False) and \
                    entry.stat(follow_symlinks=False).st_mtime < cutoff
            except FileNotFoundError:
                continue
            if old and entry.name not in known:
                stray.append(entry.name)
        return stray
