"""The web console's wiring: `add_console(app, service)` mounts pages, the JSON API, static
files and the console's lifecycle (its own small asyncpg pool) on the service's aiohttp app.

Every handler goes through `handler(kind)`: it loads the session, demands one (pages redirect
to the login form, the API and files answer 401), checks the CSRF token of every
state-changing request, and turns domain errors into pages, JSON or plain text with their
HTTP status. Authorisation itself is the privacy layer's (roles re-read, denials audited)."""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

import asyncpg
import jinja2
import structlog
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from callrec.clinic_time import DEFAULT_ZONE, last_day, local
from callrec.errors import CallrecError, ConfigError, NotConfigured
from callrec.privacy.errors import Forbidden
from callrec.privacy.keys import load_secret_key
from callrec.privacy.roles import Operation, Role, permits
from callrec.routing.loader import RoutingProvider
from callrec.tasks import cancel_and_wait
from callrec.web import i18n
from callrec.web.access import ConsoleService
from callrec.web.bodies import read_form
from callrec.web.errors import CsrfRejected, NotLoggedIn
from callrec.web.sessions import COOKIE, Session, SessionStore
from callrec.web.throttle import LoginThrottle

if TYPE_CHECKING:
    from callrec.service import Service

log = structlog.get_logger(__name__)

HERE = Path(__file__).resolve().parent
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_COOKIE = "callrec_login"  # double-submit token of the login form (login CSRF)
HOUSEKEEPING_EVERY = 600.0
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self';"
        " script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none';"
        " form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer Chromium sends `Origin: null` on our own
    # form posts, which the CSRF origin check must refuse
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class Console:
    """The console's configuration and, once started, its service objects."""

    database_url: str
    archive_dir: Path
    prompts_dir: Path
    prompt_cache_dir: Path
    routing: RoutingProvider
    bundle_dir: Path
    secure_cookies: bool = False
    retention_months: int = 12
    timezone: ZoneInfo = DEFAULT_ZONE
    templates: jinja2.Environment = field(init=False)
    pool: asyncpg.Pool | None = None
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    _svc: ConsoleService | None = None
    _sessions: SessionStore | None = None

    def __post_init__(self) -> None:
        self.templates = template_environment(self.timezone)

    @property
    def svc(self) -> ConsoleService:
        if self._svc is None:
            raise NotConfigured("the web console is not started")
        return self._svc

    @property
    def sessions(self) -> SessionStore:
        if self._sessions is None:
            raise NotConfigured("the web console is not started")
        return self._sessions

    async def start(self) -> None:
        try:
            key: bytes | None = load_secret_key()
        except ConfigError as exc:
            # pages that need number hashes say so; everything else works
            log.error("web.secret_key_missing", error=exc.message)
            key = None
        # min_size 0: a database down at start-up must not stop the call flow from starting
        self.pool = await asyncpg.create_pool(self.database_url, min_size=0, max_size=6)
        self._svc = ConsoleService(self.pool, self.archive_dir, key, bundle_dir=self.bundle_dir,
                                   retention_months=self.retention_months,
                                   timezone=self.timezone)
        self._sessions = SessionStore(self.pool)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def housekeeping(self) -> None:
        """Drop expired sessions and bundles now and then."""
        while True:
            try:
                await self.sessions.remove_expired()
                await self.svc.remove_expired_bundles()
            except (*_DATABASE_GONE, OSError) as exc:
                log.warning("web.housekeeping_failed", error=str(exc))
            await asyncio.sleep(HOUSEKEEPING_EVERY)


CONSOLE = web.AppKey("console", Console)

#: What asyncpg raises when PostgreSQL refuses or goes away; a connection cut in the middle of
#: a transaction can also surface as a protocol-state error (InternalClientError).
_DATABASE_GONE = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


def template_environment(tz: ZoneInfo | None = None) -> jinja2.Environment:
    """The pages' templates: autoescaped, strict about undefined names; times and dates
    shown on the clinic's clock (`tz`, default Europe/Helsinki)."""
    tz = tz or DEFAULT_ZONE
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = lambda value: _when(value, tz)
    env.filters["dur"] = _duration
    env.filters["size"] = _size
    env.filters["through"] = lambda value: _valid_through(value, tz)
    return env


@dataclass
class Req:
    """One request as the console's handlers see it."""

    request: web.Request
    console: Console
    session: Session | None
    lang: str
    form: MultiDictProxy[Any] = field(default_factory=lambda: MultiDictProxy(MultiDict()))

    @property
    def svc(self) -> ConsoleService:
        return self.console.svc

    @property
    def logged_in(self) -> Session:
        if self.session is None:
            raise NotLoggedIn()
        return self.session

    def t(self, text: str) -> str:
        return i18n.translate(text, self.lang)

    def field(self, name: str, default: str = "") -> str:
        value = self.form.get(name, default)
        return value if isinstance(value, str) else default

    def query(self, name: str) -> str | None:
        value = self.request.query.get(name, "").strip()
        return value or None

    def render(self, template: str, status: int = 200, **values: Any) -> web.Response:
        session = self.session
        nav = _nav(session) if session is not None else []
        body = self.console.templates.get_template(template).render(
            t=self.t, lang=self.lang, session=session, nav=nav, path=self.request.path,
            csrf=session.csrf_token if session is not None else "", here=self.request.path_qs,
            quote=quote, **values,
        )
        return web.Response(text=body, status=status, content_type="text/html",
                            charset="utf-8", headers=SECURITY_HEADERS)


def _nav(session: Session) -> list[tuple[str, str]]:
    """Menu entries the roles can use (display only: the layer decides on every request)."""
    roles, listen = session.actor.roles, session.actor.can_listen
    items = []
    if permits(roles, listen, Operation.CALL_SEARCH):
        items.append(("/calls", "Calls"))
    if permits(roles, listen, Operation.REQUEST_LIST):
        items += [("/privacy/requests", "Requests"), ("/privacy/holds", "Legal holds")]
    if permits(roles, listen, Operation.RETENTION_PREVIEW):
        items.append(("/privacy/retention", "Retention"))
    if permits(roles, listen, Operation.AUDIT_SHOW):
        items.append(("/privacy/audit", "Audit log"))
    if Role.ADMIN in roles:
        items += [("/admin/accounts", "Accounts"), ("/admin/prompts", "Prompts"),
                  ("/admin/routing", "Routing")]
    return items


Handler = Callable[[Req], Awaitable[web.StreamResponse]]


def handler(kind: str, *, login: bool = True, multipart: bool = False) -> Callable[
    [Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]
]:
    """Wrap a console handler. kind: "page" (HTML), "api" (JSON) or "file" (downloads)."""

    def wrap(fn: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(fn)
        async def run(request: web.Request) -> web.StreamResponse:
            console = request.app[CONSOLE]
            lang = request.cookies.get(i18n.COOKIE, i18n.DEFAULT)
            req = Req(request, console, None, lang if lang in i18n.LANGUAGES else i18n.DEFAULT)
            try:
                req.session = await console.sessions.load(request.cookies.get(COOKIE))
                if login and req.session is None:
                    raise NotLoggedIn()
                if request.method not in SAFE_METHODS:
                    _check_origin(request)
                    if kind == "page" and not multipart:
                        req.form = await read_form(request)
                    if login and not multipart:
                        given = (request.headers.get("X-CSRF-Token") if kind == "api"
                                 else req.field("csrf_token"))
                        if not req.logged_in.csrf_ok(given):
                            raise CsrfRejected()
                return await fn(req)
            except NotLoggedIn:
                if kind == "page":
                    target = request.path_qs if request.method == "GET" else "/"
                    raise web.HTTPSeeOther(f"/login?next={quote(target)}") from None
                return _error(req, kind, 401, NotLoggedIn.default_message)
            except CallrecError as exc:
                if exc.http_status >= 500:
                    log.error("web.error", path=request.path, error=exc.message)
                return _error(req, kind, exc.http_status, exc.message,
                              denied=isinstance(exc, Forbidden))
            except asyncpg.DataError as exc:
                # a value PostgreSQL cannot take (a NUL in text, a number past bigint) came
                # with the request: the client's mistake, not the database's absence
                log.info("web.bad_value", path=request.path, error=str(exc))
                return _error(req, kind, 400, f"a value in the request is not valid: {exc}")
            except (*_DATABASE_GONE, OSError) as exc:
                log.error("web.unavailable", path=request.path, error=str(exc))
                return _error(req, kind, 503, "the archive database is unavailable")

        return run

    return wrap


def _check_origin(request: web.Request) -> None:
    """Browsers send Origin on cross-site POSTs: refuse any that is not us."""
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise CsrfRejected("the request came from another site")


def _error(req: Req, kind: str, status: int, message: str, denied: bool = False
           ) -> web.Response:
    if kind == "api":
        return web.json_response({"error": status, "message": message}, status=status,
                                 headers={"Cache-Control": "no-store"})
    if kind == "file":
        return web.Response(text=message + "\n", status=status,
                            headers={"Cache-Control": "no-store"})
    return req.render("error.html", status=status, status_code=status, message=message,
                      denied=denied)


def local_path(target: str | None, default: str = "/") -> str:
    """A redirect target from user input: only a path on this site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    # Browsers and yarl drop tabs and line breaks from a URL: "/\t/evil.example" would
    # leave as "//evil.example", another site.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return default
    return target


def set_session_cookie(req: Req, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(
        COOKIE, token, httponly=True, samesite="Strict", path="/",
        secure=req.request.secure or req.console.secure_cookies,
        max_age=int(req.console.sessions.absolute.total_seconds()),
    )


def new_login_token(req: Req, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict", path="/login",
                        secure=req.request.secure or req.console.secure_cookies, max_age=3600)


def client_address(req: Req) -> str:
    return req.request.remote or "unknown"


def login_token() -> str:
    return secrets.token_urlsafe(24)


def _when(value: str | datetime | None, tz: ZoneInfo) -> str:
    if value is None or value == "":
        return "\u2013"
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return local(at, tz).strftime("%Y-%m-%d %H:%M:%S")


def _valid_through(value: datetime | None, tz: ZoneInfo) -> str:
    """An account expiry (the end of its last day in the clinic) as that day."""
    if value is None:
        return "\u2013"
    return last_day(value, tz).isoformat()


def _duration(ms: int | None) -> str:
    if ms is None:
        return "\u2013"
    minutes, rest = divmod(int(ms), 60_000)
    return f"{minutes}:{rest // 1000:02d}.{rest % 1000 // 100}"


def _size(n: int | None) -> str:
    if n is None:
        return "\u2013"
    return f"{n / 1024:.0f} KiB" if n < 1024 * 1024 else f"{n / 1048576:.1f} MiB"


def add_console(app: web.Application, service: Service) -> Console:
    """Mount the console on the service's app (routes, static files, lifecycle)."""
    settings = service.settings
    web_url = os.environ.get("CALLREC_WEB_URL", "")
    state = settings.journal_dir.parent
    console = Console(
        database_url=settings.database_url,
        archive_dir=settings.archive_dir,
        prompts_dir=settings.prompts_dir,
        prompt_cache_dir=settings.prompt_cache_dir,
        routing=service.routing,
        bundle_dir=Path(os.environ.get("CALLREC_WEB_BUNDLE_DIR", str(state / "web-bundles"))),
        secure_cookies=web_url.startswith("https://"),
        retention_months=settings.retention_months,
        timezone=settings.timezone,
    )
    mount(app, console)
    return console


def mount(app: web.Application, console: Console) -> None:
    from callrec.web.api import add_routes as add_api_routes
    from callrec.web.pages import add_routes as add_page_routes

    app[CONSOLE] = console
    add_page_routes(app)
    add_api_routes(app)
    app.router.add_static("/static/", HERE / "static", append_version=False)
    app.cleanup_ctx.append(_console_ctx)


async def _console_ctx(app: web.Application) -> AsyncIterator[None]:
    console = app[CONSOLE]
    await console.start()
    task = asyncio.create_task(console.housekeeping(), name="web-housekeeping")
    try:
        yield
    finally:
        await cancel_and_wait(task)
        await console.close()
