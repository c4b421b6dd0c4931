"""What the console needs beyond the CLI's operations, built on the privacy layer's own
authorisation (`_authorize`: roles re-read from the database, denials audited) and its audit
log — the console has no permission rules of its own.

- keyset-paginated call search with every filter of the console,
- one call's metadata, the recording behind a listening grant (Range requests of the player),
- retention status, the disclosure register of a call,
- admin configuration changes (prompts, routing), audited as `config_change`."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from callrec.privacy import audit, purge
from callrec.privacy.core import CALL_COLUMNS, iso, parse_call_id, text_field
from callrec.privacy.errors import Invalid, NotFound, Unavailable
from callrec.privacy.numbers import canonical_number, number_target, number_variants
from callrec.privacy.roles import Actor, Operation
from callrec.privacy.service import PrivacyService
from callrec.web.bundles import BundlesMixin

END_REASONS = ("completed", "no_agent", "abandoned", "unknown_service", "closed", "failed",
               "interrupted")
MODES = {"listen": Operation.CALL_LISTEN, "disclose": Operation.DISCLOSE}
# Prompts and routing are the admin's (roles.py: "admin: accounts, prompts, routing").
CONFIG_OPERATION = Operation.CONFIG_MANAGE


@dataclass(frozen=True)
class CallFilter:
    number: str | None = None
    service_number: str | None = None
    agent: str | None = None
    since: date | None = None
    until: date | None = None  # inclusive day
    end_reason: str | None = None


@dataclass(frozen=True)
class Cursor:
    started_at: datetime
    call_id: UUID

    def encode(self) -> str:
        raw = f"{self.started_at.astimezone(UTC).isoformat()}|{self.call_id}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            when, _, cid = raw.partition("|")
            started = datetime.fromisoformat(when)
            if started.tzinfo is None:
                raise ValueError(when)
            # in UTC, as PostgreSQL will take it: year 1 at +01:00 has no such instant
            return cls(started.astimezone(UTC), UUID(cid))
        except (ValueError, UnicodeDecodeError, OverflowError):
            raise Invalid("not a page cursor") from None


class ConsoleService(BundlesMixin, PrivacyService):
    """The privacy service plus the console's reads, under the same authorisation."""

    def __init__(
        self, pool: asyncpg.Pool, archive_root: Path | None, secret_key: bytes | None,
        *, bundle_dir: Path, retention_months: int = 12, timezone: ZoneInfo | None = None,
    ) -> None:
        super().__init__(pool, archive_root, secret_key, retention_months=retention_months,
                         timezone=timezone)
        self.bundle_dir = bundle_dir

    async def search_page(
        self, actor: Actor, flt: CallFilter, *, after: Cursor | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], Cursor | None]:
        """Calls matching `flt`, newest first, `limit` per page after `after`; audited."""
        limit = max(1, min(limit, 200))
        where = ["NOT EXISTS (SELECT 1 FROM purge_queue q WHERE q.call_id = c.id)"]
        args: list[Any] = []
        target = "calls"

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if flt.number:
            canonical = canonical_number(flt.number)
            target = number_target(self.hasher.digest(canonical))
            where.append(
                "caller_number_key(c.caller_number)"
                f" = ANY({arg(list(number_variants(canonical)))}::text[])")
        if flt.service_number:
            where.append(f"c.service_number = {arg(flt.service_number.strip())}")
        if flt.agent:
            where.append(f"c.agent_name ILIKE {arg(_like_prefix(flt.agent))} ESCAPE '\\'")
        if flt.since:
            where.append(f"c.started_at >= {arg(self.day_start(flt.since))}")
        if flt.until:
            where.append(f"c.started_at < {arg(self.day_end(flt.until))}")
        if flt.end_reason:
            if flt.end_reason not in END_REASONS:
                raise Invalid(f"unknown end reason {flt.end_reason[:40]!r}")
            where.append(f"c.end_reason = {arg(flt.end_reason)}")
        if after is not None:
            where.append(
                f"(c.started_at, c.id) < ({arg(after.started_at)}::timestamptz,"
                f" {arg(after.call_id)}::uuid)"
            )
        sql = (
            f"SELECT {CALL_COLUMNS} FROM calls c LEFT JOIN recordings r ON r.call_id = c.id"  # noqa: S608
            f" WHERE {' AND '.join(where)} ORDER BY c.started_at DESC, c.id DESC"
            f" LIMIT {limit + 1}"
        )
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.CALL_SEARCH, target)
            async with conn.transaction():
                rows = await conn.fetch(sql, *args)
                await audit.append(
                    conn, actor=actor.username, action="search", target=target,
                    details={
                        "service_number": flt.service_number, "agent": flt.agent,
                        "since": flt.since.isoformat() if flt.since else None,
                        "until": flt.until.isoformat() if flt.until else None,
                        "end_reason": flt.end_reason, "page_after": after.encode() if after
                        else None, "results": min(len(rows), limit),
                        # which calls were shown: who saw a person's call can be told later
                        "calls": [str(r["id"]) for r in rows[:limit]],
                    },
                )
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = Cursor(rows[-1]["started_at"], rows[-1]["id"]) if more and rows else None
        return [_call_dict(r) for r in rows], nxt

    async def call_detail(self, actor: Actor, call_id: str | UUID) -> dict[str, Any]:
        """One call's metadata (no audio); audited as a search for that call."""
        cid = parse_call_id(call_id)
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.CALL_SEARCH, f"call:{cid}")
            async with conn.transaction():
                row = await conn.fetchrow(
                    f"SELECT {CALL_COLUMNS}, c.language, c.abandoned_phase,"  # noqa: S608
                    " c.notice_started_at, r.format FROM calls c"
                    " LEFT JOIN recordings r ON r.call_id = c.id WHERE c.id = $1"
                    " AND NOT EXISTS (SELECT 1 FROM purge_queue q WHERE q.call_id = c.id)",
                    cid,
                )
                if row is None:
                    raise NotFound(f"no call {cid}")
                await audit.append(
                    conn, actor=actor.username, action="search", target=f"call:{cid}",
                    details={"view": "call"},
                )
                held = await conn.fetchval(
                    "SELECT count(*) FROM legal_holds WHERE call_id = $1 AND released_at IS NULL",
                    cid,
                )
        data = _call_dict(row)
        data.update({
            "language": row["language"], "abandoned_phase": row["abandoned_phase"],
            "notice_started_at": iso(row["notice_started_at"]), "format": row["format"],
            "call_holds": held,
        })
        return data

    async def grant_recording(
        self, actor: Actor, call_id: UUID, mode: str, purpose: str
    ) -> str:
        """Check the actor may hear this call for `mode` and audit the access with its
        purpose; returns the cleaned purpose to keep in the session's grant."""
        why = text_field(purpose, "purpose")
        if mode == "listen":
            await self.open_recording(actor, call_id, purpose=why)
            return why
        await self._recording_path(actor, call_id, mode, audit_reason=why)
        return why

    async def recording_path(self, actor: Actor, call_id: UUID, mode: str) -> Path:
        """The file behind a grant: roles re-checked (a denial is audited); the access itself
        was audited when the grant was made."""
        return await self._recording_path(actor, call_id, mode)

    async def download_recording(self, actor: Actor, call_id: UUID, purpose: str) -> Path:
        found = await self.open_recording(actor, call_id, purpose=purpose, download=True)
        return found.path

    async def _recording_path(
        self, actor: Actor, call_id: UUID, mode: str, audit_reason: str | None = None
    ) -> Path:
        op = MODES.get(mode)
        if op is None:
            raise Invalid("unknown listening mode")
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, op, f"call:{call_id}")
            row = await conn.fetchrow(
                "SELECT r.path FROM recordings r WHERE r.call_id = $1 AND NOT EXISTS"
                " (SELECT 1 FROM purge_queue q WHERE q.call_id = r.call_id)",
                call_id,
            )
            if row is None:
                raise NotFound(f"no recording for call {call_id}")
            path = purge.archive_file(self.archive_root, row["path"])
            if not path.is_file():
                raise Unavailable(f"the recording file of call {call_id} is missing on disk")
            if audit_reason is not None:
                async with conn.transaction():
                    await audit.append(
                        conn, actor=actor.username, action="listen", target=f"call:{call_id}",
                        reason=f"disclosure preparation: {audit_reason}",
                    )
        return path

    async def disclosures_of(self, actor: Actor, call_id: UUID) -> list[dict[str, Any]]:
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.DISCLOSE, f"call:{call_id}")
            rows = await conn.fetch(
                "SELECT id, from_ms, to_ms, recipient, legal_basis, approved_by, created_by,"
                " created_at, clip_sha256 FROM disclosures WHERE call_id = $1 ORDER BY id",
                call_id,
            )
        return [dict(r) for r in rows]

    async def retention_status(self, actor: Actor) -> dict[str, Any]:
        """Last receipt, what is due now, and when the next call falls due (§9)."""
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.RETENTION_PREVIEW, "retention")
            row = await conn.fetchrow(
                """SELECT now() - make_interval(months => $1) AS cutoff,
                          (SELECT count(*) FROM calls WHERE ended_at < now()
                               - make_interval(months => $1)) AS due_now,
                          (SELECT min(ended_at) FROM calls c WHERE NOT EXISTS
                               (SELECT 1 FROM purge_queue q WHERE q.call_id = c.id)) AS oldest,
                          (SELECT count(*) FROM purge_queue) AS queued,
                          (SELECT count(*) FROM legal_holds WHERE released_at IS NULL) AS holds""",
                self.retention_months,
            )
            receipt = await conn.fetchrow(
                "SELECT seq, at, actor, details FROM audit_log WHERE action = 'retention'"
                " AND NOT coalesce((details->>'dry_run')::boolean, false)"
                " ORDER BY seq DESC LIMIT 1"
            )
            next_due = None
            if row["oldest"] is not None:
                next_due = await conn.fetchval(
                    "SELECT $1::timestamptz + make_interval(months => $2)",
                    row["oldest"], self.retention_months,
                )
        last = None
        if receipt is not None:
            details = audit.json_value(receipt["details"])
            last = {"seq": receipt["seq"], "at": iso(receipt["at"]), "actor": receipt["actor"],
                    "count": details.get("count"), "held_skipped": details.get("held_skipped"),
                    "awaiting_access": details.get("awaiting_access_skipped") or 0,
                    "cutoff": details.get("cutoff"),
                    "not_removed": len(details.get("not_removed") or ())}
        return {
            "months": self.retention_months, "cutoff": iso(row["cutoff"]),
            "due_now": row["due_now"], "queued": row["queued"], "active_holds": row["holds"],
            "oldest_ended_at": iso(row["oldest"]), "next_purge_due": iso(next_due),
            "last_receipt": last,
        }

    async def authorize(self, actor: Actor, op: Operation, target: str) -> None:
        """Only the check (a denial is audited): for pages that show no data yet."""
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, op, target)

    async def last_verification(self, actor: Actor) -> dict[str, Any] | None:
        """The newest audit chain verification recorded in the log (who, when, result)."""
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.AUDIT_VERIFY, "audit")
            row = await conn.fetchrow(
                "SELECT seq, at, actor, reason, details FROM audit_log"
                " WHERE action = 'audit_verify' ORDER BY seq DESC LIMIT 1"
            )
        if row is None:
            return None
        details = audit.json_value(row["details"])
        return {"seq": row["seq"], "at": row["at"], "actor": row["actor"],
                "ok": row["reason"] == "intact", "entries": details.get("entries"),
                "head_seq": details.get("head_seq"), "head_hash": details.get("head_hash"),
                "problems": details.get("problems") or []}

    async def authorize_config(self, actor: Actor, target: str) -> None:
        """Admins change prompts and routing; anyone else is refused (audited)."""
        await self.authorize(actor, CONFIG_OPERATION, target)

    async def config_changed(
        self, actor: Actor, target: str, reason: str, details: dict[str, Any]
    ) -> None:
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, CONFIG_OPERATION, target)
            async with conn.transaction():
                await audit.append(conn, actor=actor.username, action="config_change",
                                   target=target, reason=reason, details=details)


def _like_prefix(text: str) -> str:
    cleaned = text.strip()[:100]
    return cleaned.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _call_dict(r: Any) -> dict[str, Any]:
    return {
        "call_id": str(r["id"]), "caller_number": r["caller_number"],
        "caller_name": r["caller_name"], "service_number": r["service_number"],
        "service_name": r["service_name"], "agent_name": r["agent_name"],
        "started_at": iso(r["started_at"]), "answered_at": iso(r["answered_at"]),
        "ended_at": iso(r["ended_at"]), "end_reason": r["end_reason"],
        "notice_prompt": r["notice_prompt"], "notice_language": r["notice_language"],
        "notice_completed": r["notice_completed"], "has_recording": r["path"] is not None,
        "recording_sha256": r["sha256"], "duration_ms": r["duration_ms"],
        "bytes": r["bytes"],
    }
