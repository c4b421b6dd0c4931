"""Calls in the console: search with keyset pages, the call page, listening with a purpose
(audited once per call and session) and the recording served with HTTP Range."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.dbfixtures import ScratchDatabase
from tests.integration.test_web_support import PASSWORD, console

pytestmark = pytest.mark.db


async def test_search_filters_and_keyset_pages(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        base = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        mine = [await c.call("+358401112222", started=base + timedelta(minutes=i))
                for i in range(7)]
        # the same start time twice: the id breaks the tie, nothing is skipped or repeated
        mine.append(await c.call("0401112222", started=base + timedelta(minutes=3)))
        await c.call("0409998888", started=base, agent="Bertil Agent")
        await c.call("0409998888", started=base, service="0103808001", end_reason="abandoned")
        await c.user("rita", "reviewer")
        b = await c.logged_in("rita")
        seen: list[str] = []
        after = None
        pages = 0
        while True:
            url = "/api/calls?number=040%20111%202222&limit=3" + (f"&after={after}" if after
                                                                  else "")
            data = await (await b.client.get(url)).json()
            seen += [row["call_id"] for row in data["calls"]]
            pages += 1
            after = data["next"]
            if after is None:
                break
        assert pages == 3
        assert sorted(seen) == sorted(str(i) for i in mine) and len(seen) == len(set(seen))
        starts = [r for r in seen]
        assert len(starts) == 8
        # other filters
        async def ids(query: str) -> int:
            resp = await b.client.get(f"/api/calls?{query}")
            assert resp.status == 200, await resp.text()
            return len((await resp.json())["calls"])
        assert await ids("agent=bertil") == 1
        assert await ids("service=0103808001") == 1
        assert await ids("end_reason=abandoned") == 1
        assert await ids("since=2026-03-02&until=2026-03-02") == 10
        assert await ids("since=2026-03-03") == 0
        bad = await b.client.get("/api/calls?since=yesterday")
        assert bad.status == 400 and "since" in (await bad.json())["fields"]
        assert (await b.client.get("/api/calls?number=DROP%20TABLE")).status == 400
        assert (await b.client.get("/api/calls?after=garbage")).status == 400
        # the HTML page: errors next to the field, results with a next-page link
        page = await b.client.get("/calls?number=0401112222&go=1")
        text = await page.text()
        assert text.count('class="open-call"') == 8
        bad_page = await b.client.get("/calls?since=31.12.2025&go=1")
        assert bad_page.status == 400 and 'id="e-since"' in await bad_page.text()
        # every search is audited, the number only as a keyed hash
        searches = [e for e in await c.audit("search") if e["actor"] == "rita"]
        assert searches and all("111" not in e["target"] for e in searches)
        # and names the calls it showed: who saw a person's call can be told later
        shown = json.loads(searches[-1]["details"])["calls"]
        assert len(shown) == 8 and all(str(uuid.UUID(i)) == i for i in shown)


@pytest.mark.parametrize(("zone", "day", "shown", "expires_at"), [
    (None, "2026-03-03", "2026-03-03 00:30:00", "2026-12-31T22:00:00+00:00"),  # Helsinki
    ("UTC", "2026-03-02", "2026-03-02 22:30:00", "2027-01-01T00:00:00+00:00"),
])
async def test_days_and_times_are_the_clinics(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zone: str | None,
    day: str, shown: str, expires_at: str,
) -> None:
    from tests.integration.test_web_api import _api_login

    async with console(db, tmp_path, monkeypatch, timezone=zone) as c:
        # 22:30 UTC: the next day in Helsinki
        await c.call("0401112222", started=datetime(2026, 3, 2, 22, 30, tzinfo=UTC))
        await c.user("rita", "reviewer")
        b = await c.logged_in("rita")

        async def found(since: str) -> int:
            resp = await b.client.get(f"/api/calls?since={since}&until={since}")
            assert resp.status == 200, await resp.text()
            return len((await resp.json())["calls"])

        other = {date(2026, 3, 2).isoformat(), date(2026, 3, 3).isoformat()} - {day}
        assert await found(day) == 1
        assert await found(other.pop()) == 0
        page = await (await b.client.get(f"/calls?since={day}&until={day}&go=1")).text()
        assert shown in page
        # an account valid through a day expires as that day ends in the clinic
        admin = await _api_login(c, "root")
        added = await admin.api("POST", "/api/users", {
            "username": "vendor", "password": PASSWORD, "roles": ["processor"],
            "expires": "2026-12-31"})
        assert added.status == 201, await added.text()
        users = (await (await admin.client.get("/api/users")).json())["users"]
        vendor = next(u for u in users if u["username"] == "vendor")
        assert datetime.fromisoformat(vendor["expires_at"]) == datetime.fromisoformat(expires_at)
        accounts = await (await admin.client.get("/admin/accounts")).text()
        assert "2026-12-31" in accounts
        # the audit's until day is included, as the call search's is
        await c.user("dpo", "privacy")
        dpo = await _api_login(c, "dpo")
        today = datetime.now(ZoneInfo(zone or "Europe/Helsinki")).date().isoformat()
        resp = await dpo.client.get(f"/api/audit?since={today}&until={today}&action=search")
        assert resp.status == 200, await resp.text()
        assert len((await resp.json())["entries"]) == 3  # rita's three searches
        page = await (await dpo.client.get(
            f"/privacy/audit?since={today}&until={today}&action=search")).text()
        assert page.count("rita") >= 3


async def test_listen_with_purpose_then_range_requests(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        cid = await c.call(seconds=4.0)
        data = c.files[cid].read_bytes()
        size = len(data)
        await c.user("rita", "reviewer")
        b = await c.logged_in("rita")
        page = await (await b.client.get(f"/calls/{cid}")).text()
        assert "notice-fi-0123456789ab" in page and "0401234567" in page
        assert "<audio" not in page  # no player before a purpose is given
        # without a grant the file is refused
        assert (await b.client.get(f"/calls/{cid}/audio")).status == 403
        # an empty "other" purpose is an error next to the field
        resp = await b.post(f"/calls/{cid}/listen", {"purpose": "other", "detail": ""})
        assert resp.status == 400 and 'id="e-detail"' in await resp.text()
        resp = await b.post(f"/calls/{cid}/listen", {"purpose": "Training",
                                                     "detail": "new staff course"})
        assert resp.status == 303
        page = await (await b.client.get(f"/calls/{cid}")).text()
        assert f'src="/calls/{cid}/audio"' in page
        full = await b.client.get(f"/calls/{cid}/audio")
        assert full.status == 200 and full.headers["Accept-Ranges"] == "bytes"
        assert await full.read() == data
        part = await b.client.get(f"/calls/{cid}/audio", headers={"Range": "bytes=0-99"})
        assert part.status == 206
        assert part.headers["Content-Range"] == f"bytes 0-99/{size}"
        assert part.headers["Content-Length"] == "100"
        assert await part.read() == data[:100]
        middle = await b.client.get(f"/calls/{cid}/audio", headers={"Range": "bytes=1000-"})
        assert middle.status == 206 and await middle.read() == data[1000:]
        assert middle.headers["Content-Range"] == f"bytes 1000-{size - 1}/{size}"
        tail = await b.client.get(f"/calls/{cid}/audio", headers={"Range": "bytes=-10"})
        assert tail.status == 206 and await tail.read() == data[-10:]
        past = await b.client.get(f"/calls/{cid}/audio", headers={"Range": f"bytes={size}-"})
        assert past.status == 416 and past.headers["Content-Range"] == f"bytes */{size}"
        ignored = await b.client.get(f"/calls/{cid}/audio", headers={"Range": "bytes=0-1,5-9"})
        assert ignored.status == 200 and await ignored.read() == data
        # one listen entry with the purpose, however many range requests followed
        listens = await c.audit("listen")
        assert len(listens) == 1
        assert listens[0]["reason"] == "Training: new staff course"
        assert listens[0]["target"] == f"call:{cid}"
        # a download is audited on its own, with the same purpose
        dl = await b.client.get(f"/calls/{cid}/download")
        assert dl.status == 200 and await dl.read() == data
        assert "attachment" in dl.headers["Content-Disposition"]
        downloads = await c.audit("download")
        assert [d["reason"] for d in downloads] == ["Training: new staff course"]


async def test_grants_do_not_cross_sessions_calls_or_roles(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        cid = await c.call()
        other = await c.call("0407654321")
        await c.user("rita", "reviewer")
        await c.user("dpo", "privacy")
        rita = await c.logged_in("rita")
        resp = await rita.post(f"/calls/{cid}/listen", {"purpose": "Quality review"})
        assert resp.status == 303
        assert (await rita.client.get(f"/calls/{cid}/audio")).status == 200
        # another call needs its own purpose
        assert (await rita.client.get(f"/calls/{other}/audio")).status == 403
        # a second session of the same person too
        rita2 = await c.logged_in("rita")
        assert (await rita2.client.get(f"/calls/{cid}/audio")).status == 403
        # the privacy officer cannot listen for review (no such role), only to prepare a
        # disclosure, which is audited as that
        dpo = await c.logged_in("dpo")
        resp = await dpo.post(f"/calls/{cid}/listen", {"purpose": "Quality review"})
        assert resp.status == 403
        resp = await dpo.post(f"/calls/{cid}/listen", {"mode": "disclose", "purpose": "other",
                                                       "detail": "police request 123/2026"})
        assert resp.status == 303
        assert (await dpo.client.get(f"/calls/{cid}/audio?mode=disclose")).status == 200
        assert (await dpo.client.get(f"/calls/{cid}/audio")).status == 403
        reasons = [e["reason"] for e in await c.audit("listen")]
        assert reasons == ["Quality review",
                           "disclosure preparation: police request 123/2026"]
        # the reviewer's role taken away: the grant no longer opens the file (audited denial)
        await c.privacy.set_roles(c.admin, "rita", ["processor"],
                                  expires_at=datetime.now(UTC) + timedelta(days=3))
        assert (await rita.client.get(f"/calls/{cid}/audio")).status == 403
        # unknown and malformed ids
        assert (await rita2.client.get("/calls/not-a-uuid")).status == 404
        assert (await dpo.client.get(
            "/calls/00000000-0000-0000-0000-000000000000")).status == 404


async def test_missing_recording_file_is_reported_not_a_crash(
    db: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with console(db, tmp_path, monkeypatch) as c:
        cid = await c.call()
        await c.user("rita", "reviewer")
        b = await c.logged_in("rita")
        c.files[cid].unlink()
        resp = await b.post(f"/calls/{cid}/listen", {"purpose": "Quality review"})
        assert resp.status == 503
        assert re.search("missing on disk", await resp.text())
