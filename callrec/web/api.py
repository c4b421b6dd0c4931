"""The JSON API under /api/ (the console's operations for integrations), described by the
OpenAPI document at /api/openapi.json. A session comes from POST /api/session; every
state-changing call then carries the session's CSRF token in the X-CSRF-Token header."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from datetime import date, datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from callrec.privacy.audit import ACTIONS, AuditFilter
from callrec.privacy.core import parse_call_id
from callrec.privacy.deadlines import parse_date
from callrec.privacy.errors import AuthenticationFailed, Invalid
from callrec.routing.errors import RoutingError
from callrec.web import config
from callrec.web.access import Cursor
from callrec.web.bodies import read_body
from callrec.web.console import Req, client_address, handler, set_session_cookie
from callrec.web.errors import FormInvalid, UploadRejected, WebError
from callrec.web.openapi import document
from callrec.web.pages import audio, call_filter, download
from callrec.web.sessions import COOKIE

MAX_JSON = 512 * 1024


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/openapi.json", openapi)
    r.add_post("/api/session", login)
    r.add_get("/api/session", whoami)
    r.add_delete("/api/session", logout)
    r.add_get("/api/calls", calls)
    r.add_get("/api/calls/{call_id}", call)
    r.add_post("/api/calls/{call_id}/listen", listen)
    r.add_get("/api/calls/{call_id}/audio", audio)
    r.add_get("/api/calls/{call_id}/download", download)
    r.add_post("/api/calls/{call_id}/disclosures", disclose)
    r.add_get("/api/requests", requests)
    r.add_post("/api/requests/access", open_access)
    r.add_post("/api/requests/erase", erase)
    r.add_post("/api/requests/{case_id}/export", export)
    r.add_get("/api/holds", holds)
    r.add_post("/api/holds", add_hold)
    r.add_post("/api/holds/{hold_id}/release", release_hold)
    r.add_get("/api/retention", retention)
    r.add_get("/api/audit", audit)
    r.add_get("/api/audit/verify", audit_verify)
    r.add_get("/api/users", users)
    r.add_post("/api/users", add_user)
    r.add_post("/api/users/{username}/roles", user_roles)
    r.add_post("/api/users/{username}/disabled", user_disabled)
    r.add_get("/api/prompts", prompts)
    r.add_put("/api/prompts/{language}/{name}/text", prompt_text)
    r.add_post("/api/prompts/{language}/{name}/studio", prompt_studio)
    r.add_post("/api/prompts/build", prompts_build)
    r.add_get("/api/routing", routing)
    r.add_put("/api/routing", routing_apply)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if hasattr(value, "__fspath__"):
        return None  # server paths never leave the server
    raise TypeError(type(value).__name__)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers={"Cache-Control": "no-store"},
                             dumps=lambda v: json.dumps(v, default=_default, ensure_ascii=False))


async def _body(req: Req) -> dict[str, Any]:
    """A JSON object body (Content-Type application/json: a cross-site form cannot send it)."""
    if req.request.content_type != "application/json":
        raise WebError("the body must be application/json")
    raw = await read_body(req.request, MAX_JSON, WebError("the body is too large"))
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
        raise WebError("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise WebError("the body must be a JSON object")
    return data


def _text(data: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise FormInvalid(key, f"{key}: a string is required")
    return value


@handler("api", login=False)
async def openapi(req: Req) -> web.StreamResponse:
    return _json(document())


@handler("api", login=False)
async def login(req: Req) -> web.StreamResponse:
    data = await _body(req)
    address = client_address(req)
    stamp = req.console.throttle.attempt(address)
    if stamp is None:
        response = _json({"error": 429, "message": "too many failed logins from this address"},
                         429)
        response.headers["Retry-After"] = str(req.console.throttle.retry_after(address))
        return response
    try:
        actor = await req.svc.authenticate(_text(data, "username") or "",
                                           _text(data, "password") or "")
    except AuthenticationFailed as exc:
        return _json({"error": 401, "message": exc.message}, 401)
    req.console.throttle.succeeded(address, stamp)
    token = await req.console.sessions.create(actor)
    session = await req.console.sessions.load(token)
    assert session is not None
    response = _json({"username": actor.username, "roles": sorted(actor.roles),
                      "csrf_token": session.csrf_token,
                      "expires_at": session.expires_at.isoformat()})
    set_session_cookie(req, response, token)
    return response


@handler("api")
async def whoami(req: Req) -> web.StreamResponse:
    s = req.logged_in
    return _json({"username": s.actor.username, "full_name": s.full_name,
                  "roles": sorted(s.actor.roles), "csrf_token": s.csrf_token,
                  "expires_at": s.expires_at.isoformat()})


@handler("api")
async def logout(req: Req) -> web.StreamResponse:
    await req.console.sessions.end(req.logged_in.token_hash)
    response = _json({"ok": True})
    response.del_cookie(COOKIE, path="/")
    return response


def _call_id(req: Req) -> UUID:
    return parse_call_id(req.request.match_info["call_id"])


@handler("api")
async def calls(req: Req) -> web.StreamResponse:
    q = req.request.query
    flt, errors = call_filter(q.get)
    if errors:
        return _json({"error": 400, "message": "invalid filter", "fields": errors}, 400)
    try:
        limit = int(q.get("limit", "50"))
    except ValueError:
        raise Invalid("limit must be a number") from None
    after = Cursor.decode(q["after"]) if q.get("after") else None
    rows, nxt = await req.svc.search_page(req.logged_in.actor, flt, after=after, limit=limit)
    return _json({"calls": rows, "next": nxt.encode() if nxt else None})


@handler("api")
async def call(req: Req) -> web.StreamResponse:
    return _json(await req.svc.call_detail(req.logged_in.actor, _call_id(req)))


@handler("api")
async def listen(req: Req) -> web.StreamResponse:
    cid = _call_id(req)
    data = await _body(req)
    mode = data.get("mode", "listen")
    if mode not in ("listen", "disclose"):
        raise FormInvalid("mode", "mode is listen or disclose")
    purpose = await req.svc.grant_recording(req.logged_in.actor, cid, mode,
                                            _text(data, "purpose") or "")
    await req.console.sessions.grant(req.logged_in, cid, mode, purpose)
    suffix = "?mode=disclose" if mode == "disclose" else ""
    return _json({"audio": f"/api/calls/{cid}/audio{suffix}", "purpose": purpose}, 201)


@handler("api")
async def disclose(req: Req) -> web.StreamResponse:
    cid = _call_id(req)
    data = await _body(req)
    session = req.logged_in
    bundle_id, out = req.svc.new_bundle_path("disclosure")
    result = await req.svc.disclose(
        session.actor, call_id=cid, from_offset=_text(data, "from") or "",
        to_offset=_text(data, "to") or "", recipient=_text(data, "recipient") or "",
        legal_basis=_text(data, "legal_basis") or "",
        approved_by=_text(data, "approved_by") or "", out=out,
        keep=req.svc.bundle_keeper(session.actor, bundle_id, "disclosure", out),
    )
    return _json({"disclosure": result.id, "from_ms": result.from_ms, "to_ms": result.to_ms,
                  "original_sha256": result.original_sha256, "clip_sha256": result.clip_sha256,
                  "bundle": f"/bundles/{bundle_id}"}, 201)


@handler("api")
async def requests(req: Req) -> web.StreamResponse:
    closed = req.query("closed") in ("1", "true")
    cases = await req.svc.list_requests(req.logged_in.actor, include_closed=closed)
    return _json({"requests": [asdict(c) for c in cases]})


@handler("api")
async def open_access(req: Req) -> web.StreamResponse:
    data = await _body(req)
    case = await req.svc.open_access_request(
        req.logged_in.actor, number=_text(data, "number") or "",
        verified_by=_text(data, "verified_by") or "", method=_text(data, "method") or "",
        received=_text(data, "received", required=False),
    )
    return _json(asdict(case), 201)


@handler("api")
async def erase(req: Req) -> web.StreamResponse:
    data = await _body(req)
    case = await req.svc.erase_number(
        req.logged_in.actor, number=_text(data, "number") or "",
        verified_by=_text(data, "verified_by") or "", method=_text(data, "method") or "",
        received=_text(data, "received", required=False),
        refuse_ground=_text(data, "refuse_ground", required=False),
    )
    return _json(asdict(case), 201)


@handler("api")
async def export(req: Req) -> web.StreamResponse:
    try:
        case_id = int(req.request.match_info["case_id"])
    except ValueError:
        raise Invalid("a case id is a number") from None
    session = req.logged_in
    bundle_id, out = req.svc.new_bundle_path("access-export")
    result = await req.svc.export_access(
        session.actor, case_id, out,
        keep=req.svc.bundle_keeper(session.actor, bundle_id, "access-export", out))
    return _json({"case": case_id, "calls": result.calls, "files": result.files,
                  "missing": list(result.missing), "zip_sha256": result.zip_sha256,
                  "bundle": f"/bundles/{bundle_id}"}, 201)


@handler("api")
async def holds(req: Req) -> web.StreamResponse:
    released = req.query("released") in ("1", "true")
    found = await req.svc.list_holds(req.logged_in.actor, include_released=released)
    return _json({"holds": [asdict(h) for h in found]})


@handler("api")
async def add_hold(req: Req) -> web.StreamResponse:
    data = await _body(req)
    hold = await req.svc.add_hold(
        req.logged_in.actor, reason=_text(data, "reason") or "",
        call_id=_text(data, "call_id", required=False),
        number=_text(data, "number", required=False),
    )
    return _json(asdict(hold), 201)


@handler("api")
async def release_hold(req: Req) -> web.StreamResponse:
    try:
        hold_id = int(req.request.match_info["hold_id"])
    except ValueError:
        raise Invalid("a hold id is a number") from None
    data = await _body(req)
    hold = await req.svc.release_hold(req.logged_in.actor, hold_id,
                                      reason=_text(data, "reason") or "")
    return _json(asdict(hold))


@handler("api")
async def retention(req: Req) -> web.StreamResponse:
    return _json(await req.svc.retention_status(req.logged_in.actor))


@handler("api")
async def audit(req: Req) -> web.StreamResponse:
    q = req.request.query
    action = q.get("action") or None
    if action is not None and action not in ACTIONS:
        raise Invalid("unknown action")
    since = req.svc.day_start(parse_date(q["since"])) if q.get("since") else None
    # through the until day, as in the call search
    until = req.svc.day_end(parse_date(q["until"])) if q.get("until") else None
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        raise Invalid("limit must be a number") from None
    flt = AuditFilter(actor=q.get("actor") or None, action=action,
                      target=q.get("target") or None, since=since, until=until,
                      limit=max(1, min(limit, 1000)))
    entries = await req.svc.audit_show(req.logged_in.actor, flt)
    return _json({"entries": [asdict(e) for e in entries]})


@handler("api")
async def audit_verify(req: Req) -> web.StreamResponse:
    verdict = await req.svc.audit_verify(req.logged_in.actor)
    return _json(asdict(verdict))


@handler("api")
async def users(req: Req) -> web.StreamResponse:
    found = await req.svc.list_users(req.logged_in.actor)
    return _json({"users": [asdict(u) for u in found]})


def _expires(req: Req, data: dict[str, Any]) -> datetime | None:
    text = _text(data, "expires", required=False)
    return req.svc.day_end(parse_date(text)) if text else None


def _roles(data: dict[str, Any]) -> list[str]:
    roles = data.get("roles")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise FormInvalid("roles", "roles: a list of role names is required")
    return roles


@handler("api")
async def add_user(req: Req) -> web.StreamResponse:
    data = await _body(req)
    info = await req.svc.add_user(
        req.logged_in.actor, _text(data, "username") or "", _text(data, "password") or "",
        _roles(data), full_name=_text(data, "full_name", required=False) or "",
        expires_at=_expires(req, data), can_listen=data.get("can_listen") is True,
    )
    return _json(asdict(info), 201)


@handler("api")
async def user_roles(req: Req) -> web.StreamResponse:
    data = await _body(req)
    listen = data.get("can_listen")
    info = await req.svc.set_roles(
        req.logged_in.actor, req.request.match_info["username"], _roles(data),
        expires_at=_expires(req, data), can_listen=listen if isinstance(listen, bool) else None,
    )
    return _json(asdict(info))


@handler("api")
async def user_disabled(req: Req) -> web.StreamResponse:
    data = await _body(req)
    if not isinstance(data.get("disabled"), bool):
        raise FormInvalid("disabled", "disabled: true or false")
    info = await req.svc.set_disabled(req.logged_in.actor, req.request.match_info["username"],
                                      data["disabled"])
    return _json(asdict(info))


@handler("api")
async def prompts(req: Req) -> web.StreamResponse:
    await req.svc.authorize_config(req.logged_in.actor, "prompts")
    views, problems = config.list_prompts(req.console.prompts_dir, req.console.prompt_cache_dir)
    return _json({"prompts": [asdict(v) for v in views], "problems": problems})


@handler("api")
async def prompt_text(req: Req) -> web.StreamResponse:
    language, name = req.request.match_info["language"], req.request.match_info["name"]
    session = req.logged_in
    await req.svc.authorize_config(session.actor, f"prompt:{name}/{language}")
    data = await _body(req)
    config.save_text(req.console.prompts_dir, language, name, _text(data, "text") or "")
    report = await config.rebuild(req.console.prompts_dir, req.console.prompt_cache_dir)
    await req.svc.config_changed(session.actor, "prompts", "prompt text edited",
                                 {"prompt": f"{name}/{language}",
                                  "results": [asdict(r) for r in report.results]})
    return _json({"results": [asdict(r) for r in report.results],
                  "problems": list(report.problems)})


@handler("api")
async def prompt_studio(req: Req) -> web.StreamResponse:
    """The request body is the audio file itself; its type is judged by its content."""
    language, name = req.request.match_info["language"], req.request.match_info["name"]
    session = req.logged_in
    await req.svc.authorize_config(session.actor, f"prompt:{name}/{language}")
    data = await read_body(req.request, config.MAX_UPLOAD_BYTES, UploadRejected(
        f"the file is over {config.MAX_UPLOAD_BYTES // (1024 * 1024)} MB"))
    # in a thread: decoding the upload is work the calls on this loop must not wait for
    await asyncio.to_thread(config.save_studio, req.console.prompts_dir, language, name, data)
    report = await config.rebuild(req.console.prompts_dir, req.console.prompt_cache_dir)
    await req.svc.config_changed(session.actor, "prompts", "studio recording uploaded",
                                 {"prompt": f"{name}/{language}", "bytes": len(data),
                                  "results": [asdict(r) for r in report.results]})
    return _json({"results": [asdict(r) for r in report.results],
                  "problems": list(report.problems)}, 201)


@handler("api")
async def prompts_build(req: Req) -> web.StreamResponse:
    session = req.logged_in
    await req.svc.authorize_config(session.actor, "prompts")
    report = await config.rebuild(req.console.prompts_dir, req.console.prompt_cache_dir)
    await req.svc.config_changed(session.actor, "prompts", "prompts rebuilt",
                                 {"results": [asdict(r) for r in report.results]})
    return _json({"results": [asdict(r) for r in report.results],
                  "problems": list(report.problems)})


@handler("api")
async def routing(req: Req) -> web.StreamResponse:
    await req.svc.authorize_config(req.logged_in.actor, "routing")
    provider = req.console.routing
    return _json({"version": provider.current().version,
                  "text": config.read_routing(provider.path)})


@handler("api")
async def routing_apply(req: Req) -> web.StreamResponse:
    session = req.logged_in
    await req.svc.authorize_config(session.actor, "routing")
    data = await _body(req)
    before = req.console.routing.current().version
    try:
        version = await config.apply_routing(req.console.routing, _text(data, "text") or "")
    except RoutingError as exc:
        return _json({"error": 400, "message": "invalid routing",
                      "problems": list(exc.problems)}, 400)
    await req.svc.config_changed(session.actor, "routing", "routing edited over the API",
                                 {"from_version": before, "to_version": version})
    return _json({"version": version})
