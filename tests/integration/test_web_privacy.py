"""The privacy officer's pages: access requests and their bundle, erasure with refusal
reasons, holds, disclosure clips, retention status and the audit browser."""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import date, timedelta
from pathlib import Path

import asyncpg
import pytest

from callrec.privacy.roles import Actor
from tests.dbfixtures import ScratchDatabase
from tests.integration.test_web_support import PASSWORD, Console, console

pytestmark = pytest.mark.db


async def test_access_request_export_and_bundle_download(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        mine = [await c.call("0401112222"), await c.call("+358401112222")]
        await c.call("0409998888")
        await c.user("dpo", "privacy")
        await c.user("dpo2", "privacy")
        b = await c.logged_in("dpo")
        old = (date.today() - timedelta(days=9)).isoformat()
        resp = await b.post("/privacy/requests/access", {
            "number": "040 111 2222", "verified_by": "dpo", "method": "passport at the desk",
            "received": old})
        assert resp.status == 303
        bad = await b.post("/privacy/requests/access", {
            "number": "not a number", "verified_by": "dpo", "method": "x"})
        assert bad.status == 400 and 'id="e-a-number"' in await bad.text()
        page = await (await b.client.get("/privacy/requests")).text()
        assert re.search(r'<tr class="overdue" id="case-1">', page)
        resp = await b.post("/privacy/requests/1/export", {})
        assert resp.status == 303
        location = resp.headers["Location"]
        bundle_id = location.split("bundle=")[1]
        page = await (await b.client.get(location)).text()
        assert f'href="/bundles/{bundle_id}"' in page
        zipped = await b.client.get(f"/bundles/{bundle_id}")
        assert zipped.status == 200 and zipped.content_type == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(await zipped.read()))
        meta = json.loads(archive.read("metadata.json"))
        assert sorted(r["call_id"] for r in meta["calls"]) == sorted(str(i) for i in mine)
        assert {f"recordings/{i}.wav" for i in mine} <= set(archive.namelist())
        # the bundle is its maker's only, and its download is audited
        other = await c.logged_in("dpo2")
        assert (await other.client.get(f"/bundles/{bundle_id}")).status == 404
        downloads = [e for e in await c.audit("download") if e["target"] == "case:1"]
        assert len(downloads) == 1 and downloads[0]["actor"] == "dpo"
        # answered: no second export
        again = await b.post("/privacy/requests/1/export", {})
        assert again.status == 409


async def test_erasure_refused_by_a_hold_shows_the_reason(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        held = await c.call("0401112222")
        await c.user("dpo", "privacy")
        b = await c.logged_in("dpo")
        assert (await b.post(f"/calls/{held}/hold", {"reason": "police case 42"})).status == 303
        page = await (await b.client.get("/privacy/holds")).text()
        assert "police case 42" in page
        resp = await b.post("/privacy/requests/erase", {
            "number": "0401112222", "verified_by": "dpo", "method": "letter"})
        assert resp.status == 200
        text = await resp.text()
        assert "evätty" in text and "police case 42" in text  # the status, in Finnish
        assert c.files[held].exists()
        # release, then erase: the file and the call are gone
        holds = await c.privacy.list_holds(await _dpo(c))
        assert (await b.post(f"/privacy/holds/{holds[0].id}/release",
                             {"reason": "case closed"})).status == 303
        resp = await b.post("/privacy/requests/erase", {
            "number": "0401112222", "verified_by": "dpo", "method": "letter"})
        assert "poistettu" in await resp.text()  # erased, in Finnish
        assert not c.files[held].exists()


async def _dpo(c: Console) -> Actor:
    return await c.privacy.authenticate("dpo", PASSWORD)


async def test_disclosure_clip_from_the_call_page(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        cid = await c.call(seconds=6.0)
        await c.user("dpo", "privacy")
        b = await c.logged_in("dpo")
        page = await (await b.client.get(f"/calls/{cid}")).text()
        assert 'id="open-disclosure-player"' in page and 'id="cut-clip"' not in page
        # a purpose of spaces: said beside the field (a privacy role has no listen form, where
        # the error once went), the field marked invalid
        bad = await b.post(f"/calls/{cid}/listen", {"mode": "disclose", "purpose": "other",
                                                    "detail": "   "})
        text = await bad.text()
        assert bad.status == 400 and 'id="e-disclose-purpose"' in text
        assert 'aria-describedby="e-disclose-purpose"' in text and "describe the purpose" in text
        await b.post(f"/calls/{cid}/listen", {"mode": "disclose", "purpose": "other",
                                              "detail": "police request"})
        page = await (await b.client.get(f"/calls/{cid}")).text()
        assert 'id="cut-clip"' in page and "?mode=disclose" in page
        # the position readout is no live region: a screen reader would talk over the audio
        assert '<output id="position" aria-live="off">' in page
        form = {"from": "00:01.250", "to": "00:03.750", "recipient": "Police of Helsinki",
                "legal_basis": "criminal investigation 1/2026", "approved_by": "dpo"}
        reversed_ = await b.post(f"/calls/{cid}/disclose", {**form, "from": "00:04"})
        assert reversed_.status == 400 and 'id="e-f-from"' in await reversed_.text()
        resp = await b.post(f"/calls/{cid}/disclose", form)
        assert resp.status == 303
        bundle = resp.headers["Location"].split("bundle=")[1].split("#")[0]
        zipped = await b.client.get(f"/bundles/{bundle}")
        archive = zipfile.ZipFile(io.BytesIO(await zipped.read()))
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["clip"]["from_ms"] == 1250 and manifest["clip"]["to_ms"] == 3750
        page = await (await b.client.get(f"/calls/{cid}")).text()
        assert "Police of Helsinki" in page  # the register on the call page


async def test_retention_and_audit_pages(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        await c.call()
        await c.user("dpo", "privacy")
        await c.user("rita", "reviewer")
        b = await c.logged_in("dpo")
        page = await (await b.client.get("/privacy/retention")).text()
        assert "Ei vielä ajettu." in page  # Finnish by default
        await c.privacy.run_retention(await _dpo(c))
        page = await (await b.client.get("/privacy/retention")).text()
        assert "Ei vielä ajettu." not in page and 'id="retention"' in page
        # the English switch
        resp = await b.client.get("/lang/en?next=/privacy/retention", allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/privacy/retention"
        page = await (await b.client.get("/privacy/retention")).text()
        assert "Retention status" in page and '<html lang="en">' in page
        # the reviewer's denied attempt shows up in the audit browser; the chain is intact
        rita = await c.logged_in("rita")
        assert (await rita.client.get("/privacy/audit")).status == 403
        page = await (await b.client.get("/privacy/audit?action=denied")).text()
        assert 'class="a-denied"' in page and "rita" in page
        assert 'id="chain"' not in page  # the whole chain is walked on request only
        verified = await b.post("/privacy/audit/verify", {})
        assert verified.status == 200 and "The chain is intact" in await verified.text()
        page = await (await b.client.get("/privacy/audit")).text()
        assert 'id="last-verification"' in page and "dpo" in page
        bad = await b.client.get("/privacy/audit?since=eilen")
        assert bad.status == 400 and 'id="e-since"' in await bad.text()
        # a tampered chain is reported as broken
        owner = await asyncpg.connect(c.db.owner_dsn)
        try:
            await owner.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change")
            await owner.execute("UPDATE audit_log SET reason = 'edited' WHERE seq = 2")
            await owner.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change")
        finally:
            await owner.close()
        page = await (await b.post("/privacy/audit/verify", {})).text()
        assert "THE CHAIN IS BROKEN" in page


async def test_form_attributes_reach_the_browser_as_written(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Autoescaping quoted them: the date pattern became '"\\d{4}-\\d{2}-\\d{2}"' (quotes
    included), which no date matches, and a request could only be received 'today'."""
    from html.parser import HTMLParser

    class Inputs(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.found: dict[str, dict[str, str | None]] = {}

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            named = dict(attrs)
            if tag == "input" and named.get("id"):
                self.found[str(named["id"])] = named

    async with console(db, tmp_path, monkeypatch) as c:
        await c.user("dpo", "privacy")
        b = await c.logged_in("dpo")
        parser = Inputs()
        parser.feed(await (await b.client.get("/privacy/requests")).text())
        received = parser.found["a-received"]
        assert received["pattern"] == r"\d{4}-\d{2}-\d{2}"
        assert re.fullmatch(str(received["pattern"]), "2026-11-25")
        assert parser.found["a-number"]["inputmode"] == "tel"
        root = await c.logged_in("root")
        parser = Inputs()
        parser.feed(await (await root.client.get("/admin/accounts")).text())
        assert parser.found["n-password"]["minlength"] == "12"
        assert parser.found["n-password"]["autocomplete"] == "new-password"
