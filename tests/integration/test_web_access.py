"""The console over HTTP: login, sessions, CSRF, lockout and the role-by-page/API matrix,
against the real service wiring and a real database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from callrec.web.console import CONSOLE
from callrec.web.throttle import LoginThrottle
from tests.dbfixtures import ScratchDatabase
from tests.integration.test_web_support import _LOGIN, PASSWORD, console

pytestmark = pytest.mark.db


async def test_unauthenticated_pages_redirect_and_api_and_files_answer_401(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        cid = await c.call()
        b = c.browser()
        for path in ("/calls", f"/calls/{cid}", "/privacy/requests", "/admin/routing", "/"):
            resp = await b.client.get(path, allow_redirects=False)
            assert resp.status == 303, path
            assert resp.headers["Location"].startswith("/login"), path
        for path in ("/api/calls", f"/api/calls/{cid}", "/api/users", "/api/session",
                     f"/calls/{cid}/audio", f"/calls/{cid}/download",
                     "/bundles/00000000-0000-0000-0000-000000000000"):
            resp = await b.client.get(path, allow_redirects=False)
            assert resp.status == 401, path
        resp = await b.client.get("/api/openapi.json")
        assert resp.status == 200
        doc = await resp.json()
        assert doc["openapi"].startswith("3.") and "/api/calls" in doc["paths"]
        # the login page itself and the health endpoint need no session
        assert (await b.client.get("/login")).status == 200
        # nothing was fetched, so nothing personal was audited
        assert not [e for e in await c.audit() if e["action"] in ("search", "listen")]


async def test_login_sets_a_strict_httponly_session_and_logout_ends_it(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        await c.user("rita", "reviewer")
        b = c.browser()
        page = await b.client.get("/login")
        token = page.cookies["callrec_login"].value
        resp = await b.client.post(
            "/login", data={"login_token": token, "username": "rita", "password": PASSWORD,
                            "next": "/calls"}, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/calls"
        cookie = resp.cookies["callrec_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
        assert not cookie["secure"]  # plain HTTP here; over TLS the flag is set
        assert (await b.client.get("/calls")).status == 200
        async with c.pool.acquire() as conn:
            stored = await conn.fetchval("SELECT token_hash FROM web_sessions")
        assert stored != cookie.value and len(stored) == 64  # only a hash is kept
        csrf = await b.page_csrf("/calls")
        out = await b.client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
        assert out.status == 303
        async with c.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM web_sessions") == 0
        again = await b.client.get("/calls", allow_redirects=False)
        assert again.status == 303 and again.headers["Location"].startswith("/login")


# (path, roles that may open it); every other role gets 403, and the denial is audited
PAGES = [
    ("/calls", {"reviewer", "privacy"}),
    ("/privacy/requests", {"privacy"}),
    ("/privacy/holds", {"privacy"}),
    ("/privacy/audit", {"privacy"}),
    ("/privacy/retention", {"privacy", "processor"}),
    ("/admin/accounts", {"admin"}),
    ("/admin/prompts", {"admin"}),
    ("/admin/routing", {"admin"}),
    ("/api/calls?number=0401234567", {"reviewer", "privacy"}),
    ("/api/calls/{cid}", {"reviewer", "privacy"}),
    ("/api/requests", {"privacy"}),
    ("/api/holds", {"privacy"}),
    ("/api/audit", {"privacy"}),
    ("/api/audit/verify", {"privacy", "processor"}),
    ("/api/retention", {"privacy", "processor"}),
    ("/api/users", {"admin"}),
    ("/api/prompts", {"admin"}),
    ("/api/routing", {"admin"}),
]


@pytest.mark.parametrize("role", ["admin", "reviewer", "privacy", "processor"])
async def test_role_page_and_api_matrix(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, role: str
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        cid = await c.call()
        await c.user("who", role)
        b = await c.logged_in("who")
        expected_denials = 0
        for template, allowed in PAGES:
            path = template.format(cid=cid)
            resp = await b.client.get(path, allow_redirects=False)
            want = 200 if role in allowed else 403
            assert resp.status == want, f"{role} {path}: {resp.status}"
            if want == 403:
                expected_denials += 1
                if not path.startswith("/api/"):
                    assert "audit log" in await resp.text() or "tapahtumaloki" in (
                        await resp.text())
        denials = [e for e in await c.audit("denied") if e["actor"] == "who"]
        assert len(denials) == expected_denials
        # a page opened by a role never reveals another role's menu entries
        home = await b.client.get("/account")
        text = await home.text()
        assert ('href="/admin/accounts"' in text) == (role == "admin")
        assert ('href="/privacy/audit"' in text) == (role == "privacy")


async def test_csrf_is_required_on_every_state_change(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        cid = await c.call()
        await c.user("dpo", "privacy")
        b = await c.logged_in("dpo")
        # forms: no token, a wrong token, another site's Origin
        for data, headers in (({}, {}), ({"csrf_token": "forged"}, {}),
                              ({"csrf_token": b.csrf}, {"Origin": "http://evil.example"})):
            resp = await b.client.post("/privacy/holds", data={
                **data, "call_id": str(cid), "reason": "police request"},
                headers=headers, allow_redirects=False)
            assert resp.status == 403
        # API: the token must come in the header
        resp = await b.api("POST", "/api/holds", {"call_id": str(cid), "reason": "x"},
                           csrf=False)
        assert resp.status == 403
        # a form-encoded body cannot drive the JSON API even with the token
        resp = await b.client.post("/api/holds", data={"call_id": str(cid), "reason": "x"},
                                   headers={"X-CSRF-Token": b.csrf})
        assert resp.status == 400
        async with c.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM legal_holds") == 0
        # logout without a token does not end the session
        resp = await b.client.post("/logout", allow_redirects=False)
        assert resp.status == 403
        assert (await b.client.get("/privacy/holds")).status == 200
        # with the token everything works
        ok = await b.post("/privacy/holds", {"call_id": str(cid), "reason": "police request"})
        assert ok.status == 303
        api = await b.api("POST", "/api/holds", {"number": "040 765 4321", "reason": "court"})
        assert api.status == 201
        async with c.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM legal_holds") == 2
        # the login form has its own token (login CSRF)
        other = c.browser()
        resp = await other.client.post("/login", data={"username": "dpo", "password": PASSWORD},
                                       allow_redirects=False)
        assert resp.status == 403 and "callrec_session" not in resp.cookies


async def test_lockout_after_repeated_failures(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        await c.user("rita", "reviewer")
        b = c.browser()
        for _ in range(5):
            assert await b.login("rita", "wrong password here") == 401
        # the right password no longer helps, in the form and over the API
        assert await b.login("rita") == 401
        resp = await b.client.post("/api/session",
                                   json={"username": "rita", "password": PASSWORD})
        assert resp.status == 401
        page = await b.client.get("/calls", allow_redirects=False)
        assert page.status == 303
        failures = [e for e in await c.audit("login_failed") if e["actor"] == "rita"]
        assert [e["reason"] for e in failures] == ["bad credentials"] * 5 + ["locked out"] * 2
        # another account is not affected
        await c.user("olli", "reviewer")
        assert await c.browser().login("olli") == 303


async def test_session_ends_when_the_account_is_disabled(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        await c.user("rita", "reviewer")
        b = await c.logged_in("rita")
        assert (await b.client.get("/calls")).status == 200
        await c.privacy.set_disabled(c.admin, "rita", True)
        assert (await b.client.get("/api/calls")).status == 401
        async with c.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM web_sessions") == 0


async def test_expired_session_is_refused(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        await c.user("rita", "reviewer")
        b = await c.logged_in("rita")
        async with c.pool.acquire() as conn:
            await conn.execute("UPDATE web_sessions SET last_seen = now() - interval '31 min'")
        resp = await b.client.get("/calls", allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"].startswith("/login")
        b2 = await c.logged_in("rita")
        async with c.pool.acquire() as conn:
            await conn.execute("UPDATE web_sessions SET expires_at = now()")
        assert (await b2.client.get("/api/session")).status == 401


async def test_many_failed_logins_from_one_address_are_slowed_down(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        c.server.app[CONSOLE].throttle = LoginThrottle(limit=4, window=600)
        await c.user("rita", "reviewer")
        b = c.browser()
        # guessing across names: no single account reaches its own lockout
        for name in ("anna", "bert", "cecilia", "david"):
            assert await b.login(name, "guess guess guess") == 401
        assert await b.login("rita") == 429  # even the right password waits
        resp = await b.client.post("/api/session", json={"username": "rita",
                                                         "password": PASSWORD})
        assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0


async def test_session_cookie_is_secure_behind_tls(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        # what add_console decides when CALLREC_WEB_URL is https (TLS at a proxy)
        c.server.app[CONSOLE].secure_cookies = True
        await c.user("rita", "reviewer")
        b = c.browser()
        page = await b.client.get("/login")
        assert page.cookies["callrec_login"]["secure"]
        token = page.cookies["callrec_login"].value
        # this test server speaks plain HTTP, so the client holds Secure cookies back: send
        # the login cookie by hand, as a browser would over TLS
        resp = await b.client.post(
            "/login", data={"login_token": token, "username": "rita", "password": PASSWORD},
            headers={"Cookie": f"callrec_login={token}"}, allow_redirects=False)
        assert resp.status == 303 and resp.cookies["callrec_session"]["secure"]
        assert "Content-Security-Policy" in page.headers
        assert page.headers["X-Frame-Options"] == "DENY"


async def test_a_burst_of_concurrent_guesses_is_braked_like_one_after_another(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The brake counted a failure only once its password was checked (argon2, in a thread):
    # every request of a burst passed it before the first failure was counted.
    async with console(db, tmp_path, monkeypatch) as c:
        c.server.app[CONSOLE].throttle = LoginThrottle(limit=4, window=600)
        await c.user("rita", "reviewer")
        b = c.browser()

        async def guess(n: int) -> int:
            resp = await b.client.post("/api/session", json={"username": f"user{n}",
                                                             "password": "guess guess"})
            return int(resp.status)

        statuses = await asyncio.gather(*(guess(n) for n in range(12)))
        assert sorted(statuses) == [401] * 4 + [429] * 8
        assert len(await c.audit("login_failed")) == 4  # only 4 passwords were checked


async def test_a_login_that_succeeds_does_not_count_against_the_address(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        c.server.app[CONSOLE].throttle = LoginThrottle(limit=2, window=600)
        await c.user("rita", "reviewer")
        for _ in range(3):
            assert await c.browser().login("rita") == 303
        assert await c.browser().login("rita", "wrong password") == 401
        assert await c.browser().login("rita") == 303


async def test_a_new_password_ends_the_sessions_opened_with_the_old_one(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = "a brand new passphrase"
    async with console(db, tmp_path, monkeypatch) as c:
        await c.user("rita", "reviewer")
        stolen = await c.logged_in("rita")  # say, a cookie copied from her browser
        own = await c.logged_in("rita")
        # her own change needs the password in use: a session alone is not enough
        resp = await stolen.post("/account/password", {"new_password": new})
        assert resp.status == 400 and "ei ole nykyinen salasanasi" in await resp.text()
        resp = await stolen.post("/account/password",
                                 {"current_password": "not the password", "new_password": new})
        assert resp.status == 400
        assert await c.browser().login("rita", new) == 401  # unchanged
        resp = await own.post("/account/password",
                              {"current_password": PASSWORD, "new_password": new})
        assert resp.status == 303 and resp.headers["Location"] == "/account?done=password"
        # she goes on in a new session; the other one is over
        assert (await own.client.get("/api/session")).status == 200
        assert (await stolen.client.get("/api/session")).status == 401
        assert await c.browser().login("rita", new) == 303
        # an admin's reset ends her sessions too
        admin = await c.logged_in("root")
        resp = await admin.post("/admin/accounts/rita/password",
                                {"new_password": "reset by the admin now"})
        assert resp.status == 303
        assert (await own.client.get("/api/session")).status == 401
        assert (await admin.client.get("/api/session")).status == 200  # not the admin's


@pytest.mark.parametrize("target", ["/\t/evil.example/x", "/\n/evil.example",
                                    "/\r\n/evil.example", "//evil.example", "/\\evil.example"])
async def test_redirects_after_login_and_language_stay_on_this_site(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        await c.user("rita", "reviewer")
        b = c.browser()
        resp = await b.client.get("/lang/en", params={"next": target}, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/"
        page = await b.client.get("/login", params={"next": target})
        token = _LOGIN.search(await page.text())
        assert token is not None
        resp = await b.client.post(
            "/login", data={"login_token": token.group(1), "username": "rita",
                            "password": PASSWORD, "next": target},
            allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/"
