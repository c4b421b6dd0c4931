"""The JSON API for integrations: the same operations as the pages, with a session from
POST /api/session and the CSRF token in X-CSRF-Token."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from tests.dbfixtures import ScratchDatabase
from tests.integration.test_web_support import PASSWORD, Browser, Console, console

pytestmark = pytest.mark.db


async def _api_login(c: Console, username: str) -> Browser:
    b = c.browser()
    resp = await b.client.post("/api/session", json={"username": username,
                                                     "password": PASSWORD})
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    b.csrf = data["csrf_token"]
    assert username == data["username"]
    return b


async def test_privacy_officer_over_the_api(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        cid = await c.call("0401112222")
        await c.user("dpo", "privacy")
        await c.user("rita", "reviewer")
        b = await _api_login(c, "dpo")
        resp = await b.api("POST", "/api/requests/access", {
            "number": "0401112222", "verified_by": "dpo", "method": "passport"})
        assert resp.status == 201, await resp.text()
        case = await resp.json()
        assert case["kind"] == "access" and case["overdue"] is False
        listed = await (await b.client.get("/api/requests")).json()
        assert [r["id"] for r in listed["requests"]] == [case["id"]]
        bad = await b.api("POST", "/api/requests/access", {"number": 5})
        assert bad.status == 400
        exported = await b.api("POST", f"/api/requests/{case['id']}/export")
        assert exported.status == 201, await exported.text()
        info = await exported.json()
        assert info["calls"] == 1 and info["files"] == 1
        zipped = await b.client.get(info["bundle"])
        assert zipped.status == 200
        names = zipfile.ZipFile(io.BytesIO(await zipped.read())).namelist()
        assert f"recordings/{cid}.wav" in names
        # another role cannot fetch the bundle, whatever id it knows (denial audited)
        rita = await _api_login(c, "rita")
        assert (await rita.client.get(info["bundle"])).status == 403
        # holds, erasure refused by the hold, release
        hold = await b.api("POST", "/api/holds", {"call_id": str(cid), "reason": "court"})
        assert hold.status == 201
        hold_id = (await hold.json())["id"]
        erased = await b.api("POST", "/api/requests/erase", {
            "number": "0401112222", "verified_by": "dpo", "method": "letter"})
        assert erased.status == 201
        assert (await erased.json())["status"] == "refused"
        assert "court" in (await erased.json())["refusal_reason"]
        released = await b.api("POST", f"/api/holds/{hold_id}/release", {"reason": "done"})
        assert released.status == 200
        assert (await (await b.client.get("/api/holds?released=1")).json())["holds"][0][
            "released_by"] == "dpo"
        # disclosure over the API needs a recording and an approver with the privacy role
        clip = await b.api("POST", f"/api/calls/{cid}/disclosures", {
            "from": "00:00.500", "to": "00:01.500", "recipient": "police",
            "legal_basis": "investigation", "approved_by": "rita"})
        assert clip.status == 400
        clip = await b.api("POST", f"/api/calls/{cid}/disclosures", {
            "from": "00:00.500", "to": "00:01.500", "recipient": "police",
            "legal_basis": "investigation", "approved_by": "dpo"})
        assert clip.status == 201 and (await clip.json())["to_ms"] == 1500
        retention = await (await b.client.get("/api/retention")).json()
        assert retention["months"] == 12 and retention["due_now"] == 0
        audit = await (await b.client.get("/api/audit?action=export")).json()
        assert [e["target"] for e in audit["entries"]] == [f"case:{case['id']}"]
        verdict = await (await b.client.get("/api/audit/verify")).json()
        assert verdict["ok"] is True
        out = await b.api("DELETE", "/api/session")
        assert out.status == 200
        assert (await b.client.get("/api/requests")).status == 401


async def test_reviewer_and_admin_over_the_api(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        cid = await c.call()
        admin = await _api_login(c, "root")
        added = await admin.api("POST", "/api/users", {
            "username": "rita", "password": PASSWORD, "roles": ["reviewer"]})
        assert added.status == 201, await added.text()
        refused = await admin.api("POST", "/api/users", {
            "username": "vendor", "password": PASSWORD, "roles": ["processor"]})
        assert refused.status == 400  # a processor needs an expiry
        users = await (await admin.client.get("/api/users")).json()
        assert {u["username"] for u in users["users"]} == {"root", "rita"}
        assert all("password" not in str(u) for u in users["users"])
        rita = await _api_login(c, "rita")
        page = await (await rita.client.get("/api/calls?number=0401234567")).json()
        assert [r["call_id"] for r in page["calls"]] == [str(cid)]
        assert (await rita.client.get(f"/api/calls/{cid}/audio")).status == 403
        grant = await rita.api("POST", f"/api/calls/{cid}/listen", {"purpose": "training"})
        assert grant.status == 201
        audio = await rita.client.get((await grant.json())["audio"],
                                      headers={"Range": "bytes=0-43"})
        assert audio.status == 206 and (await audio.read())[:4] == b"RIFF"
        # roles change at once: the next request of the open session is refused
        changed = await admin.api("POST", "/api/users/rita/roles", {"roles": ["admin"]})
        assert changed.status == 200
        assert (await rita.client.get("/api/calls")).status == 403
        disabled = await admin.api("POST", "/api/users/rita/disabled", {"disabled": True})
        assert disabled.status == 200
        assert (await rita.client.get("/api/session")).status == 401
