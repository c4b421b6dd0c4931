"""Requests the console must read whole or refuse with a 4xx: bodies that arrive in pieces,
malformed forms and JSON, dates and values PostgreSQL cannot take, work a role may not ask
for."""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callrec.errors import NotConfigured
from callrec.privacy import passwords
from callrec.privacy.service import PrivacyService
from tests.dbfixtures import ScratchDatabase
from tests.integration.test_web_support import PASSWORD, console

pytestmark = pytest.mark.db


def _wav(seconds: float) -> bytes:
    rng = np.random.default_rng(7)  # noise: any byte lost changes the decoded audio
    samples = (rng.standard_normal(int(8000 * seconds)) * 3000).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(samples.tobytes())
    return out.getvalue()


async def _in_pieces(data: bytes, pieces: int = 6) -> AsyncIterator[bytes]:
    """A chunked body whose pieces arrive apart, as over a slow network."""
    step = -(-len(data) // pieces)
    for i in range(0, len(data), step):
        yield data[i:i + step]
        await asyncio.sleep(0.05)


async def test_bodies_that_arrive_in_pieces_are_read_whole(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        b = await c.logged_in("root")
        upload = _wav(6.0)
        resp = await b.client.post("/api/prompts/fi/notice/studio", data=_in_pieces(upload),
                                   headers={"X-CSRF-Token": b.csrf,
                                            "Content-Type": "audio/wav"})
        assert resp.status == 201, await resp.text()
        saved = c.prompts_dir / "fi" / "notice.wav"
        assert saved.read_bytes() == upload

        # a JSON body, padded past one segment, in pieces: the login goes through
        anon = c.browser()
        body = (b'{"username": "root", "password": "' + PASSWORD.encode()
                + b'", "pad": "' + b"x" * 200_000 + b'"}')
        resp = await anon.client.post("/api/session", data=_in_pieces(body),
                                      headers={"Content-Type": "application/json"})
        assert resp.status == 200, await resp.text()
        # over the limit: refused, whether announced or not
        big = b'{"pad": "' + b"x" * 600_000 + b'"}'
        for data in (big, _in_pieces(big)):
            resp = await anon.client.post("/api/session", data=data,
                                          headers={"Content-Type": "application/json"})
            assert resp.status == 400 and "too large" in await resp.text()


async def test_malformed_bodies_get_a_400(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        anon = c.browser()
        forms: list[tuple[str, bytes]] = [
            ("multipart/form-data", b"--x\r\n"),  # no boundary
            ("application/x-www-form-urlencoded", b"login_token=\xff\xfe"),  # not UTF-8
            ("application/x-www-form-urlencoded; charset=nope", b"a=b"),  # unknown charset
        ]
        for content_type, body in forms:
            resp = await anon.client.post("/login", data=body,
                                          headers={"Content-Type": content_type})
            assert resp.status == 400, (content_type, resp.status)
        deep = b"[" * 100_000 + b"]" * 100_000
        resp = await anon.client.post("/api/session", data=deep,
                                      headers={"Content-Type": "application/json"})
        assert resp.status == 400 and "not valid JSON" in await resp.text()

        b = await c.logged_in("root")
        for content_type, body in [("text/plain", b"hello"),
                                   ("multipart/form-data; boundary=zz", b"garbage")]:
            resp = await b.client.post("/admin/prompts/fi/notice/studio", data=body,
                                       headers={"Content-Type": content_type},
                                       allow_redirects=False)
            assert resp.status in (400, 403), (content_type, resp.status)
        assert not (c.prompts_dir / "fi" / "notice.wav").exists()


async def test_dates_and_values_the_database_cannot_take_get_a_400(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        await c.user("dpo", "privacy")
        await c.user("rita", "reviewer")
        dpo, rita = await c.logged_in("dpo"), await c.logged_in("rita")
        for who, path in [(rita, "/api/calls?until=9999-12-31"),
                          (rita, "/api/calls?since=0001-01-01"),
                          (rita, "/calls?until=9999-12-31&go=1"),
                          (dpo, "/api/audit?until=9999-12-31"),
                          (dpo, "/api/audit?target=a%00b"),
                          (rita, "/api/calls?agent=a%00b"),
                          (rita, "/api/calls?service=1%00")]:
            resp = await who.client.get(path)
            assert resp.status == 400, (path, resp.status, await resp.text())
        resp = await dpo.api("POST", "/api/holds/99999999999999999999/release",
                             {"reason": "done"})
        assert resp.status in (400, 404), resp.status

        # a username with a NUL fails like any wrong login, and is audited as one
        anon = c.browser()
        resp = await anon.client.post("/api/session", json={"username": "ro\x00ot",
                                                             "password": "nope"})
        assert resp.status == 401
        failed = [e for e in await c.audit("login_failed") if e["target"] == "user:root"]
        assert len(failed) == 1


async def test_a_role_that_may_not_manage_accounts_spends_no_password_hash(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        await c.user("rita", "reviewer")
        rita = await c.logged_in("rita")
        hashed: list[str] = []
        real = passwords.hash_password

        def counting(password: str) -> str:
            hashed.append(password)
            return real(password)

        monkeypatch.setattr(passwords, "hash_password", counting)
        resp = await rita.api("POST", "/api/users", {
            "username": "zz", "password": "Abcdefgh1234!", "roles": ["reviewer"]})
        assert resp.status == 403
        resp = await rita.post("/admin/accounts/root/password",
                               {"password": "Abcdefgh1234!xyz"})
        assert resp.status == 403
        assert hashed == []
        # the admin's own request still hashes (once)
        root = await c.logged_in("root")
        resp = await root.api("POST", "/api/users", {
            "username": "zz", "password": "Abcdefgh1234!", "roles": ["reviewer"]})
        assert resp.status == 201, await resp.text()
        assert hashed == ["Abcdefgh1234!"]


def test_a_setting_the_server_lacks_is_the_servers_error() -> None:
    svc = PrivacyService(pool=Any, archive_root=None, secret_key=None)  # type: ignore[arg-type]
    for attr in ("hasher", "archive_root"):
        with pytest.raises(NotConfigured) as caught:
            getattr(svc, attr)
        assert caught.value.http_status == 503
