"""Right of access and right to erasure (§11)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from callrec.privacy import audit, purge
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
    text_field,
)
from callrec.privacy.deadlines import due_date, is_overdue, received_date
from callrec.privacy.errors import (
    Conflict,
    NotFound,
    Unavailable,
)
from callrec.privacy.numbers import canonical_number, number_target, number_variants
from callrec.privacy.roles import Actor, Operation

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Case:
    id: int
    kind: str
    number_hmac: str
    received_on: date
    due_on: date
    verified_by: str
    verification_method: str
    opened_by: str
    status: str
    closed_at: datetime | None
    refusal_reason: str | None
    result: dict[str, Any]
    overdue: bool


@dataclass(frozen=True)
class ExportResult:
    case_id: int
    out: Path
    calls: int
    files: int
    missing: tuple[str, ...]
    zip_sha256: str


_PLAIN_NUMBER = re.compile(r"^\+?[0-9]{1,20}$")
_EXPORT_FIELDS = (
    "call_id", "caller_number", "caller_name", "started_at", "answered_at", "ended_at",
    "service_number", "service_name", "agent_name", "notice_version", "notice_language",
    "notice_completed", "recording_file", "recording_status", "recording_sha256", "duration_ms",
)


def _csv_cell(value: Any) -> Any:
    """Defuse text a spreadsheet would run as a formula (hostile caller ID, say); a plain
    phone number like +358401234567 is left as it is."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") and not (
        _PLAIN_NUMBER.match(value)
    ):
        return "'" + value
    return value


class CasesMixin(ServiceCore):
    """Access requests with their export bundle; erasure requests."""

    @staticmethod
    def _case(row: Mapping[str, Any], today: date) -> Case:
        return Case(
            row["id"], row["kind"], row["number_hmac"], row["received_on"], row["due_on"],
            row["verified_by"], row["verification_method"], row["opened_by"], row["status"],
            row["closed_at"], row["refusal_reason"], audit.json_value(row["result"]),
            row["closed_at"] is None and is_overdue(row["due_on"], today),
        )

    async def open_access_request(
        self,
        actor: Actor,
        *,
        number: str,
        verified_by: str,
        method: str,
        received: str | None = None,
    ) -> Case:
        canonical = canonical_number(number)
        digest = self.hasher.digest(canonical)
        how = text_field(method, "verification method")
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.REQUEST_OPEN, number_target(digest))
            verifier = await self._active_user(conn, verified_by)
            today = await self._today(conn)
            got = received_date(received, today)
            async with conn.transaction():
                row = await conn.fetchrow(
                    "INSERT INTO privacy_requests (kind, number_hmac, number, received_on, due_on,"
                    " verified_by, verification_method, opened_by, status)"
                    " VALUES ('access', $1, $2, $3, $4, $5, $6, $7, 'open') RETURNING *",
                    digest, canonical, got, due_date(got), verifier, how, actor.username,
                )
                await audit.append(
                    conn, actor=actor.username, action="request", target=number_target(digest),
                    reason="access request",
                    details={"case": row["id"], "verified_by": verifier, "method": how,
                             "received": got.isoformat(), "due": row["due_on"].isoformat()},
                )
        return self._case(row, today)

    async def list_requests(self, actor: Actor, *, include_closed: bool = False) -> list[Case]:
        """Open cases, overdue first then by due date; closed ones after if asked."""
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.REQUEST_LIST, "requests")
            today = await self._today(conn)
            rows = await conn.fetch(
                """SELECT * FROM privacy_requests WHERE $1 OR closed_at IS NULL
                   ORDER BY closed_at IS NOT NULL, due_on, id""",
                include_closed,
            )
        return [self._case(r, today) for r in rows]

    async def export_access(
        self, actor: Actor, case_id: int, out: Path, *, keep: Keeper | None = None
    ) -> ExportResult:
        """Write every call of the case's number (recordings, JSON+CSV metadata, manifest)
        to `out` atomically; the case is answered and the clear number dropped from it."""
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.REQUEST_EXPORT, f"case:{case_id}")
            async with withdrawn_unless_registered(out), conn.transaction():
                seen = await conn.fetchrow(
                    "SELECT kind, number FROM privacy_requests WHERE id = $1", case_id)
                if seen is None or seen["kind"] != "access":
                    raise NotFound(f"no access request {case_id}")
                rows: list[asyncpg.Record] = []
                if seen["number"] is not None:
                    # FOR SHARE: a purge or erasure cannot queue these calls until we commit.
                    # The calls before the case: the order an erasure and a deletion batch
                    # lock them in (the case first deadlocked with an erasure of the number,
                    # which clears the number on the number's cases after locking its calls).
                    # Locked in id order, as everywhere (README "Lock order"); sorted by
                    # time for the bundle after.
                    rows = sorted(await conn.fetch(
                        f"""SELECT {CALL_COLUMNS} FROM calls c
                            LEFT JOIN recordings r ON r.call_id = c.id
                            WHERE caller_number_key(c.caller_number) = ANY($1::text[])
                            ORDER BY c.id FOR SHARE OF c""",  # noqa: S608
                        list(number_variants(seen["number"])),
                    ), key=lambda r: (r["started_at"], r["id"]))
                case = await conn.fetchrow(
                    "SELECT * FROM privacy_requests WHERE id = $1 FOR UPDATE", case_id
                )
                if case is None:
                    raise NotFound(f"no access request {case_id}")
                if case["status"] != "open":
                    raise Conflict(f"access request {case_id} is {case['status']} already")
                # no number: an erasure of it took every call of it (it keeps the number on
                # the case while any remains; one may have done so meanwhile): the answer is
                # that nothing is held
                if case["number"] is None:
                    rows = []
                leaving = await purge.queued_ids(conn, [r["id"] for r in rows])
                rows = [r for r in rows if r["id"] not in leaving]
                result = await write_to_the_end(
                    self._write_export, out, case_id, case["number_hmac"], actor.username, rows,
                    erased=case["number"] is None,
                )
                await conn.execute(
                    "UPDATE privacy_requests SET status = 'answered', closed_at = now(),"
                    " number = NULL, result = $2::text::jsonb WHERE id = $1",
                    case_id,
                    json.dumps({"calls": result.calls, "files": result.files,
                                "missing": list(result.missing), "zip_sha256": result.zip_sha256}),
                )
                await audit.append(
                    conn, actor=actor.username, action="export", target=f"case:{case_id}",
                    reason="access request",
                    details={"number": number_target(case["number_hmac"]),
                             "calls": [str(r["id"]) for r in rows],
                             "missing": list(result.missing), "zip_sha256": result.zip_sha256},
                )
                if keep is not None:
                    await keep(conn, f"case:{case_id}", result.zip_sha256)
        log.info("access_export", case=case_id, calls=result.calls, missing=len(result.missing))
        return result

    def _write_export(
        self, out: Path, case_id: int, number_hmac: str, actor: str,
        rows: Sequence[Mapping[str, Any]], *, erased: bool = False,
    ) -> ExportResult:
        root = self.archive_root
        records: list[dict[str, Any]] = []
        missing: list[str] = []
        with BundleWriter(out) as bundle:
            for r in rows:
                status, name = "none", None
                if r["path"] is not None:
                    try:
                        source = purge.archive_file(root, r["path"])
                        name = f"recordings/{r['id']}.wav"
                        bundle.add_file(name, source, call_id=str(r["id"]),
                                        archived_sha256=r["sha256"])
                        status = "included"
                    except (OSError, Unavailable):
                        status, name = "missing", None
                        missing.append(str(r["id"]))
                records.append({
                    "call_id": str(r["id"]), "caller_number": r["caller_number"],
                    "caller_name": r["caller_name"], "started_at": iso(r["started_at"]),
                    "answered_at": iso(r["answered_at"]), "ended_at": iso(r["ended_at"]),
                    "service_number": r["service_number"], "service_name": r["service_name"],
                    "agent_name": r["agent_name"], "notice_version": r["notice_prompt"],
                    "notice_language": r["notice_language"],
                    "notice_completed": r["notice_completed"], "recording_file": name,
                    "recording_status": status, "recording_sha256": r["sha256"],
                    "duration_ms": r["duration_ms"],
                })
            bundle.add_bytes(
                "metadata.json",
                json.dumps({"calls": records}, indent=2, ensure_ascii=False).encode(),
            )
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=_EXPORT_FIELDS, lineterminator="\r\n")
            writer.writeheader()
            for rec in records:
                writer.writerow({k: _csv_cell(v) for k, v in rec.items()})
            bundle.add_bytes("metadata.csv", text.getvalue().encode("utf-8"))
            bundle.add_manifest({
                "kind": "access-export", "case": case_id,
                "generated_at": iso(datetime.now(UTC)), "generated_by": actor,
                "calls": len(records), "files": bundle.files, "missing_recordings": missing,
                "number_hmac": number_hmac,
                **({"note": "every call of this number was erased on request before this "
                            "answer: none is held"} if erased else {}),
            })
            files = sum(1 for rec in records if rec["recording_status"] == "included")
            bundle.commit()
        return ExportResult(case_id, out, len(records), files, tuple(missing), sha256_file(out))

    async def erase_number(
        self,
        actor: Actor,
        *,
        number: str,
        verified_by: str,
        method: str,
        received: str | None = None,
        refuse_ground: str | None = None,
    ) -> Case:
        """Open and carry out an erasure request: every call of the number is deleted
        (files first) unless held; held calls, or a recorded legal ground, refuse it."""
        canonical = canonical_number(number)
        digest = self.hasher.digest(canonical)
        target = number_target(digest)
        how = text_field(method, "verification method")
        ground = text_field(refuse_ground, "refusal ground") if refuse_ground is not None else None
        root = self.archive_root
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.REQUEST_ERASE, target)
            verifier = await self._active_user(conn, verified_by)
            today = await self._today(conn)
            got = received_date(received, today)
            async with conn.transaction():
                # the queue rows of the number's calls first, then the calls: the order a
                # deletion batch takes them in (the other order deadlocked with one)
                await conn.execute(
                    "SELECT q.call_id FROM purge_queue q JOIN calls c ON c.id = q.call_id"
                    " WHERE caller_number_key(c.caller_number) = ANY($1::text[])"
                    " ORDER BY q.call_id FOR UPDATE OF q",
                    list(number_variants(canonical)),
                )
                # in id order, as everywhere (README "Lock order"): by start time, calls
                # that started together were locked in whatever order the scan gave, and
                # an export of the number locking them by id deadlocked with it
                calls = sorted(await conn.fetch(
                    "SELECT id, caller_number, ended_at, started_at FROM calls"
                    " WHERE caller_number_key(caller_number) = ANY($1::text[])"
                    " ORDER BY id FOR UPDATE",
                    list(number_variants(canonical)),
                ), key=lambda c: (c["started_at"], c["id"]))
                held = await self._held(conn, calls)
                # a call still going on would be written again by the call flow when it ends
                ongoing = [c["id"] for c in calls if c["ended_at"] is None and c["id"] not in held]
                erasable = [
                    c["id"] for c in calls if c["id"] not in held and c["id"] not in ongoing
                ]
                reasons: list[str] = []
                if ground is not None:
                    reasons, erasable = [ground], []
                else:
                    if held:
                        holds = await conn.fetch(
                            "SELECT id, reason FROM legal_holds WHERE id = ANY($1::bigint[])"
                            " ORDER BY id", sorted({h for ids in held.values() for h in ids}),
                        )
                        reasons.append("legal hold: " + "; ".join(
                            f"#{h['id']} {h['reason']}" for h in holds
                        ))
                    if ongoing:
                        reasons.append(f"{len(ongoing)} call(s) still in progress: "
                                       "repeat the request when they have ended")
                refusal = " | ".join(reasons) or None
                if refusal is None:
                    final = "erased"
                else:
                    final = "partially_refused" if erasable else "refused"
                status = "erasing" if erasable else final
                result = {
                    "final_status": final, "erased_calls": [str(i) for i in erasable],
                    "held_calls": [str(i) for i in held], "matched_calls": len(calls),
                    "in_progress_calls": [str(i) for i in ongoing],
                }
                case = await conn.fetchrow(
                    "INSERT INTO privacy_requests (kind, number_hmac, received_on, due_on,"
                    " verified_by, verification_method, opened_by, status, refusal_reason,"
                    " result, closed_at) VALUES ('erasure', $1, $2, $3, $4, $5, $6, $7, $8,"
                    " $9::text::jsonb, CASE WHEN $7 = 'erasing' THEN NULL ELSE now() END)"
                    " RETURNING *",
                    digest, got, due_date(got), verifier, how, actor.username, status, refusal,
                    json.dumps(result),
                )
                if erasable:
                    await purge.enqueue(conn, erasable, "erasure", case["id"])
                if len(erasable) == len(calls):
                    # nothing of the number stays: no open access case keeps it in clear (its
                    # answer is that nothing is held). While a call stays (held, in
                    # progress, refused on a ground), the number stays on such a case: it
                    # is what the case is answered with.
                    await conn.execute(
                        "UPDATE privacy_requests SET number = NULL WHERE number_hmac = $1",
                        digest,
                    )
                await audit.append(
                    conn, actor=actor.username,
                    action="erase" if final == "erased" else "erase_refused",
                    target=target, reason=refusal or "erasure request",
                    details={"case": case["id"], "verified_by": verifier, "method": how,
                             "erase": result["erased_calls"], "held": result["held_calls"],
                             "final_status": final},
                )
        if erasable:
            async with self._pool.acquire() as conn:
                await purge.finish(conn, root, actor=actor.username, case_id=case["id"])
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM privacy_requests WHERE id = $1", case["id"])
        log.info("erasure", case=case["id"], status=row["status"], erased=len(erasable))
        return self._case(row, today)
