"""Export and disclosure bundles made in the console, kept for their maker to download.

The privacy layer writes the zip (atomically) into the console's private bundle directory
under a name the server makes up; the download URL carries only the bundle's random id, and
only the account that made the bundle, still holding the role that made it, may fetch it
(audited). Bundles are deleted after `KEEP`."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import structlog

from callrec.privacy import audit
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

    async def register_bundle(
        self, actor: Actor, bundle_id: UUID, kind: str, ref: str, path: Path, sha256: str
    ) -> Bundle:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO web_bundles (id, kind, ref, file_name, created_by, expires_at,"
                " sha256) VALUES ($1, $2, $3, $4, $5, now() + $6::interval, $7)",
                bundle_id, kind, ref, path.name, actor.username, KEEP, sha256,
            )
        return Bundle(bundle_id, kind, ref, path, sha256)

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
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "DELETE FROM web_bundles WHERE expires_at <= now() RETURNING file_name"
            )
        for row in rows:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread((self.bundle_dir / row["file_name"]).unlink)
        if rows:
            log.info("web.bundles_removed", count=len(rows))
        return len(rows)
