"""Reading and checking the routing file, and keeping the live configuration current.

The file (TOML, path from CALLREC_CONFIG):

    [defaults]                      # optional; each key may be repeated per service
    ring_timeout = 15               # seconds one agent rings (ring_all: the whole round)
    max_wait = 60                   # seconds after the notice before "please call later"
    strategy = "in_order"           # in_order | ring_all | round_robin | longest_idle
    timezone = "Europe/Helsinki"
    notice = "notice"               # prompt names
    closed = "closed"

    [[agent]]
    id = "agent1"
    endpoint = "PJSIP/agent1"
    name = "Aino Agentti"           # stored with each call

    [[service]]
    number = "0103808000"           # a string: leading zeros matter
    name = "Ajanvaraus"
    language = "fi"
    agents = ["agent1", "agent2"]
    hours = [{ days = "mon-fri", open = "08:00", close = "16:00" }]   # optional
    # close earlier than open runs past midnight: { days = "fri", open = "22:00", close = "06:00" }
    # is Friday 22:00 to Saturday 06:00; close = "24:00" ends at midnight

Every problem is reported as `file:line: message`, all of them at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import re
import signal
import threading
import tomllib
import zoneinfo
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import structlog

from callrec.prompts.errors import PromptSourceError
from callrec.prompts.sources import LANGUAGE_RE, NAME_RE, find_source
from callrec.routing.errors import RoutingError
from callrec.routing.model import Agent, OpeningInterval, Routing, Service, Strategy
from callrec.routing.toml_lines import TomlPath, line_of, locate_lines

__all__ = ["RoutingError", "RoutingProvider", "default_prompts_dir", "load_routing"]

log = structlog.get_logger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: Seconds between readings of a rejected routing file whose content has not changed.
RETRY_REJECTED_EVERY = 30.0

_TOP_KEYS = frozenset({"defaults", "agent", "service"})
_DEFAULT_KEYS = frozenset({"ring_timeout", "max_wait", "strategy", "timezone", "notice", "closed"})
_AGENT_KEYS = frozenset({"id", "endpoint", "name"})
_SERVICE_KEYS = _DEFAULT_KEYS | {"number", "name", "language", "agents", "hours"}
_HOURS_KEYS = frozenset({"days", "open", "close"})
_FALLBACKS: Mapping[str, Any] = {
    "ring_timeout": 15,
    "max_wait": 60,
    "strategy": Strategy.IN_ORDER.value,
    "timezone": "Europe/Helsinki",
    "notice": "notice",
    "closed": "closed",
}

_NUMBER_RE = re.compile(r"\+?[0-9]{2,20}")
_AGENT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENDPOINT_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*/[^\s/]+")
_TIME_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])|24:00")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TOML_POSITION_RE = re.compile(r"^(?P<msg>.*?)\s*\(at line (?P<line>\d+), column \d+\)$")


def default_prompts_dir() -> Path:
    """CALLREC_PROMPTS_DIR, or `prompts` relative to the working directory."""
    return Path(os.environ.get("CALLREC_PROMPTS_DIR", "prompts"))


def load_routing(path: Path | str, *, prompts_dir: Path | None = None) -> Routing:
    """Read and check the routing file; raise RoutingError listing every problem.

    Prompts named by services must have a source for the service's language in
    `prompts_dir` (default: `default_prompts_dir()`)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RoutingError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    return parse_routing(raw, path, prompts_dir=prompts_dir)


def parse_routing(raw: bytes, path: Path, *, prompts_dir: Path | None = None) -> Routing:
    """Check the bytes of a routing file; `path` names it in messages."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RoutingError([f"{path}:{line}: not valid UTF-8"]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_POSITION_RE.match(str(exc))
        problem = f"{path}:{match['line']}: {match['msg']}" if match else f"{path}: {exc}"
        raise RoutingError([problem]) from exc
    checker = _Checker(path, locate_lines(text), prompts_dir or default_prompts_dir())
    routing = checker.check(data, version=routing_version(raw))
    if checker.problems:
        # a bad [defaults] entry is found once per service: report it once
        ordered = sorted(dict.fromkeys(checker.problems), key=lambda item: item[0])
        raise RoutingError([f"{path}:{line}: {message}" for line, message in ordered])
    return routing


def routing_version(raw: bytes) -> str:
    """The version of a routing file: the start of the SHA-256 of its bytes."""
    return hashlib.sha256(raw).hexdigest()[:16]


class _Checker:
    def __init__(self, path: Path, lines: dict[TomlPath, int], prompts_dir: Path) -> None:
        self.path = path
        self.lines = lines
        self.prompts_dir = prompts_dir
        self.problems: list[tuple[int, str]] = []
        self._known_agent_ids: set[str] = set()

    def error(self, where: TomlPath, message: str) -> None:
        self.problems.append((line_of(self.lines, where), message))

    def line(self, where: TomlPath) -> int:
        return line_of(self.lines, where)

    # -- structure ----------------------------------------------------------------------------

    def check(self, data: Mapping[str, Any], *, version: str) -> Routing:
        self.unknown_keys(data, (), _TOP_KEYS, "top level")
        defaults = self.table(data.get("defaults", {}), ("defaults",))
        self.unknown_keys(defaults, ("defaults",), _DEFAULT_KEYS, "[defaults]")
        self.defaults(defaults)
        agents = self.agents(self.array_of_tables(data.get("agent", []), ("agent",)))
        services = self.services(
            self.array_of_tables(data.get("service", []), ("service",)), defaults, agents
        )
        if not services and not data.get("service"):  # missing, or `service = []`
            self.error((), "no [[service]] defined")
        return Routing(
            services=MappingProxyType(services), agents=MappingProxyType(agents), version=version
        )

    def defaults(self, defaults: Mapping[str, Any]) -> None:
        """Each default on its own, whether or not a service takes it now: one that every
        service overrides would otherwise fail only when a new service inherits it."""
        for key, value in defaults.items():
            at = ("defaults", key)
            if key == "strategy":
                self.strategy(value, at)
            elif key in ("ring_timeout", "max_wait"):
                self.seconds(value, at, key)
            elif key == "timezone":
                self.timezone(value, at)
            elif key in ("notice", "closed"):
                self.prompt(value, at, key, None)  # its sources: per service's language

    def unknown_keys(
        self, table: Mapping[str, Any], where: TomlPath, allowed: frozenset[str], what: str
    ) -> None:
        for key in table:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                self.error((*where, key), f"unknown key {key!r} in {what} (known: {known})")

    def table(self, value: Any, where: TomlPath) -> Mapping[str, Any]:
        if isinstance(value, dict):
            return value
        self.error(where, f"{where[-1]} must be a table")
        return {}

    def array_of_tables(self, value: Any, where: TomlPath) -> list[Mapping[str, Any]]:
        name = where[-1]
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.error(where, f"{name} must be written as [[{name}]] tables")
            return []
        return value

    # -- agents -------------------------------------------------------------------------------

    def agents(self, tables: Sequence[Mapping[str, Any]]) -> dict[str, Agent]:
        agents: dict[str, Agent] = {}
        first_line: dict[str, int] = {}
        for index, table in enumerate(tables):
            where: TomlPath = ("agent", index)
            self.unknown_keys(table, where, _AGENT_KEYS, "[[agent]]")
            agent_id = self.string(table, where, "id", pattern=_AGENT_ID_RE, hint="e.g. agent1")
            endpoint = self.string(
                table, where, "endpoint", pattern=_ENDPOINT_RE, hint="e.g. PJSIP/agent1"
            )
            name = self.string(table, where, "name")
            if agent_id is None:
                continue
            if agent_id in first_line:
                self.error(
                    (*where, "id"),
                    f"duplicate agent id {agent_id!r} (first defined at line "
                    f"{first_line[agent_id]})",
                )
                continue
            first_line[agent_id] = self.line((*where, "id"))
            if endpoint is not None and name is not None:
                agents[agent_id] = Agent(id=agent_id, endpoint=endpoint, name=name)
        self._known_agent_ids = set(first_line)
        return agents

    # -- services -----------------------------------------------------------------------------

    def services(
        self,
        tables: Sequence[Mapping[str, Any]],
        defaults: Mapping[str, Any],
        agents: Mapping[str, Agent],
    ) -> dict[str, Service]:
        services: dict[str, Service] = {}
        first_line: dict[str, int] = {}
        for index, table in enumerate(tables):
            where: TomlPath = ("service", index)
            self.unknown_keys(table, where, _SERVICE_KEYS, "[[service]]")
            number = self.number(table, where)
            if number is not None:
                if number in first_line:
                    self.error(
                        (*where, "number"),
                        f"duplicate service number {number!r} (first defined at line "
                        f"{first_line[number]})",
                    )
                    number = None
                else:
                    first_line[number] = self.line((*where, "number"))
            service = self.service(table, where, number, defaults, agents)
            if service is not None:
                services[service.number] = service
        return services

    def service(
        self,
        table: Mapping[str, Any],
        where: TomlPath,
        number: str | None,
        defaults: Mapping[str, Any],
        agents: Mapping[str, Agent],
    ) -> Service | None:
        def setting(key: str) -> tuple[Any, TomlPath]:
            if key in table:
                return table[key], (*where, key)
            if key in defaults:
                return defaults[key], ("defaults", key)
            return _FALLBACKS[key], where

        name = self.string(table, where, "name")
        language = self.string(
            table, where, "language", pattern=LANGUAGE_RE, hint="a lower-case code such as fi"
        )
        strategy = self.strategy(*setting("strategy"))
        ring_timeout = self.seconds(*setting("ring_timeout"), "ring_timeout")
        max_wait = self.seconds(*setting("max_wait"), "max_wait")
        timezone = self.timezone(*setting("timezone"))
        notice = self.prompt(*setting("notice"), "notice", language)
        closed = self.prompt(*setting("closed"), "closed", language)
        members = self.members(table, where)
        hours = self.hours(table.get("hours"), (*where, "hours")) if "hours" in table else ()
        if (
            number is None
            or name is None
            or language is None
            or strategy is None
            or ring_timeout is None
            or max_wait is None
            or timezone is None
            or notice is None
            or closed is None
            or members is None
            or hours is None
        ):
            return None  # each problem is reported already
        return Service(
            number=number,
            name=name,
            language=language,
            notice_prompt=notice,
            closed_prompt=closed,
            agents=members,
            strategy=strategy,
            ring_timeout=ring_timeout,
            max_wait=max_wait,
            hours=hours,
            timezone=timezone,
        )

    def number(self, table: Mapping[str, Any], where: TomlPath) -> str | None:
        value = table.get("number")
        if value is None:
            self.error(where, "missing key 'number'")
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            self.error(
                (*where, "number"),
                "number must be a quoted string (a bare number loses its leading zeros)",
            )
            return None
        if not isinstance(value, str) or not _NUMBER_RE.fullmatch(value):
            self.error((*where, "number"), f"bad number {value!r} (digits only, e.g. 0103808000)")
            return None
        return value

    def members(self, table: Mapping[str, Any], where: TomlPath) -> tuple[str, ...] | None:
        value = table.get("agents")
        at = (*where, "agents")
        if value is None:
            self.error(where, "missing key 'agents'")
            return None
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            self.error(at, "agents must be a non-empty list of agent ids")
            return None
        ok = True
        seen: set[str] = set()
        for index, agent_id in enumerate(value):
            if agent_id in seen:
                self.error((*at, index), f"agent {agent_id!r} is listed twice")
                ok = False
            seen.add(agent_id)
            if agent_id not in self._known_agent_ids:
                self.error((*at, index), f"agent {agent_id!r} is not defined in any [[agent]]")
                ok = False
        return tuple(value) if ok else None

    def strategy(self, value: Any, at: TomlPath) -> Strategy | None:
        try:
            return Strategy(value)
        except ValueError:
            known = ", ".join(strategy.value for strategy in Strategy)
            self.error(at, f"bad strategy {value!r} (known: {known})")
            return None

    def seconds(self, value: Any, at: TomlPath, key: str) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(at, f"{key} must be a number of seconds, not {value!r}")
            return None
        if not value >= 1:  # a ring or a wait under a second reaches nobody
            self.error(at, f"{key} must be at least 1 second, not {value!r}")
            return None
        if value > 86400:
            self.error(at, f"{key} of {value!r} s is more than a day")
            return None
        return float(value)

    def timezone(self, value: Any, at: TomlPath) -> str | None:
        try:
            if not isinstance(value, str) or not value:
                raise ValueError(value)
            zoneinfo.ZoneInfo(value)
        except (ValueError, OSError, zoneinfo.ZoneInfoNotFoundError):
            self.error(at, f'unknown timezone {value!r} (e.g. "Europe/Helsinki")')
            return None
        return value

    def prompt(self, value: Any, at: TomlPath, key: str, language: str | None) -> str | None:
        if not isinstance(value, str) or not NAME_RE.fullmatch(value):
            self.error(at, f"{key} must be a prompt name (a-z, 0-9 and _), not {value!r}")
            return None
        if language is None:
            return value  # the language error is reported already
        try:
            source = find_source(self.prompts_dir, value, language)
        except PromptSourceError as exc:
            self.error(at, exc.message)
            return None
        if source is None:
            folder = self.prompts_dir / language
            self.error(
                at,
                f"{key} prompt {value!r} has no source for language {language!r} "
                f"(expected {folder}/{value}.txt, .wav, .flac or .ogg)",
            )
            return None
        return value

    def string(
        self,
        table: Mapping[str, Any],
        where: TomlPath,
        key: str,
        *,
        pattern: re.Pattern[str] | None = None,
        hint: str = "",
    ) -> str | None:
        if key not in table:
            self.error(where, f"missing key {key!r}")
            return None
        value = table[key]
        if not isinstance(value, str) or not value.strip():
            self.error((*where, key), f"{key} must be a non-empty string")
            return None
        if _CONTROL.search(value):  # a NUL is refused by PostgreSQL in every call's row
            self.error((*where, key), f"{key} must not contain control characters")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.error((*where, key), f"bad {key} {value!r}" + (f" ({hint})" if hint else ""))
            return None
        return value

    # -- opening hours ------------------------------------------------------------------------

    def hours(self, value: Any, at: TomlPath) -> tuple[OpeningInterval, ...] | None:
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.error(
                at,
                'hours must be a list like [{ days = "mon-fri", open = "08:00", close = "16:00" }]',
            )
            return None
        if not value:
            self.error(at, "hours = [] would keep the service closed for good: leave hours out "
                           "for a service that is always open")
            return None
        intervals: list[OpeningInterval] = []
        ok = True
        for index, item in enumerate(value):
            where = (*at, index)
            self.unknown_keys(item, where, _HOURS_KEYS, "hours")
            days = self.days(item.get("days"), (*where, "days"))
            opens = self.clock(item.get("open"), (*where, "open"), "open")
            closes = self.clock(item.get("close"), (*where, "close"), "close")
            if days is None or opens is None or closes is None:
                ok = False
                continue
            if opens == dt.time.max:
                self.error((*where, "open"), "open cannot be 24:00")
                ok = False
                continue
            if opens == closes:
                self.error(
                    (*where, "close"),
                    f"close {item['close']} equals open {item['open']} "
                    '(for a whole day use open = "00:00", close = "24:00")',
                )
                ok = False
                continue
            intervals.extend(OpeningInterval(day, opens, closes) for day in days)
        return tuple(intervals) if ok else None

    def days(self, value: Any, at: TomlPath) -> list[int] | None:
        bad = (
            f"bad days {value!r}: use day names mon..sun, ranges and commas, "
            'e.g. "mon-fri" or "mon,wed,sat"'
        )
        if not isinstance(value, str) or not value.strip():
            self.error(at, bad)
            return None
        days: list[int] = []
        for part in value.replace(" ", "").lower().split(","):
            first, _, last = part.partition("-")
            if first not in _DAYS or (last and last not in _DAYS):
                self.error(at, bad)
                return None
            start = _DAYS.index(first)
            end = _DAYS.index(last) if last else start
            if end < start:
                self.error(at, f"day range {part!r} runs backwards")
                return None
            days.extend(range(start, end + 1))
        return sorted(set(days))

    def clock(self, value: Any, at: TomlPath, key: str) -> dt.time | None:
        if isinstance(value, dt.time):
            return value.replace(tzinfo=None)
        if not isinstance(value, str) or not _TIME_RE.fullmatch(value):
            self.error(at, f"bad {key} time {value!r} (HH:MM, 00:00 to 24:00)")
            return None
        if value == "24:00":
            return dt.time.max
        hours, minutes = value.split(":")
        return dt.time(int(hours), int(minutes))


class RoutingProvider:
    """The live routing configuration: reloaded when the file changes, on SIGHUP, or on
    `reload()`. An invalid file is logged and ignored; the previous configuration stays."""

    def __init__(
        self,
        path: Path | str,
        *,
        prompts_dir: Path | None = None,
        poll_interval: float = 1.0,
        handle_sighup: bool = True,
    ) -> None:
        self.path = Path(path)
        self.prompts_dir = prompts_dir
        self.poll_interval = poll_interval
        self.handle_sighup = handle_sighup
        self._routing: Routing | None = None
        self._seen: tuple[int, int, int] | None = None  # (inode, mtime_ns, size) last read
        self._seen_hash = ""  # routing_version() of the content last read
        self._task: asyncio.Task[None] | None = None
        self._sighup_installed = False
        self._sighup_before: signal._HANDLER = signal.SIG_DFL
        self._reload_tasks: set[asyncio.Task[bool]] = set()
        self._reload_lock = threading.Lock()  # reloads run in worker threads
        self.reloads = 0
        self.rejected = 0
        # a rejected file is read again now and then: what made it wrong may lie outside it
        # (a prompt not yet added, a folder callrec could not read)
        self._retry_at: float | None = None
        self._rejected_problems: tuple[str, ...] = ()

    def current(self) -> Routing:
        """The configuration in force (loaded on first use; raises RoutingError if that fails)."""
        if self._routing is None:
            self._routing = self._load()
        return self._routing

    def reload(self) -> bool:
        """Read the file again. True if it is valid (now in force), False if it was rejected."""
        with self._reload_lock:
            return self._reload_locked()

    def _reload_locked(self) -> bool:
        try:
            routing = self._load()
        except RoutingError as exc:
            if exc.problems != self._rejected_problems:  # the same again is not news
                self.rejected += 1
                log.error(
                    "routing.rejected",
                    path=str(self.path),
                    problems=list(exc.problems),
                    kept_version=self._routing.version if self._routing else None,
                )
            self._rejected_problems = exc.problems
            return False
        self._rejected_problems = ()
        previous = self._routing
        self._routing = routing
        if previous is None or previous.version != routing.version:
            self.reloads += 1
            log.info(
                "routing.loaded",
                path=str(self.path),
                version=routing.version,
                previous_version=previous.version if previous else None,
                services=len(routing.services),
                agents=len(routing.agents),
            )
        return True

    async def start(self) -> None:
        """Load the file (raises RoutingError if invalid), then watch it and handle SIGHUP."""
        # compare the file with what is in force at the first poll, not with what is on disk
        # now: it may have changed since current() first read it
        self._seen_hash = self.current().version
        self._seen = None
        loop = asyncio.get_running_loop()
        if self.handle_sighup:
            # put back on close: asyncio's removal restores the default (terminate), and a
            # reload asked for while the service shuts down must not kill it
            self._sighup_before = signal.getsignal(signal.SIGHUP)
            try:
                loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
                self._sighup_installed = True
            except (NotImplementedError, RuntimeError, ValueError) as exc:
                log.warning("routing.sighup_unavailable", error=str(exc))
        self._task = asyncio.create_task(self._watch(), name="routing-watch")

    async def close(self) -> None:
        if self._sighup_installed:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            signal.signal(signal.SIGHUP, self._sighup_before)
            self._sighup_installed = False
        tasks = [task for task in (self._task, *self._reload_tasks) if task is not None]
        for task in tasks:
            task.cancel()
        # their CancelledError comes back as a result; a cancellation of close() itself is raised
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._reload_tasks.clear()

    async def __aenter__(self) -> RoutingProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- internals ----------------------------------------------------------------------------

    def _load(self) -> Routing:
        return load_routing(self.path, prompts_dir=self.prompts_dir)

    def _fingerprint(self) -> tuple[tuple[int, int, int] | None, str]:
        try:
            st = self.path.stat()
            digest = routing_version(self.path.read_bytes())
        except OSError:
            return None, ""
        return (st.st_ino, st.st_mtime_ns, st.st_size), digest

    def _on_sighup(self) -> None:
        log.info("routing.sighup", path=str(self.path))
        task = asyncio.create_task(self._reload_in_thread(), name="routing-reload")
        self._reload_tasks.add(task)
        task.add_done_callback(self._reload_tasks.discard)

    async def _reload_in_thread(self) -> bool:
        self._seen, self._seen_hash = await asyncio.to_thread(self._fingerprint)
        try:
            return await self._reload_and_note(asyncio.get_running_loop().time(), asked=True)
        except Exception:  # nobody awaits this task: say it here
            log.exception("routing.reload_failed", path=str(self.path))
            return False

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self._poll()
            except Exception:  # a watcher that dies silently would freeze routing forever
                log.exception("routing.watch_failed", path=str(self.path))

    async def _poll(self) -> None:
        try:
            st = await asyncio.to_thread(self.path.stat)
            stamp: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        now = asyncio.get_running_loop().time()
        if stamp == self._seen:
            if self._retry_at is not None and now >= self._retry_at:
                await self._reload_and_note(now, asked=False)
            return
        # a stamp change alone (touch, editor rewrite) is not a change of content
        self._seen, digest = await asyncio.to_thread(self._fingerprint)
        if digest == self._seen_hash:
            return
        self._seen_hash = digest
        if not digest:
            log.error("routing.file_missing", path=str(self.path))
            return
        await self._reload_and_note(now, asked=True)

    async def _reload_and_note(self, now: float, *, asked: bool) -> bool:
        """asked: a new content or a SIGHUP, whose rejection is always logged; else a timed
        retry, logged only when its problems changed."""
        if asked:
            self._rejected_problems = ()
        ok = await asyncio.to_thread(self.reload)
        self._retry_at = None if ok else now + RETRY_REJECTED_EVERY
        return ok
