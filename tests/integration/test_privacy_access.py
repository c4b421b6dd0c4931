"""Accounts and roles on the real database: the role x operation matrix (every denial is
audited), login lockout, expiry, disabling, and least privilege of the database role."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from callrec.privacy.audit import AuditFilter
from callrec.privacy.errors import AuthenticationFailed, Conflict, Forbidden, Invalid
from callrec.privacy.roles import Actor
from tests.dbfixtures import ScratchDatabase
from tests.integration.test_privacy_support import PASSWORD, World, random_number, world

pytestmark = pytest.mark.db

_n = itertools.count()
Op = Callable[[World, Actor, Actor, Path], Awaitable[object]]


async def _export(w: World, actor: Actor, dpo: Actor, tmp: Path) -> object:
    number = random_number()
    await w.call(number)
    case = await w.service.open_access_request(dpo, number=number, verified_by="dpo",
                                               method="passport at the desk")
    return await w.service.export_access(actor, case.id, tmp / f"export{next(_n)}.zip")


async def _erase(w: World, actor: Actor, dpo: Actor, tmp: Path) -> object:
    number = random_number()
    await w.call(number)
    return await w.service.erase_number(actor, number=number, verified_by="dpo",
                                        method="signed letter")


async def _disclose(w: World, actor: Actor, dpo: Actor, tmp: Path) -> object:
    call = await w.call(random_number())
    return await w.service.disclose(
        actor, call_id=call, from_offset="00:00.500", to_offset="00:01", recipient="Police",
        legal_basis="criminal investigation", approved_by="dpo", out=tmp / f"d{next(_n)}.zip",
    )


async def _listen(w: World, actor: Actor, dpo: Actor, tmp: Path) -> object:
    return await w.service.open_recording(actor, await w.call(), purpose="quality review")


async def _hold(w: World, actor: Actor, dpo: Actor, tmp: Path) -> object:
    return await w.service.add_hold(actor, call_id=await w.call(), reason="court order 12/2026")


OPERATIONS: dict[str, Op] = {
    "users.manage": lambda w, a, d, t: w.service.add_user(a, f"new{next(_n)}", PASSWORD,
                                                          "reviewer"),
    "users.list": lambda w, a, d, t: w.service.list_users(a),
    "audit.show": lambda w, a, d, t: w.service.audit_show(a, AuditFilter()),
    "audit.verify": lambda w, a, d, t: w.service.audit_verify(a),
    "retention.run": lambda w, a, d, t: w.service.run_retention(a),
    "retention.preview": lambda w, a, d, t: w.service.run_retention(a, dry_run=True),
    "hold.manage": _hold,
    "hold.list": lambda w, a, d, t: w.service.list_holds(a),
    "request.open": lambda w, a, d, t: w.service.open_access_request(
        a, number=random_number(), verified_by="dpo", method="passport"),
    "request.list": lambda w, a, d, t: w.service.list_requests(a),
    "request.export": _export,
    "request.erase": _erase,
    "disclose": _disclose,
    "call.search": lambda w, a, d, t: w.service.search_calls(a, number="0401234567"),
    "call.listen": _listen,
}

ALLOWED = {
    "admin": {"users.manage", "users.list"},
    "reviewer": {"call.search", "call.listen"},
    "privacy": {"audit.show", "audit.verify", "retention.run", "retention.preview",
                "hold.manage", "hold.list", "request.open", "request.list", "request.export",
                "request.erase", "disclose", "call.search"},
    "processor": {"audit.verify", "retention.preview"},
    "processor+listen": {"audit.verify", "retention.preview", "call.listen"},
}


@pytest.mark.parametrize("role", sorted(ALLOWED))
async def test_role_operation_matrix(db: ScratchDatabase, tmp_path: Path, role: str) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        roles, _, grant = role.partition("+")
        actor = await w.user("subject", roles, can_listen=bool(grant))
        outcome: dict[str, bool] = {}
        for name, op in OPERATIONS.items():
            try:
                await op(w, actor, dpo, tmp_path)
                outcome[name] = True
            except Forbidden as exc:
                assert exc.http_status == 403
                outcome[name] = False
        assert {k for k, ok in outcome.items() if ok} == ALLOWED[role]
        denied = await w.audit("denied")
        assert sorted(r["reason"] for r in denied if r["actor"] == "subject") == sorted(
            set(OPERATIONS) - ALLOWED[role]
        )
        assert (await w.service.audit_verify(dpo)).ok


async def test_lockout_after_repeated_failures_is_audited(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    async with world(db, tmp_path) as w:
        await w.user("rita", "reviewer")
        for _ in range(5):
            with pytest.raises(AuthenticationFailed):
                await w.service.authenticate("rita", "wrong password here")
        with pytest.raises(AuthenticationFailed) as err:  # even the right one is refused now
            await w.service.authenticate("rita", PASSWORD)
        assert err.value.http_status == 401
        failed = [r for r in await w.audit("login_failed") if r["target"] == "user:rita"]
        assert [r["reason"] for r in failed] == ["bad credentials"] * 5 + ["locked out"]
        # unknown names are counted (and audited) the same way, without revealing anything
        with pytest.raises(AuthenticationFailed):
            await w.service.authenticate("nobody", PASSWORD)
        # once the window has passed, the right password works again
        conn = await w.owner()
        try:
            await conn.execute("UPDATE login_failures SET at = at - interval '16 minutes'")
        finally:
            await conn.close()
        assert (await w.service.authenticate("rita", PASSWORD)).username == "rita"
        assert [r["target"] for r in await w.audit("login")][-1] == "user:rita"


async def test_expired_processor_and_disabled_accounts(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    async with world(db, tmp_path) as w:
        with pytest.raises(Invalid, match="expiry"):
            await w.service.add_user(w.admin, "vendor", PASSWORD, "processor")
        proc = await w.user("vendor", "processor", can_listen=True)
        assert (await w.service.audit_verify(proc)).ok
        conn = await w.owner()
        try:  # time passes: the contract ended an hour ago
            await conn.execute(
                "UPDATE users SET expires_at = now() - interval '1 hour' WHERE username = 'vendor'"
            )
        finally:
            await conn.close()
        with pytest.raises(AuthenticationFailed):
            await w.service.authenticate("vendor", PASSWORD)
        with pytest.raises(Forbidden, match="expired"):  # an old session is refused as well
            await w.service.audit_verify(proc)
        reviewer = await w.user("rita", "reviewer")
        await w.service.set_disabled(w.admin, "rita", True)
        with pytest.raises(AuthenticationFailed):
            await w.service.authenticate("rita", PASSWORD)
        with pytest.raises(Forbidden):
            await w.service.search_calls(reviewer)
        with pytest.raises(AuthenticationFailed):  # a web session cannot be resumed either
            await w.service.actor_for(reviewer.user_id or 0)
        await w.service.set_disabled(w.admin, "rita", False)
        assert await w.service.search_calls(reviewer) == []
        assert await w.service.actor_for(reviewer.user_id or 0) == reviewer
        reasons = [r["reason"] for r in await w.audit("login_failed")]
        assert reasons == ["expired", "disabled"]


async def test_roles_change_takes_effect_on_the_next_operation(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    async with world(db, tmp_path) as w:
        rita = await w.user("rita", "reviewer")
        await w.service.search_calls(rita)
        await w.service.set_roles(w.admin, "rita", "privacy")
        with pytest.raises(Forbidden):
            await w.service.open_recording(rita, await w.call(), purpose="training")
        assert await w.service.list_holds(rita) == []
        with pytest.raises(Conflict):
            await w.service.set_roles(w.admin, "root", "privacy")  # no self-demotion
        with pytest.raises(Invalid):
            await w.service.set_roles(w.admin, "rita", "processor")  # needs an expiry
        users = {u.username: u for u in await w.service.list_users(w.admin)}
        assert users["rita"].roles == ("privacy",)


async def test_bootstrap_only_while_no_account_exists(db: ScratchDatabase, tmp_path: Path) -> None:
    async with world(db, tmp_path) as w:
        with pytest.raises(Conflict):
            await w.service.bootstrap_admin("second", PASSWORD)
        with pytest.raises(Invalid):
            await w.service.add_user(w.admin, "weak", "short", "reviewer")
        with pytest.raises(Conflict):
            await w.service.add_user(w.admin, "root", PASSWORD, "reviewer")
        rita = await w.user("rita", "reviewer")
        await w.service.change_password(rita, "rita", "another long passphrase")
        with pytest.raises(Forbidden):  # but not someone else's
            await w.service.change_password(rita, "root", "another long passphrase")
        assert (await w.service.authenticate("rita", "another long passphrase")).user_id


async def test_app_role_has_least_privilege(db: ScratchDatabase, tmp_path: Path) -> None:
    async with world(db, tmp_path) as w:
        conn = await asyncpg.connect(db.app_dsn)
        try:
            for sql in (
                "UPDATE audit_log SET reason = 'x'",
                "DELETE FROM audit_log",
                "TRUNCATE audit_log",
                "UPDATE audit_head SET seq = 0",
                "DELETE FROM users",
                "UPDATE legal_holds SET reason = 'x'",
                "DELETE FROM legal_holds",
                "DELETE FROM disclosures",
                "UPDATE disclosures SET recipient = 'x'",
                "UPDATE privacy_requests SET number_hmac = 'x'",
                "DELETE FROM privacy_requests",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(sql)
            forged = (
                "INSERT INTO audit_log (seq, at, actor, action, prev_hash, hash) VALUES "
                "(99, now(), 'x', 'login', repeat('a', 64), repeat('b', 64))"
            )
            with pytest.raises(asyncpg.IntegrityConstraintViolationError):
                await conn.execute(forged)
        finally:
            await conn.close()
        assert (await w.service.authenticate("root", PASSWORD)).username == "root"
        since = datetime.now(UTC) - timedelta(minutes=5)
        logins = await w.service.audit_show(await w.user("dpo", "privacy"),
                                            AuditFilter(action="login", since=since))
        assert {e.actor for e in logins} == {"root", "dpo"}
