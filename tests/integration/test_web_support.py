"""Shared set-up of the console's HTTP tests: the real service wiring (`build_service` +
`add_console`) on a real database (the `db` fixture), real WAV files in an archive under
tmp_path, prompts and a routing file of their own, driven through aiohttp's test client."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import numpy as np
import pytest
import soundfile
from aiohttp import web
from aiohttp.test_utils import TestServer

from callrec.privacy.roles import Actor
from callrec.privacy.service import PrivacyService
from callrec.prompts import http as prompts_http
from callrec.service import build_service
from callrec.settings import Settings
from callrec.web.console import add_console
from tests.dbfixtures import ScratchDatabase

KEY = "web-test-secret-key-0123456789abcdef0123456789"
PASSWORD = "correct horse battery staple"
RATE = 8000

ROUTING = """
[defaults]
ring_timeout = 5
max_wait = 30

[[agent]]
id = "agent1"
endpoint = "PJSIP/agent1"
name = "Aino Agentti"

[[service]]
number = "0103808000"
name = "Ajanvaraus"
language = "fi"
agents = ["agent1"]
"""


def tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return np.round(np.sin(2 * np.pi * freq * t) * 12000).astype(np.int16)


@dataclass
class Console:
    db: ScratchDatabase
    root: Path
    prompts_dir: Path
    cache_dir: Path
    routing_path: Path
    server: TestServer
    pool: asyncpg.Pool
    privacy: PrivacyService
    admin: Actor
    files: dict[uuid.UUID, Path] = field(default_factory=dict)
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    def browser(self) -> Browser:
        """A fresh cookie jar (one user's browser)."""
        session = aiohttp.ClientSession(
            base_url=str(self.server.make_url("/")),
            cookie_jar=aiohttp.CookieJar(unsafe=True),
        )
        self.sessions.append(session)
        return Browser(self, session)

    async def logged_in(self, username: str) -> Browser:
        b = self.browser()
        assert await b.login(username) == 303
        return b

    async def user(self, username: str, roles: str, **kw: Any) -> None:
        if "processor" in roles:
            kw.setdefault("expires_at", datetime.now(UTC) + timedelta(days=30))
        await self.privacy.add_user(self.admin, username, PASSWORD, roles, **kw)

    async def call(
        self, caller: str = "0401234567", *, service: str = "0103808000",
        agent: str = "Aino Agentti", started: datetime | None = None, seconds: float = 3.0,
        end_reason: str = "completed", recording: bool = True,
    ) -> uuid.UUID:
        cid = uuid.uuid4()
        started = started or datetime.now(UTC) - timedelta(minutes=5)
        ended = started + timedelta(seconds=seconds + 5)
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO calls (id, caller_number, service_number, service_name, agent_name,"
                " started_at, answered_at, ended_at, end_reason, notice_prompt,"
                " notice_language, notice_completed, state) VALUES ($1, $2, $3, 'Ajanvaraus',"
                " $4, $5, $6, $7, $8, 'notice-fi-0123456789ab', 'fi', true, 'ended')",
                cid, caller, service, agent, started, started + timedelta(seconds=5), ended,
                end_reason,
            )
            if recording:
                rel = f"{started:%Y/%m/%d}/{cid}.wav"
                path = self.root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(str(path), tone(seconds, 440), RATE, subtype="PCM_16",
                                format="WAV")
                data = path.read_bytes()
                await conn.execute(
                    "INSERT INTO recordings (call_id, path, sha256, bytes, duration_ms, format)"
                    " VALUES ($1, $2, $3, $4, $5, 'wav')",
                    cid, rel, hashlib.sha256(data).hexdigest(), len(data),
                    int(seconds * 1000),
                )
                self.files[cid] = path
        return cid

    async def audit(self, action: str | None = None) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return list(await conn.fetch(
                "SELECT * FROM audit_log WHERE $1::text IS NULL OR action = $1 ORDER BY seq",
                action,
            ))


@asynccontextmanager
async def console(db: ScratchDatabase, tmp: Path, monkeypatch: pytest.MonkeyPatch,
                  *, timezone: str | None = None) -> AsyncIterator[Console]:
    """`timezone`: CALLREC_TIMEZONE (unset: the default, Europe/Helsinki)."""
    root = tmp / "archive"
    root.mkdir()
    prompts_dir = tmp / "prompts"
    (prompts_dir / "fi").mkdir(parents=True)
    # short texts: the tests render them with the real text-to-speech
    (prompts_dir / "fi" / "notice.txt").write_text("Puhelu tallennetaan.\n")
    (prompts_dir / "fi" / "closed.txt").write_text("Palvelu on suljettu.\n")
    routing_path = tmp / "routing.toml"
    routing_path.write_text(ROUTING)
    monkeypatch.setenv("CALLREC_SECRET_KEY", KEY)
    monkeypatch.setenv("CALLREC_WEB_URL", "http://127.0.0.1:8080")
    settings = Settings.from_env({
        "CALLREC_DATABASE_URL": db.app_dsn, "CALLREC_ARI_URL": "http://127.0.0.1:9",
        "CALLREC_ARI_USER": "x", "CALLREC_ARI_PASSWORD": "x",
        "CALLREC_ARCHIVE_DIR": str(root), "CALLREC_STATE_DIR": str(tmp / "state"),
        "CALLREC_CONFIG": str(routing_path), "CALLREC_PROMPTS_DIR": str(prompts_dir),
        "CALLREC_PROMPT_CACHE_DIR": str(tmp / "state" / "prompt-cache"),
        **({"CALLREC_TIMEZONE": timezone} if timezone else {}),
    })
    svc = build_service(settings)
    svc.routing.current()
    app = web.Application()
    prompts_http.add_routes(app, svc.prompts)
    add_console(app, svc)
    pool = await asyncpg.create_pool(db.app_dsn, min_size=1, max_size=3)
    try:
        privacy = PrivacyService(pool, root, KEY.encode())
        await privacy.bootstrap_admin("root", PASSWORD)
        admin = await privacy.authenticate("root", PASSWORD)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        world = Console(db, root, prompts_dir, settings.prompt_cache_dir, routing_path,
                        server, pool, privacy, admin)
        try:
            yield world
        finally:
            for session in world.sessions:
                await session.close()
            await server.close()
    finally:
        await pool.close()


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_LOGIN = re.compile(r'name="login_token" value="([^"]+)"')


class Browser:
    """One logged-in user's cookie jar, driving the console like a browser would."""

    def __init__(self, console: Console, client: aiohttp.ClientSession) -> None:
        self.c = console
        self.client = client
        self.csrf = ""

    async def login(self, username: str, password: str = PASSWORD) -> int:
        page = await self.client.get("/login")
        token = _LOGIN.search(await page.text())
        assert token is not None
        resp = await self.client.post(
            "/login", data={"login_token": token.group(1), "username": username,
                            "password": password, "next": "/"},
            allow_redirects=False,
        )
        if resp.status == 303:
            who = await self.client.get("/api/session")
            self.csrf = (await who.json())["csrf_token"]
        return resp.status

    async def page_csrf(self, path: str) -> str:
        resp = await self.client.get(path)
        match = _CSRF.search(await resp.text())
        assert match is not None, f"no CSRF token on {path}"
        return match.group(1)

    async def post(self, path: str, data: dict[str, Any], *, csrf: bool = True
                   ) -> Any:
        body = dict(data)
        if csrf:
            body["csrf_token"] = self.csrf
        return await self.client.post(path, data=body, allow_redirects=False)

    async def api(self, method: str, path: str, json: Any = None, *, csrf: bool = True
                  ) -> Any:
        headers = {"X-CSRF-Token": self.csrf} if csrf else {}
        return await self.client.request(method, path, json=json, headers=headers,
                                         allow_redirects=False)
