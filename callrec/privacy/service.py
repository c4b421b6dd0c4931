"""The privacy service layer (§8-§11), shared by the CLI and the web console.

Construct with an asyncpg pool connected as the service's role (callrec_app), the archive
root and the secret key: `PrivacyService(pool, archive_root, secret_key)`; nothing happens
until a method is awaited. Every method takes the acting `Actor`, re-checks its account and
roles in the database, audits a denial and raises `Forbidden` (403)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import asyncpg
import structlog

from callrec.privacy import audit, chain
from callrec.privacy.accounts import AccountsMixin, UserInfo
from callrec.privacy.cases import Case, CasesMixin, ExportResult
from callrec.privacy.core import ServiceCore, iso
from callrec.privacy.disclosures import Disclosure, DisclosuresMixin
from callrec.privacy.errors import (
    Invalid,
)
from callrec.privacy.holds import Hold, HoldsMixin
from callrec.privacy.retention import RetentionMixin, RetentionReport, report_dict
from callrec.privacy.reviews import CallSummary, RecordingFile, ReviewsMixin
from callrec.privacy.roles import Actor, Operation

__all__ = [
    "Actor", "CallSummary", "Case", "Disclosure", "ExportResult", "Hold", "PrivacyService",
    "RecordingFile", "RetentionReport", "UserInfo", "report_dict",
    "run_retention",
]

log = structlog.get_logger(__name__)


class PrivacyService(
    AccountsMixin, ReviewsMixin, HoldsMixin, CasesMixin, RetentionMixin, DisclosuresMixin,
    ServiceCore,
):
    """Accounts, audit, holds, requests, retention and disclosures over one asyncpg pool."""

    async def audit_show(self, actor: Actor, flt: audit.AuditFilter) -> list[chain.Entry]:
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.AUDIT_SHOW, "audit")
            try:
                entries = await audit.show(conn, flt)
            except ValueError as exc:
                raise Invalid(str(exc)) from None
            async with conn.transaction():
                await audit.append(
                    conn, actor=actor.username, action="audit_view", target="audit",
                    details={
                        "actor": flt.actor, "action": flt.action, "target": flt.target,
                        "since": iso(flt.since), "until": iso(flt.until),
                        "results": len(entries),
                    },
                )
        return entries

    async def audit_verify(
        self, actor: Actor, anchors: Mapping[int, str] | None = None
    ) -> chain.Verdict:
        """Verify the chain; `anchors` are (seq -> hash) heads kept outside the database."""
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.AUDIT_VERIFY, "audit")
            verdict = await audit.verify(conn, anchors)
            if not verdict.ok:
                log.error("audit_chain_broken", problems=list(verdict.problems))
            async with conn.transaction():
                await audit.append(
                    conn, actor=actor.username, action="audit_verify", target="audit",
                    reason="intact" if verdict.ok else "BROKEN",
                    details={"entries": verdict.entries, "head_seq": verdict.head_seq,
                             "head_hash": verdict.head_hash,
                             "problems": list(verdict.problems[:20])},
                )
        return verdict


async def run_retention(
    pool: asyncpg.Pool,
    archive_root: Path,
    secret_key: bytes | None,
    *,
    months: int = 12,
) -> RetentionReport:
    """The daily job: one retention run as the service itself (actor `system:retention`)."""
    service = PrivacyService(pool, archive_root, secret_key, retention_months=months)
    return await service.run_retention(Actor.system("retention"))
