"""The console over HTTP: login, sessions, CSRF, lockout and the role-by-page/API matrix,
against the real service wiring and a real database."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dbfixtures import ScratchDatabase
from tests.integration.test_web_support import PASSWORD, console

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
