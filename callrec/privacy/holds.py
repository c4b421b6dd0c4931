"""Legal holds: a held call is never purged or erased until released."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from callrec.privacy import audit, purge
from callrec.privacy.core import (
    ServiceCore,
    parse_call_id,
    text_field,
)
from callrec.privacy.errors import (
    Conflict,
    Invalid,
    NotFound,
)
from callrec.privacy.numbers import canonical_number, number_target, number_variants
from callrec.privacy.roles import Actor, Operation


@dataclass(frozen=True)
class Hold:
    id: int
    call_id: UUID | None
    by_number: bool
    reason: str
    created_by: str
    created_at: datetime
    released_by: str | None
    released_at: datetime | None
    release_reason: str | None


class HoldsMixin(ServiceCore):
    """Place, release and list legal holds on calls or numbers."""

    async def add_hold(
        self,
        actor: Actor,
        *,
        reason: str,
        call_id: str | UUID | None = None,
        number: str | None = None,
    ) -> Hold:
        """Hold one call, or every call of a number (present and future), until released."""
        if (call_id is None) == (number is None):
            raise Invalid("give exactly one of a call id or a number")
        why = text_field(reason, "reason")
        cid = parse_call_id(call_id) if call_id is not None else None
        digest = self.hasher.digest(canonical_number(number)) if number is not None else None
        target = f"call:{cid}" if cid is not None else number_target(digest or "")
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.HOLD_MANAGE, target)
            async with conn.transaction():
                if cid is not None:
                    if not await conn.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM calls WHERE id = $1 FOR UPDATE)", cid
                    ):
                        raise NotFound(f"no call {cid}")
                    if await purge.queued_ids(conn, [cid]):
                        raise Conflict(f"call {cid} is being deleted")
                else:
                    # lock the number's calls so a purge cannot queue them mid-way (in id
                    # order, as everywhere: README "Lock order")
                    ids = [r["id"] for r in await conn.fetch(
                        "SELECT id FROM calls"
                        " WHERE caller_number_key(caller_number) = ANY($1::text[])"
                        " ORDER BY id FOR UPDATE",
                        list(number_variants(canonical_number(number or ""))),
                    )]
                    # as for one call: a hold that cannot keep them must not say it does
                    if queued := await purge.queued_ids(conn, ids):
                        raise Conflict(f"{len(queued)} call(s) of this number are being "
                                       "deleted: place the hold when that has finished")
                row = await conn.fetchrow(
                    "INSERT INTO legal_holds (call_id, number_hmac, reason, created_by)"
                    " VALUES ($1, $2, $3, $4) RETURNING *",
                    cid, digest, why, actor.username,
                )
                await audit.append(
                    conn, actor=actor.username, action="hold", target=target, reason=why,
                    details={"hold": row["id"]},
                )
        return self._hold(row)

    @staticmethod
    def _hold(row: Mapping[str, Any]) -> Hold:
        return Hold(
            row["id"], row["call_id"], row["number_hmac"] is not None, row["reason"],
            row["created_by"], row["created_at"], row["released_by"], row["released_at"],
            row["release_reason"],
        )

    async def release_hold(self, actor: Actor, hold_id: int, *, reason: str) -> Hold:
        why = text_field(reason, "reason")
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.HOLD_MANAGE, f"hold:{hold_id}")
            async with conn.transaction():
                row = await conn.fetchrow(
                    "UPDATE legal_holds SET released_at = now(), released_by = $2,"
                    " release_reason = $3 WHERE id = $1 AND released_at IS NULL RETURNING *",
                    hold_id, actor.username, why,
                )
                if row is None:
                    exists = await conn.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM legal_holds WHERE id = $1)", hold_id
                    )
                    raise Conflict(f"hold {hold_id} is already released") if exists else \
                        NotFound(f"no hold {hold_id}")
                await audit.append(
                    conn, actor=actor.username, action="hold_release", target=f"hold:{hold_id}",
                    reason=why,
                    details={"call": str(row["call_id"]) if row["call_id"] else None},
                )
        return self._hold(row)

    async def list_holds(self, actor: Actor, *, include_released: bool = False) -> list[Hold]:
        async with self._pool.acquire() as conn:
            await self._authorize(conn, actor, Operation.HOLD_LIST, "holds")
            rows = await conn.fetch(
                "SELECT * FROM legal_holds WHERE $1 OR released_at IS NULL ORDER BY id",
                include_released,
            )
        return [self._hold(r) for r in rows]
