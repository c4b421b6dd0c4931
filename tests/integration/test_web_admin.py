"""The admin's pages: accounts (processor expiry), prompts (text, studio upload checked by
content, live version) and routing (checked like `callrec config check`, applied live)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile

from callrec.prompts.index import read_index
from tests.dbfixtures import ScratchDatabase
from tests.integration.test_web_support import ROUTING, console

pytestmark = pytest.mark.db


async def test_accounts_page_adds_users_and_requires_processor_expiry(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        b = await c.logged_in("root")
        form = {"username": "vendor", "full_name": "Vendor Oy", "password": "long enough pass",
                "roles": "processor"}
        resp = await b.post("/admin/accounts", form)
        assert resp.status == 400 and "expiry" in await resp.text()
        resp = await b.post("/admin/accounts", {**form, "expires": "2099-12-31"})
        assert resp.status == 303
        page = await (await b.client.get("/admin/accounts")).text()
        assert 'id="user-vendor"' in page and "2099-12-31" in page
        resp = await b.post("/admin/accounts/vendor/roles", {"roles": "reviewer"})
        assert resp.status == 303
        users = {u.username: u for u in await c.privacy.list_users(c.admin)}
        assert users["vendor"].roles == ("reviewer",)
        assert (await b.post("/admin/accounts/vendor/state", {"disabled": "1"})).status == 303
        assert (await c.browser().login("vendor", "long enough pass")) == 401
        changes = [e for e in await c.audit("user_change") if e["target"] == "user:vendor"]
        assert [e["details"] for e in changes]  # add, roles, disable all audited
        assert len(changes) == 3


async def test_routing_is_checked_then_applied_without_restart(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        b = await c.logged_in("root")
        page = await (await b.client.get("/admin/routing")).text()
        before = re.search(r'id="routing-version">([0-9a-f]+)<', page)
        assert before is not None
        broken = ROUTING.replace('agents = ["agent1"]', 'agents = ["nobody"]')
        resp = await b.post("/admin/routing", {"text": broken})
        assert resp.status == 400
        text = await resp.text()
        assert f"{c.routing_path}:" in text and "nobody" in text
        assert c.routing_path.read_text() == ROUTING  # nothing written
        changed = ROUTING.replace("ring_timeout = 5", "ring_timeout = 9")
        resp = await b.post("/admin/routing", {"text": changed})
        assert resp.status == 303
        assert c.routing_path.read_text() == changed
        page = await (await b.client.get("/admin/routing")).text()
        after = re.search(r'id="routing-version">([0-9a-f]+)<', page)
        assert after is not None and after.group(1) != before.group(1)
        api = await (await b.client.get("/api/routing")).json()
        assert api["version"] == after.group(1)
        bad = await b.api("PUT", "/api/routing", {"text": "[[service]\n"})
        assert bad.status == 400 and (await bad.json())["problems"]
        changes = await c.audit("config_change")
        assert [e["target"] for e in changes] == ["routing"]


def _wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    out = io.BytesIO()
    soundfile.write(out, (np.sin(2 * np.pi * 500 * t) * 0.3).astype(np.float32), rate,
                    format="WAV", subtype="PCM_16")
    return out.getvalue()


async def _upload(b: object, path: str, data: bytes, csrf: str | None) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    if csrf is not None:
        form.add_field("csrf_token", csrf)
    form.add_field("file", io.BytesIO(data), filename="notice.wav", content_type="audio/wav")
    return await b.client.post(path, data=form, allow_redirects=False)  # type: ignore[attr-defined]


async def test_prompt_text_edit_and_studio_upload(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        b = await c.logged_in("root")
        page = await (await b.client.get("/admin/prompts")).text()
        assert 'id="prompt-fi-notice"' in page
        resp = await b.post("/admin/prompts/fi/notice/text",
                            {"text": "Tervetuloa. Puhelu tallennetaan."})
        assert resp.status == 200, await resp.text()
        entry = read_index(c.cache_dir).prompts["notice/fi"]
        assert entry.source == "text"
        text_version = entry.version
        assert f"<code class=\"live-version\">{text_version}</code>" in await resp.text()
        assert (c.prompts_dir / "fi" / "notice.txt").read_text().startswith("Tervetuloa.")
        # an unknown prompt or a path in the name is refused; nothing is created
        resp = await b.post("/admin/prompts/fi/..%2Fx/text", {"text": "x"})
        assert resp.status in (400, 404)
        # uploads: the CSRF token first, audio checked by content
        path = "/admin/prompts/fi/notice/studio"
        assert (await _upload(b, path, _wav(), None)).status == 403
        resp = await _upload(b, path, b"RIFF\x00\x00\x00\x00WAVEjunk" * 10, b.csrf)
        assert resp.status == 400 and "decoded" in await resp.text()
        resp = await _upload(b, path, b"<html>not audio</html>", b.csrf)
        assert resp.status == 400
        resp = await _upload(b, path, b"\x00" * (9 * 1024 * 1024), b.csrf)
        assert resp.status == 400 and "MB" in await resp.text()
        assert not (c.prompts_dir / "fi" / "notice.wav").exists()
        resp = await _upload(b, path, _wav(), b.csrf)
        assert resp.status == 200
        entry = read_index(c.cache_dir).prompts["notice/fi"]
        assert entry.source == "studio" and entry.version != text_version
        # the preview is the served prompt file
        preview = await b.client.get(f"/prompts/{entry.files['wav']}")
        assert preview.status == 200
        # back to the text
        resp = await b.post("/admin/prompts/fi/notice/studio/remove", {})
        assert resp.status == 200
        assert read_index(c.cache_dir).prompts["notice/fi"].version == text_version
        # the API takes the file as the body, with the same checks
        api = await b.api("POST", "/api/prompts/fi/closed/studio", None)
        assert api.status == 400  # empty body: not audio
        api = await b.client.post("/api/prompts/fi/closed/studio", data=_wav(0.5),
                                  headers={"X-CSRF-Token": b.csrf,
                                           "Content-Type": "audio/wav"})
        assert api.status == 201, await api.text()
        assert read_index(c.cache_dir).prompts["closed/fi"].source == "studio"
        reasons = [e["reason"] for e in await c.audit("config_change")]
        assert reasons == ["prompt text edited", "studio recording uploaded",
                           "studio recording removed", "studio recording uploaded"]
