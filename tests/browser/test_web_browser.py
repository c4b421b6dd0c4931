"""The web console in real headless Chromium against the real stack (Asterisk 22,
PostgreSQL, the callrec service, SIPp peers): a reviewer finds and listens to a call, the
privacy officer sees the listen in the audit log and exports an access bundle, an admin
changes the notice text and the next call plays the new version."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import Stack
from tests.browser.conftest import PASSWORD, Accounts, PlacedCall, db_rows, place_call

# the first test carries the start of the session's stack (Asterisk, PostgreSQL, the service)
# and a recorded call, another a prompt build: more than the default 120 s on a busy machine
pytestmark = pytest.mark.timeout(600)

pytestmark = [pytest.mark.browser, pytest.mark.stack]


def login(chromium: Any, stack: Stack, username: str) -> Any:
    """A fresh browser context (its own cookies) logged in as `username`."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900},
                                   accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(stack.web_url + "/calls")
    assert "/login" in page.url  # no session: the login form
    page.get_by_label(re.compile("Käyttäjätunnus|Username")).fill(username)
    page.get_by_label(re.compile("Salasana|Password")).fill(PASSWORD)
    page.get_by_role("button", name=re.compile("Kirjaudu|Log in")).click()
    page.wait_for_load_state()
    assert "/login" not in page.url, page.content()[:2000]
    return page


def until(page: Any, expression: str, timeout: float = 20.0) -> Any:
    """Poll a JavaScript expression until it is truthy. (Playwright's wait_for_function
    evaluates strings inside the page, which the console's CSP forbids: no unsafe-eval.)"""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if value:
            return value
        page.wait_for_timeout(100)
    raise AssertionError(f"{expression} stayed falsy for {timeout}s (last: {value!r})")


def shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def test_reviewer_finds_listens_and_seeks(
    chromium: Any, stack: Stack, accounts: Accounts, recorded_call: PlacedCall,
    artifacts: Path,
) -> None:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(stack.web_url + "/login")
    shot(page, artifacts, "01-login")
    context.close()

    page = login(chromium, stack, accounts.reviewer)
    page.goto(stack.web_url + "/calls")
    page.get_by_label(re.compile("Soittajan numero|Caller number")).fill("040 123 0001")
    page.get_by_role("button", name=re.compile("^(Hae|Search)$")).click()
    page.wait_for_selector("a.open-call")
    shot(page, artifacts, "02-search")
    page.set_viewport_size({"width": 768, "height": 1024})  # a tablet held upright
    shot(page, artifacts, "02-search-tablet")
    page.set_viewport_size({"width": 1280, "height": 900})
    assert page.locator("a.open-call").count() >= 1
    page.locator("a.open-call").first.click()
    page.wait_for_selector("#notice-version")
    assert page.inner_text("#notice-version") == recorded_call.notice_prompt
    assert "<audio" not in page.content()  # the purpose comes first
    page.get_by_label(re.compile("Koulutus|Training")).check()
    page.get_by_label(re.compile("Tarkennus|Details")).fill("browser test")
    ranges: list[int] = []
    page.on("response", lambda r: ranges.append(r.status) if "/audio" in r.url else None)
    page.click("#start-listening")
    page.wait_for_selector("audio#audio")
    # the audio loads (metadata), plays (currentTime advances) and seeks
    until(page, "document.getElementById('audio').readyState >= 1")
    duration = page.evaluate("document.getElementById('audio').duration")
    assert abs(duration * 1000 - recorded_call.duration_ms) < 500
    page.evaluate("document.getElementById('audio').play()")
    until(page, "document.getElementById('audio').currentTime > 0.5")
    page.evaluate("document.getElementById('audio').pause()")
    box = page.locator("#timeline").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] / 2)
    until(page, f"Math.abs(document.getElementById('audio').currentTime - {duration * 0.75}) < 0.3")
    page.evaluate("document.getElementById('audio').play()")
    until(page, f"document.getElementById('audio').currentTime > {duration * 0.75 + 0.3}")
    assert 206 in ranges, ranges  # the player fetched by Range
    shot(page, artifacts, "03-call")

    # the privacy officer sees the listen, with the purpose, in the audit log
    dpo = login(chromium, stack, accounts.privacy)
    dpo.goto(stack.web_url + "/privacy/audit?action=listen")
    row = dpo.locator("tr.a-listen", has_text=recorded_call.call_id)
    assert row.count() == 1
    assert accounts.reviewer in row.inner_text() and "browser test" in row.inner_text()
    dpo.click("#verify-chain")
    dpo.wait_for_selector("#chain")
    assert dpo.locator("#chain.ok").count() == 1
    shot(dpo, artifacts, "04-audit")
    # and the reviewer cannot open the audit log
    response = page.goto(stack.web_url + "/privacy/audit")
    assert response is not None and response.status == 403


def test_privacy_officer_exports_an_access_bundle(
    chromium: Any, stack: Stack, accounts: Accounts, recorded_call: PlacedCall,
    artifacts: Path, tmp_path: Path,
) -> None:
    page = login(chromium, stack, accounts.privacy)
    page.goto(stack.web_url + "/privacy/requests")
    form = page.locator("#access-form")
    form.get_by_label(re.compile("Soittajan numero|Caller number")).fill(
        recorded_call.caller_number)
    form.get_by_label(re.compile("Tarkistustapa|Verification method")).fill("ID card")
    form.get_by_role("button").click()
    page.wait_for_selector("button.export")
    shot(page, artifacts, "05-requests")
    page.locator("button.export").last.click()
    page.wait_for_selector("#bundle-link")
    with page.expect_download() as info:
        page.click("#bundle-link")
    target = tmp_path / "bundle.zip"
    info.value.save_as(str(target))
    bundle = zipfile.ZipFile(io.BytesIO(target.read_bytes()))
    meta = json.loads(bundle.read("metadata.json"))
    ids = [c["call_id"] for c in meta["calls"]]
    assert recorded_call.call_id in ids
    assert f"recordings/{recorded_call.call_id}.wav" in bundle.namelist()
    assert all(c["caller_number"] == recorded_call.caller_number for c in meta["calls"])
    shot(page, artifacts, "06-bundle")


def test_privacy_officer_discloses_a_range_chosen_on_the_player(
    chromium: Any, stack: Stack, accounts: Accounts, recorded_call: PlacedCall,
    artifacts: Path, tmp_path: Path,
) -> None:
    page = login(chromium, stack, accounts.privacy)
    page.goto(f"{stack.web_url}/calls/{recorded_call.call_id}")
    page.fill("#f-disclose-purpose", "police request 7/2026")
    page.click("#open-disclosure-player")
    page.wait_for_selector("audio#audio")
    until(page, "document.getElementById('audio').readyState >= 1")
    box = page.locator("#timeline").bounding_box()
    assert box is not None
    for share, button in ((0.25, "#mark-start"), (0.75, "#mark-end")):
        page.mouse.click(box["x"] + box["width"] * share, box["y"] + box["height"] / 2)
        page.click(button)
    start, end = page.input_value("#f-from"), page.input_value("#f-to")
    assert re.fullmatch(r"\d\d:\d\d\.\d{3}", start) and start < end
    page.fill("#d-recipient", "Helsinki police")
    page.fill("#d-legal_basis", "Criminal investigation, case 7/2026")
    shot(page, artifacts, "10-disclosure")
    page.click("#cut-clip")
    page.wait_for_selector("#bundle-link")
    with page.expect_download() as info:
        page.click("#bundle-link")
    target = tmp_path / "clip.zip"
    info.value.save_as(str(target))
    manifest = json.loads(zipfile.ZipFile(target).read("manifest.json"))

    def ms(text: str) -> int:
        minutes, seconds = text.split(":")
        return round((int(minutes) * 60 + float(seconds)) * 1000)

    assert (manifest["clip"]["from_ms"], manifest["clip"]["to_ms"]) == (ms(start), ms(end))
    assert manifest["recipient"] == "Helsinki police"
    assert page.locator("#disclosure table", has_text="Helsinki police").count() == 1


def test_admin_changes_the_notice_and_the_next_call_plays_it(
    chromium: Any, stack: Stack, accounts: Accounts, recorded_call: PlacedCall,
    artifacts: Path, restore_config: None,
) -> None:
    page = login(chromium, stack, accounts.admin)
    page.goto(stack.web_url + "/admin/routing")
    shot(page, artifacts, "07-routing")
    page.goto(stack.web_url + "/admin/accounts")
    shot(page, artifacts, "08-accounts")
    page.goto(stack.web_url + "/admin/prompts")
    section = page.locator("#prompt-fi-notice")
    before = section.locator("code.live-version").inner_text()
    assert recorded_call.notice_prompt == f"notice-fi-{before}"
    section.locator("textarea").fill("Tervetuloa. Puhelu tallennetaan laadun varmistamiseksi.")
    section.get_by_role("button", name=re.compile("Tallenna teksti|Save text")).click()
    page.wait_for_selector("#build-report", timeout=120_000)
    after = page.locator("#prompt-fi-notice code.live-version").inner_text()
    assert after != before
    assert page.locator("#prompt-fi-notice audio").count() == 1  # preview in the page
    shot(page, artifacts, "09-prompts")

    call = place_call(stack, "0401230002", talk_seconds=3.0)
    assert call.notice_prompt == f"notice-fi-{after}"
    rows = db_rows(stack, "SELECT action, target FROM audit_log WHERE action = 'config_change'")
    assert any(r["target"] == "prompts" for r in rows)


def test_admin_edits_the_routing_with_validation(
    chromium: Any, stack: Stack, accounts: Accounts, artifacts: Path, restore_config: None,
) -> None:
    page = login(chromium, stack, accounts.admin)
    page.goto(stack.web_url + "/admin/routing")
    before = page.inner_text("#routing-version")
    text = page.input_value("#routing-text")
    page.fill("#routing-text", text.replace('strategy = "in_order"', 'strategy = "sometimes"', 1))
    page.get_by_role("button", name=re.compile("Tarkista|Check")).click()
    problems = page.locator("#routing-problems")
    assert "routing.toml:" in problems.inner_text() and "sometimes" in problems.inner_text()
    assert page.inner_text("#routing-version") == before  # nothing applied
    shot(page, artifacts, "11-routing-error")
    page.fill("#routing-text", text.replace("ring_timeout = 15", "ring_timeout = 14", 1))
    page.get_by_role("button", name=re.compile("Tarkista|Check")).click()
    page.wait_for_selector(".notice")
    assert page.inner_text("#routing-version") != before
    assert "ring_timeout = 14" in stack.config_path.read_text()
