"""The console's HTML pages: login, calls, the privacy officer's and the admin's pages."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import date
from typing import Any
from uuid import UUID

from aiohttp import BodyPartReader, web

from callrec.privacy.audit import ACTIONS, AuditFilter
from callrec.privacy.core import parse_call_id, username_field
from callrec.privacy.deadlines import parse_date
from callrec.privacy.errors import AuthenticationFailed, Forbidden, Invalid, PrivacyError
from callrec.privacy.roles import Operation, Role, permits
from callrec.routing.errors import RoutingError
from callrec.web import config, i18n
from callrec.web.access import END_REASONS, CallFilter, Cursor
from callrec.web.bodies import require_multipart
from callrec.web.console import (
    LOGIN_COOKIE,
    Req,
    client_address,
    handler,
    local_path,
    login_token,
    new_login_token,
    set_session_cookie,
)
from callrec.web.errors import CsrfRejected, FormInvalid, UploadRejected
from callrec.web.ranges import send_file
from callrec.web.sessions import COOKIE

PURPOSES = ("Quality review", "Training", "Checking the correctness of an answer",
            "Service development")
ROLE_NAMES = ("admin", "reviewer", "privacy", "processor")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", home)
    r.add_get("/login", login_form)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_get("/lang/{code}", set_language)
    r.add_get("/calls", calls)
    r.add_get("/calls/{call_id}", call_page)
    r.add_post("/calls/{call_id}/listen", listen)
    r.add_get("/calls/{call_id}/audio", audio)
    r.add_get("/calls/{call_id}/download", download)
    r.add_post("/calls/{call_id}/hold", hold_call)
    r.add_post("/calls/{call_id}/disclose", disclose)
    r.add_get("/bundles/{bundle_id}", bundle)
    r.add_get("/privacy/requests", requests_page)
    r.add_post("/privacy/requests/access", open_access)
    r.add_post("/privacy/requests/erase", erase)
    r.add_post("/privacy/requests/{case_id}/export", export)
    r.add_get("/privacy/holds", holds_page)
    r.add_post("/privacy/holds", add_hold)
    r.add_post("/privacy/holds/{hold_id}/release", release_hold)
    r.add_get("/privacy/retention", retention_page)
    r.add_get("/privacy/audit", audit_page)
    r.add_post("/privacy/audit/verify", audit_verify)
    r.add_get("/account", account_page)
    r.add_post("/account/password", own_password)
    r.add_get("/admin/accounts", accounts_page)
    r.add_post("/admin/accounts", add_account)
    r.add_post("/admin/accounts/{username}/roles", account_roles)
    r.add_post("/admin/accounts/{username}/state", account_state)
    r.add_post("/admin/accounts/{username}/password", account_password)
    r.add_get("/admin/prompts", prompts_page)
    r.add_post("/admin/prompts/build", prompts_build)
    r.add_post("/admin/prompts/{language}/{name}/text", prompt_text)
    r.add_post("/admin/prompts/{language}/{name}/studio", prompt_studio)
    r.add_post("/admin/prompts/{language}/{name}/studio/remove", prompt_studio_remove)
    r.add_get("/admin/routing", routing_page)
    r.add_post("/admin/routing", routing_apply)


# Which form field a privacy-layer message is about (the layer's messages name the thing
# they reject); first match wins, and only fields of the form in question are considered.
_FIELD_WORDS = (
    ("phone number", "number"), ("verification method", "method"),
    ("not an active account", "verified_by"), ("refusal ground", "refuse_ground"),
    ("received", "received"), ("date", "received"), ("call id", "call_id"),
    ("no call", "call_id"), ("full name", "full_name"), ("username", "username"),
    ("password", "password"), ("role", "roles"), ("expir", "expires"),
    ("recipient", "recipient"), ("legal basis", "legal_basis"), ("offset", "from"),
    ("range", "from"), ("reason", "reason"),
)


def field_errors(prefix: str, message: str, fields: tuple[str, ...]) -> dict[str, str]:
    """{"<prefix>-<field>": message} for the field the message is about, else the form's."""
    lowered = message.lower()
    for word, name in _FIELD_WORDS:
        if word in lowered and name in fields:
            return {f"{prefix}-{name}": message}
    return {prefix: message}


def _see_other(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


# -- login ------------------------------------------------------------------------------------


@handler("page", login=False)
async def home(req: Req) -> web.StreamResponse:
    session = req.session
    if session is None:
        raise _see_other("/login")
    roles, listen = session.actor.roles, session.actor.can_listen
    if permits(roles, listen, Operation.CALL_SEARCH):
        raise _see_other("/calls")
    if Role.ADMIN in roles:
        raise _see_other("/admin/accounts")
    if permits(roles, listen, Operation.RETENTION_PREVIEW):
        raise _see_other("/privacy/retention")
    raise _see_other("/account")


def _login_page(req: Req, status: int = 200, error: str = "", username: str = "",
                notice: str = "") -> web.Response:
    token = login_token()
    response = req.render("login.html", status=status, error=error, username=username,
                          login_token=token, next=local_path(req.query("next")), notice=notice)
    new_login_token(req, response, token)
    return response


@handler("page", login=False)
async def login_form(req: Req) -> web.StreamResponse:
    if req.session is not None:
        raise _see_other(local_path(req.query("next")))
    return _login_page(req, notice="Your session has ended. Please log in again."
                       if req.query("next") else "")


@handler("page", login=False)
async def login(req: Req) -> web.StreamResponse:
    given = req.field("login_token")
    expected = req.request.cookies.get(LOGIN_COOKIE, "")
    username = req.field("username")[:64]
    if not expected or not given or not _same(given, expected):
        return _login_page(req, 403, "missing or wrong CSRF token: reload the page and try again",
                           username)
    address = client_address(req)
    stamp = req.console.throttle.attempt(address)
    if stamp is None:
        response = _login_page(req, 429, req.t("Too many failed logins from this address. "
                                               "Try again later."), username)
        response.headers["Retry-After"] = str(req.console.throttle.retry_after(address))
        return response
    try:
        actor = await req.svc.authenticate(username, req.field("password"))
    except AuthenticationFailed:
        return _login_page(req, 401, req.t(
            "Wrong username or password, or the account is locked for a while."), username)
    req.console.throttle.succeeded(address, stamp)
    token = await req.console.sessions.create(actor)
    response = web.HTTPSeeOther(local_path(req.field("next")))
    set_session_cookie(req, response, token)
    response.del_cookie(LOGIN_COOKIE, path="/login")
    raise response


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


@handler("page")
async def logout(req: Req) -> web.StreamResponse:
    await req.console.sessions.end(req.logged_in.token_hash)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


@handler("page", login=False)
async def set_language(req: Req) -> web.StreamResponse:
    code = req.request.match_info["code"]
    response = web.HTTPSeeOther(local_path(req.query("next")))
    if code in i18n.LANGUAGES:
        response.set_cookie(i18n.COOKIE, code, samesite="Lax", path="/",
                            max_age=365 * 24 * 3600, httponly=True)
    raise response


# -- calls ------------------------------------------------------------------------------------


def call_filter(get: Any) -> tuple[CallFilter, dict[str, str]]:
    """The search form's filters; errors by field."""
    errors: dict[str, str] = {}

    def day(name: str) -> date | None:
        value = (get(name) or "").strip()
        if not value:
            return None
        try:
            return parse_date(value)
        except Invalid as exc:
            errors[name] = exc.message
            return None

    reason = (get("end_reason") or "").strip() or None
    if reason is not None and reason not in END_REASONS:
        errors["end_reason"] = "unknown end reason"
        reason = None
    flt = CallFilter(
        number=(get("number") or "").strip() or None,
        service_number=(get("service") or "").strip()[:30] or None,
        agent=(get("agent") or "").strip()[:100] or None,
        since=day("since"), until=day("until"), end_reason=reason,
    )
    return flt, errors


@handler("page")
async def calls(req: Req) -> web.StreamResponse:
    q = req.request.query
    flt, errors = call_filter(q.get)
    rows: list[dict[str, Any]] = []
    nxt = None
    searched = any(q.get(k) for k in ("number", "service", "agent", "since", "until",
                                      "end_reason", "after", "go"))
    if searched and not errors:
        try:
            after = Cursor.decode(q["after"]) if q.get("after") else None
            rows, cursor = await req.svc.search_page(req.logged_in.actor, flt, after=after)
            nxt = cursor.encode() if cursor else None
        except Invalid as exc:
            errors["number" if "number" in exc.message else "form"] = exc.message
    elif not searched:
        # a reviewer lands on the page: nothing is searched (and audited) until asked
        await req.svc.authorize(req.logged_in.actor, Operation.CALL_SEARCH, "calls")
    params = {k: v for k, v in q.items() if k != "after"}
    return req.render("calls.html", rows=rows, errors=errors, q=q, next_cursor=nxt,
                      params=params, end_reasons=END_REASONS, searched=searched,
                      status=400 if errors else 200)


def _call_id(req: Req) -> UUID:
    try:
        return parse_call_id(req.request.match_info["call_id"])
    except Invalid:
        raise web.HTTPNotFound() from None


async def _call_page(req: Req, *, errors: dict[str, str] | None = None,
                    status: int = 200) -> web.StreamResponse:
    cid = _call_id(req)
    session = req.logged_in
    call = await req.svc.call_detail(session.actor, cid)
    grants = await req.console.sessions.grants(session, cid)
    roles, listen = session.actor.roles, session.actor.can_listen
    privacy = Role.PRIVACY in roles
    disclosures = await req.svc.disclosures_of(session.actor, cid) if privacy else []
    return req.render(
        "call.html", call=call, grants=grants, purposes=PURPOSES,
        can_listen=permits(roles, listen, Operation.CALL_LISTEN),
        can_disclose=permits(roles, listen, Operation.DISCLOSE), disclosures=disclosures,
        errors=errors or {}, form=req.form, bundle=req.query("bundle"), status=status,
        done=req.query("done"),
    )


@handler("page")
async def call_page(req: Req) -> web.StreamResponse:
    return await _call_page(req)


def _purpose(req: Req) -> str:
    choice = req.field("purpose")
    detail = req.field("detail").strip()
    if choice == "other" or choice not in PURPOSES:
        if not detail:
            raise FormInvalid("detail", "describe the purpose")
        return detail
    return f"{choice}: {detail}" if detail else choice


@handler("page")
async def listen(req: Req) -> web.StreamResponse:
    cid = _call_id(req)
    mode = "disclose" if req.field("mode") == "disclose" else "listen"
    try:
        purpose = _purpose(req)
        granted = await req.svc.grant_recording(req.logged_in.actor, cid, mode, purpose)
    except (FormInvalid, Invalid) as exc:
        field = exc.field if isinstance(exc, FormInvalid) else "detail"
        if mode == "disclose":  # its own form's field (a privacy role sees no listen form)
            field = "disclose-purpose"
        return await _call_page(req, errors={field: exc.message}, status=400)
    await req.console.sessions.grant(req.logged_in, cid, mode, granted)
    raise _see_other(f"/calls/{cid}#player")


async def _granted(req: Req, cid: UUID, mode: str) -> str:
    grants = await req.console.sessions.grants(req.logged_in, cid)
    if mode not in grants:
        raise Forbidden("state the purpose of listening on the call page first")
    return grants[mode]


@handler("file")
async def audio(req: Req) -> web.StreamResponse:
    cid = _call_id(req)
    mode = "disclose" if req.query("mode") == "disclose" else "listen"
    await _granted(req, cid, mode)
    path = await req.svc.recording_path(req.logged_in.actor, cid, mode)
    return await send_file(req.request, path, content_type="audio/wav")


@handler("file")
async def download(req: Req) -> web.StreamResponse:
    cid = _call_id(req)
    purpose = await _granted(req, cid, "listen")
    path = await req.svc.download_recording(req.logged_in.actor, cid, purpose)
    return await send_file(req.request, path, content_type="audio/wav",
                           download_name=f"call-{cid}.wav")


@handler("page")
async def hold_call(req: Req) -> web.StreamResponse:
    cid = _call_id(req)
    try:
        await req.svc.add_hold(req.logged_in.actor, reason=req.field("reason"), call_id=cid)
    except Invalid as exc:
        return await _call_page(req, errors=field_errors("c", exc.message, ("reason",)),
                                           status=400)
    raise _see_other(f"/calls/{cid}?done=hold")


@handler("page")
async def disclose(req: Req) -> web.StreamResponse:
    cid = _call_id(req)
    session = req.logged_in
    bundle_id, out = req.svc.new_bundle_path("disclosure")
    try:
        await req.svc.disclose(
            session.actor, call_id=cid, from_offset=req.field("from"),
            to_offset=req.field("to"), recipient=req.field("recipient"),
            legal_basis=req.field("legal_basis"), approved_by=req.field("approved_by"), out=out,
            keep=req.svc.bundle_keeper(session.actor, bundle_id, "disclosure", out),
        )
    except Invalid as exc:
        errors = field_errors("d", exc.message,
                              ("recipient", "legal_basis", "approved_by", "from"))
        if "d-from" in errors:
            errors = {"f-from": errors["d-from"]}
        elif "not an active account" in exc.message:
            errors = {"d-approved_by": exc.message}
        return await _call_page(req, errors=errors, status=400)
    raise _see_other(f"/calls/{cid}?bundle={bundle_id}#disclosure")


@handler("file")
async def bundle(req: Req) -> web.StreamResponse:
    try:
        bundle_id = UUID(req.request.match_info["bundle_id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    found = await req.svc.open_bundle(req.logged_in.actor, bundle_id)
    return await send_file(req.request, found.path, content_type="application/zip",
                           download_name=found.download_name,
                           extra_headers={"X-Bundle-SHA256": found.sha256})


# -- privacy officer --------------------------------------------------------------------------


async def _requests_page(req: Req, *, errors: dict[str, str] | None = None,
                         status: int = 200, erasure: Any = None, which: str = ""
                         ) -> web.StreamResponse:
    session = req.logged_in
    include_closed = req.query("closed") == "1"
    cases = await req.svc.list_requests(session.actor, include_closed=include_closed)
    bundles = {b["ref"]: b for b in await req.svc.bundles_by(session.actor)}
    return req.render("requests.html", cases=cases, errors=errors or {}, form=req.form,
                      bundles=bundles, include_closed=include_closed, erasure=erasure,
                      new_bundle=req.query("bundle"), status=status, which=which,
                      done=req.query("done"))


@handler("page")
async def requests_page(req: Req) -> web.StreamResponse:
    return await _requests_page(req)


@handler("page")
async def open_access(req: Req) -> web.StreamResponse:
    try:
        await req.svc.open_access_request(
            req.logged_in.actor, number=req.field("number"),
            verified_by=req.field("verified_by"), method=req.field("method"),
            received=req.field("received").strip() or None,
        )
    except Invalid as exc:
        return await _requests_page(
            req, which="a", errors=field_errors(
                "a", exc.message, ("number", "verified_by", "method", "received")),
                                               status=400)
    raise _see_other("/privacy/requests?done=access")


@handler("page")
async def erase(req: Req) -> web.StreamResponse:
    ground = req.field("refuse_ground").strip() or None
    try:
        case = await req.svc.erase_number(
            req.logged_in.actor, number=req.field("number"),
            verified_by=req.field("verified_by"), method=req.field("method"),
            received=req.field("received").strip() or None, refuse_ground=ground,
        )
    except Invalid as exc:
        return await _requests_page(
            req, which="e", errors=field_errors(
                "e", exc.message, ("number", "verified_by", "method", "received",
                                   "refuse_ground")),
                                               status=400)
    return await _requests_page(req, erasure=case)


@handler("page")
async def export(req: Req) -> web.StreamResponse:
    try:
        case_id = int(req.request.match_info["case_id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    session = req.logged_in
    bundle_id, out = req.svc.new_bundle_path("access-export")
    await req.svc.export_access(
        session.actor, case_id, out,
        keep=req.svc.bundle_keeper(session.actor, bundle_id, "access-export", out))
    raise _see_other(f"/privacy/requests?bundle={bundle_id}")


async def _holds_page(req: Req, *, errors: dict[str, str] | None = None,
                     status: int = 200) -> web.StreamResponse:
    include = req.query("released") == "1"
    holds = await req.svc.list_holds(req.logged_in.actor, include_released=include)
    return req.render("holds.html", holds=holds, errors=errors or {}, form=req.form,
                      include_released=include, status=status, done=req.query("done"))


@handler("page")
async def holds_page(req: Req) -> web.StreamResponse:
    return await _holds_page(req)


@handler("page")
async def add_hold(req: Req) -> web.StreamResponse:
    call_id = req.field("call_id").strip() or None
    number = req.field("number").strip() or None
    try:
        await req.svc.add_hold(req.logged_in.actor, reason=req.field("reason"),
                               call_id=call_id, number=number)
    except (Invalid, PrivacyError) as exc:
        if isinstance(exc, Forbidden):
            raise
        return await _holds_page(req, errors=field_errors("h", exc.message,
                                                          ("call_id", "number", "reason")),
                                            status=exc.http_status)
    raise _see_other("/privacy/holds?done=hold")


@handler("page")
async def release_hold(req: Req) -> web.StreamResponse:
    try:
        hold_id = int(req.request.match_info["hold_id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    try:
        await req.svc.release_hold(req.logged_in.actor, hold_id, reason=req.field("reason"))
    except Invalid as exc:
        return await _holds_page(req, errors={f"release{hold_id}": exc.message},
                                            status=400)
    raise _see_other("/privacy/holds?done=release")


@handler("page")
async def retention_page(req: Req) -> web.StreamResponse:
    status = await req.svc.retention_status(req.logged_in.actor)
    return req.render("retention.html", r=status)


@handler("page")
async def audit_page(req: Req) -> web.StreamResponse:
    return await _audit_page(req)


async def _audit_page(req: Req, verdict: Any = None) -> web.StreamResponse:
    q = req.request.query
    errors: dict[str, str] = {}

    def when(name: str, *, end: bool = False) -> Any:
        value = (q.get(name) or "").strip()
        if not value:
            return None
        try:
            day = parse_date(value)
        except Invalid as exc:
            errors[name] = exc.message
            return None
        return req.svc.day_end(day) if end else req.svc.day_start(day)

    action = (q.get("action") or "").strip() or None
    if action is not None and action not in ACTIONS:
        errors["action"] = "unknown action"
        action = None
    flt = AuditFilter(actor=(q.get("actor") or "").strip().lower() or None, action=action,
                      target=(q.get("target") or "").strip() or None, since=when("since"),
                      until=when("until", end=True), limit=200)  # through that day
    session = req.logged_in
    entries = await req.svc.audit_show(session.actor, flt)
    return req.render("audit.html", entries=entries, verdict=verdict, q=q, errors=errors,
                      actions=sorted(ACTIONS), status=400 if errors else 200,
                      last=await req.svc.last_verification(session.actor))


@handler("page")
async def audit_verify(req: Req) -> web.StreamResponse:
    """Walk the whole chain now (O(entries): on demand, not on every page view)."""
    verdict = await req.svc.audit_verify(req.logged_in.actor)
    return await _audit_page(req, verdict=verdict)


# -- accounts ---------------------------------------------------------------------------------


async def _account_page(req: Req, *, errors: dict[str, str] | None = None,
                       status: int = 200) -> web.StreamResponse:
    return req.render("account.html", errors=errors or {}, status=status,
                      done=req.query("done"))


@handler("page")
async def account_page(req: Req) -> web.StreamResponse:
    return await _account_page(req)


@handler("page")
async def own_password(req: Req) -> web.StreamResponse:
    session = req.logged_in
    try:
        # the password in use first: a session left open (or a stolen cookie) is not enough;
        # a wrong one counts towards the account's lockout like a failed login
        await req.svc.authenticate(session.actor.username, req.field("current_password"))
    except AuthenticationFailed:
        return await _account_page(
            req, errors={"current_password": req.t("This is not your current password.")},
            status=400)
    try:
        await req.svc.change_password(session.actor, session.actor.username,
                                      req.field("new_password"))
    except Invalid as exc:
        return await _account_page(req, errors={"new_password": exc.message},
                                              status=400)
    raise await _renewed(req, _see_other("/account?done=password"))


async def _renewed(req: Req, response: web.HTTPSeeOther) -> web.HTTPSeeOther:
    """A new password ends every session opened before it, the one that set it too: that
    one goes on in a new session."""
    session = req.logged_in
    await req.console.sessions.end(session.token_hash)
    set_session_cookie(req, response, await req.console.sessions.create(session.actor))
    return response


async def _accounts_page(req: Req, *, errors: dict[str, str] | None = None,
                        status: int = 200) -> web.StreamResponse:
    users = await req.svc.list_users(req.logged_in.actor)
    return req.render("accounts.html", users=users, errors=errors or {}, form=req.form,
                      role_names=ROLE_NAMES, status=status, done=req.query("done"))


@handler("page")
async def accounts_page(req: Req) -> web.StreamResponse:
    return await _accounts_page(req)


def _expiry(req: Req, name: str = "expires") -> Any:
    value = req.field(name).strip()
    if not value:
        return None
    return req.svc.day_end(parse_date(value))


@handler("page")
async def add_account(req: Req) -> web.StreamResponse:
    try:
        await req.svc.add_user(
            req.logged_in.actor, req.field("username"), req.field("password"),
            req.form.getall("roles", []), full_name=req.field("full_name"),
            expires_at=_expiry(req), can_listen=req.field("can_listen") == "on",
        )
    except (Invalid, PrivacyError) as exc:
        if isinstance(exc, Forbidden):
            raise
        return await _accounts_page(req, errors=field_errors(
            "n", exc.message, ("username", "full_name", "password", "roles", "expires")),
                                               status=exc.http_status)
    raise _see_other("/admin/accounts?done=add")


@handler("page")
async def account_roles(req: Req) -> web.StreamResponse:
    name = req.request.match_info["username"]
    try:
        await req.svc.set_roles(req.logged_in.actor, name, req.form.getall("roles", []),
                                expires_at=_expiry(req),
                                can_listen=req.field("can_listen") == "on")
    except (Invalid, PrivacyError) as exc:
        if isinstance(exc, Forbidden):
            raise
        return await _accounts_page(req, errors={f"user:{name}": exc.message},
                                               status=exc.http_status)
    raise _see_other("/admin/accounts?done=roles")


@handler("page")
async def account_state(req: Req) -> web.StreamResponse:
    name = req.request.match_info["username"]
    try:
        await req.svc.set_disabled(req.logged_in.actor, name, req.field("disabled") == "1")
    except (Invalid, PrivacyError) as exc:
        if isinstance(exc, Forbidden):
            raise
        return await _accounts_page(req, errors={f"user:{name}": exc.message},
                                               status=exc.http_status)
    raise _see_other("/admin/accounts?done=state")


@handler("page")
async def account_password(req: Req) -> web.StreamResponse:
    name = req.request.match_info["username"]
    try:
        await req.svc.change_password(req.logged_in.actor, name, req.field("new_password"))
    except (Invalid, PrivacyError) as exc:
        if isinstance(exc, Forbidden):
            raise
        return await _accounts_page(req, errors={f"user:{name}": exc.message},
                                               status=exc.http_status)
    done = _see_other("/admin/accounts?done=password")
    if username_field(name) == req.logged_in.actor.username:  # valid: it was just changed
        raise await _renewed(req, done)
    raise done


# -- prompts and routing ----------------------------------------------------------------------


async def _prompts_page(req: Req, *, errors: dict[str, str] | None = None, status: int = 200,
                       report: Any = None) -> web.StreamResponse:
    await req.svc.authorize_config(req.logged_in.actor, "prompts")
    c = req.console
    views, problems = config.list_prompts(c.prompts_dir, c.prompt_cache_dir)
    return req.render("prompts.html", prompts=views, problems=problems, errors=errors or {},
                      report=report, status=status, done=req.query("done"))


@handler("page")
async def prompts_page(req: Req) -> web.StreamResponse:
    return await _prompts_page(req)


def _prompt_key(req: Req) -> tuple[str, str]:
    return req.request.match_info["language"], req.request.match_info["name"]


async def _rebuild(req: Req, reason: str, details: dict[str, Any]) -> Any:
    c = req.console
    report = await config.rebuild(c.prompts_dir, c.prompt_cache_dir)
    details = {**details, "results": [asdict(r) for r in report.results],
               "problems": list(report.problems)}
    await req.svc.config_changed(req.logged_in.actor, "prompts", reason, details)
    return report


@handler("page")
async def prompt_text(req: Req) -> web.StreamResponse:
    language, name = _prompt_key(req)
    await req.svc.authorize_config(req.logged_in.actor, f"prompt:{name}/{language}")
    try:
        config.save_text(req.console.prompts_dir, language, name, req.field("text"))
    except FormInvalid as exc:
        return await _prompts_page(
            req, errors={f"{language}/{name}": exc.message}, status=400)
    report = await _rebuild(req, "prompt text edited", {"prompt": f"{name}/{language}"})
    return await _prompts_page(req, report=report)


@handler("page", multipart=True)
async def prompt_studio(req: Req) -> web.StreamResponse:
    language, name = _prompt_key(req)
    session = req.logged_in
    data = await _read_upload(
        req, lambda: req.svc.authorize_config(session.actor, f"prompt:{name}/{language}"))
    try:
        # in a thread: decoding the upload is work the calls on this loop must not wait for
        await asyncio.to_thread(config.save_studio, req.console.prompts_dir, language, name,
                                data)
    except (UploadRejected, FormInvalid) as exc:
        return await _prompts_page(
            req, errors={f"{language}/{name}": exc.message}, status=400)
    report = await _rebuild(req, "studio recording uploaded",
                            {"prompt": f"{name}/{language}", "bytes": len(data)})
    return await _prompts_page(req, report=report)


async def _read_upload(req: Req, authorize: Callable[[], Awaitable[None]]) -> bytes:
    """A multipart form: csrf_token first, then `file`, at most config.MAX_UPLOAD_BYTES.
    The token and then `authorize` are checked before any byte of the file is read."""
    require_multipart(req.request)
    try:
        return await _read_parts(req, authorize)
    except ValueError:  # aiohttp's multipart reader on a malformed body
        raise UploadRejected("the form could not be read as multipart/form-data") from None


async def _read_parts(req: Req, authorize: Callable[[], Awaitable[None]]) -> bytes:
    reader = await req.request.multipart()
    token: str | None = None
    data = b""
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "csrf_token":
            token = (await part.read(decode=False))[:200].decode(errors="replace")
            if not req.logged_in.csrf_ok(token):
                raise CsrfRejected()
        elif part.name == "file":
            if token is None:
                raise CsrfRejected()
            await authorize()
            chunks = []
            size = 0
            while chunk := await part.read_chunk(64 * 1024):
                size += len(chunk)
                if size > config.MAX_UPLOAD_BYTES:
                    raise UploadRejected(
                        f"the file is over {config.MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
                chunks.append(chunk)
            data = b"".join(chunks)
    if token is None:
        raise CsrfRejected()
    if not data:
        raise UploadRejected("no file was uploaded")
    return data


@handler("page")
async def prompt_studio_remove(req: Req) -> web.StreamResponse:
    language, name = _prompt_key(req)
    await req.svc.authorize_config(req.logged_in.actor, f"prompt:{name}/{language}")
    try:
        config.remove_studio(req.console.prompts_dir, language, name)
    except FormInvalid as exc:
        return await _prompts_page(
            req, errors={f"{language}/{name}": exc.message}, status=400)
    report = await _rebuild(req, "studio recording removed", {"prompt": f"{name}/{language}"})
    return await _prompts_page(req, report=report)


@handler("page")
async def prompts_build(req: Req) -> web.StreamResponse:
    await req.svc.authorize_config(req.logged_in.actor, "prompts")
    report = await _rebuild(req, "prompts rebuilt", {})
    return await _prompts_page(req, report=report)


async def _routing_page(req: Req, *, text: str | None = None, problems: Any = None,
                       status: int = 200) -> web.StreamResponse:
    await req.svc.authorize_config(req.logged_in.actor, "routing")
    provider = req.console.routing
    current = provider.current()
    if text is None:
        text = config.read_routing(provider.path)
    return req.render("routing.html", text=text, problems=problems, routing=current,
                      status=status, done=req.query("done"))


@handler("page")
async def routing_page(req: Req) -> web.StreamResponse:
    return await _routing_page(req)


@handler("page")
async def routing_apply(req: Req) -> web.StreamResponse:
    session = req.logged_in
    await req.svc.authorize_config(session.actor, "routing")
    text = req.field("text")
    before = req.console.routing.current().version
    try:
        version = await config.apply_routing(req.console.routing, text)
    except RoutingError as exc:
        return await _routing_page(req, text=text, problems=exc.problems,
                                              status=400)
    await req.svc.config_changed(session.actor, "routing", "routing edited in the console",
                                 {"from_version": before, "to_version": version})
    raise _see_other("/admin/routing?done=applied")
