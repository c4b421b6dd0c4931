"""Disclosure to authorities (§8): a clip of only the necessary time."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import structlog

from callrec.privacy import audit, clips, purge
from callrec.privacy.bundles import (
    BundleWriter,
    Keeper,
    sha256_file,
    withdrawn_unless_registered,
    write_to_the_end,
)
from callrec.privacy.core import (
    CALL_COLUMNS,
    ServiceCore,
    iso,
    parse_call_id,
    text_field,
)
from callrec.privacy.errors import (
    NotFound,
    Unavailable,
)
from callrec.privacy.roles import Actor, Operation, Role

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Disclosure:
    id: int
    call_id: UUID
    out: Path
    from_ms: int
    to_ms: int
    start_sample: int
    end_sample: int
    original_sha256: str
    clip_sha256: str


class DisclosuresMixin(ServiceCore):
    """Cut, register and audit disclosure clips."""

    # -- disclosure (§8) -----------------------------------------------------------------
    async def disclose(
        self,
        actor: Actor,
        *,
        call_id: str | UUID,
        from_offset: str,
        to_offset: str,
        recipient: str,
        legal_basis: str,
        approved_by: str,
        out: Path,
        keep: Keeper | None = None,
    ) -> Disclosure:
        """Cut [from, to) of one recording into a zip with a manifest; register and audit."""
        cid = parse_call_id(call_id)
        from_ms, to_ms = clips.parse_offset(from_offset), clips.parse_offset(to_offset)
        to_whom = text_field(recipient, "recipient")
        basis = text_field(legal_basis, "legal basis", 1000)
        root = self.archive_root
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.DISCLOSE, f"call:{cid}")
            approver = await self._active_user(conn, approved_by, Role.PRIVACY)
            async with withdrawn_unless_registered(out), conn.transaction():
                call = await conn.fetchrow(
                    f"SELECT {CALL_COLUMNS} FROM calls c LEFT JOIN recordings r"  # noqa: S608
                    " ON r.call_id = c.id WHERE c.id = $1 FOR SHARE OF c",
                    cid,
                )
                if call is None or await purge.queued_ids(conn, [cid]):
                    raise NotFound(f"no call {cid}")
                if call["path"] is None:
                    raise NotFound(f"call {cid} has no recording")
                source = purge.archive_file(root, call["path"])
                if not source.is_file():
                    raise Unavailable(f"the recording file of call {cid} is missing on disk")
                info = await asyncio.to_thread(clips.probe, source)
                rng = clips.clip_range(from_ms, to_ms, info.sample_rate, info.frames)
                with tempfile.TemporaryDirectory(prefix="callrec-clip-") as tmp:
                    clip_path = Path(tmp) / "clip.wav"
                    original_sha, clip_sha = await asyncio.to_thread(
                        self._cut, source, clip_path, rng
                    )
                    register = await conn.fetchrow(
                        "INSERT INTO disclosures (call_id, from_ms, to_ms, start_sample,"
                        " end_sample, sample_rate, recipient, legal_basis, approved_by,"
                        " created_by, original_sha256, clip_sha256) VALUES ($1, $2, $3, $4, $5,"
                        " $6, $7, $8, $9, $10, $11, $12) RETURNING id, created_at",
                        cid, rng.from_ms, rng.to_ms, rng.start_sample, rng.end_sample,
                        rng.sample_rate, to_whom, basis, approver, actor.username, original_sha,
                        clip_sha,
                    )
                    manifest = {
                        "kind": "disclosure", "disclosure": register["id"],
                        "created_at": iso(register["created_at"]), "created_by": actor.username,
                        "approved_by": approver, "recipient": to_whom, "legal_basis": basis,
                        "call": {"call_id": str(cid), "started_at": iso(call["started_at"]),
                                 "ended_at": iso(call["ended_at"]),
                                 "service_number": call["service_number"]},
                        "original": {"sha256": original_sha, "archived_sha256": call["sha256"],
                                     "sample_rate": info.sample_rate, "frames": info.frames,
                                     "duration_ms": info.frames * 1000 // info.sample_rate},
                        "clip": {"file": "clip.wav", "sha256": clip_sha, "from_ms": rng.from_ms,
                                 "to_ms": rng.to_ms, "from": clips.format_offset(rng.from_ms),
                                 "to": clips.format_offset(rng.to_ms),
                                 "start_sample": rng.start_sample, "end_sample": rng.end_sample,
                                 "duration_ms": rng.duration_ms},
                    }
                    await audit.append(
                        conn, actor=actor.username, action="disclose", target=f"call:{cid}",
                        reason=basis,
                        details={"disclosure": register["id"], "recipient": to_whom,
                                 "approved_by": approver, "from_ms": rng.from_ms,
                                 "to_ms": rng.to_ms, "original_sha256": original_sha,
                                 "clip_sha256": clip_sha},
                    )
                    # the zip appears only once everything above succeeded; the register row
                    # and audit entry commit right after it, or the zip is withdrawn
                    zip_sha = await write_to_the_end(
                        self._bundle_disclosure, out, clip_path, manifest)
                    if keep is not None:
                        await keep(conn, f"disclosure:{register['id']}", zip_sha)
        log.info("disclosure", call=str(cid), disclosure=register["id"])
        return Disclosure(register["id"], cid, out, rng.from_ms, rng.to_ms, rng.start_sample,
                          rng.end_sample, original_sha, clip_sha)

    @staticmethod
    def _cut(source: Path, clip_path: Path, rng: clips.ClipRange) -> tuple[str, str]:
        original_sha = sha256_file(source)
        clips.cut_clip(source, clip_path, rng)
        return original_sha, sha256_file(clip_path)

    @staticmethod
    def _bundle_disclosure(out: Path, clip_path: Path, manifest: dict[str, Any]) -> str:
        with BundleWriter(out) as bundle:
            bundle.add_file("clip.wav", clip_path)
            bundle.add_manifest({**manifest, "files": bundle.files})
            bundle.commit()
        return sha256_file(out)
