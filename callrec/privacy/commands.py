"""`callrec users|audit|retention|hold|request|disclose`: the privacy officer's CLI.

Every command acts as a named account: `--as USERNAME` (or CALLREC_USER) and its password
(CALLREC_PASSWORD for scripts, else a prompt without echo). The very first account is created
with `callrec users add NAME` while no account exists; it is always an admin.

Environment: CALLREC_DATABASE_URL (the service role's DSN), CALLREC_ARCHIVE_DIR,
CALLREC_SECRET_KEY or CALLREC_SECRET_KEY_FILE (keyed hashes of phone numbers),
CALLREC_RETENTION_MONTHS (default 12), CALLREC_TIMEZONE (the clinic's calendar for dates,
default Europe/Helsinki)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from callrec.archive.commands import UNREACHABLE
from callrec.clinic_time import clinic_timezone, local
from callrec.errors import ConfigError
from callrec.logs import configure_logging
from callrec.privacy.audit import ACTIONS, AuditFilter
from callrec.privacy.chain import parse_anchor
from callrec.privacy.deadlines import parse_date
from callrec.privacy.errors import Invalid
from callrec.privacy.keys import load_secret_key
from callrec.privacy.numbers import canonical_number, number_target
from callrec.privacy.progress import ProgressBar
from callrec.privacy.roles import Actor
from callrec.privacy.service import PrivacyService, report_dict
from callrec.settings import retention_months_from

Body = Callable[[PrivacyService, argparse.Namespace], Awaitable[int]]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the privacy area's subcommands."""
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--as", dest="as_user", metavar="USERNAME",
                     help="act as this account (default: $CALLREC_USER)")

    users = sub.add_parser("users", help="personal accounts and roles")
    us = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    p = us.add_parser("add", parents=[who], help="add an account (the first one: no --as)")
    p.add_argument("username")
    p.add_argument("--roles", default="", help="comma-separated: admin,reviewer,privacy,processor")
    p.add_argument("--full-name", default="")
    p.add_argument("--expires", help="valid through this date (YYYY-MM-DD); processors need it")
    p.add_argument("--can-listen", action="store_true", help="let a processor listen")
    p.add_argument("--password-stdin", action="store_true", help="read the new password from stdin")
    p.set_defaults(func=_cmd(_users_add, needs_actor=False))
    p = us.add_parser("list", parents=[who], help="list accounts")
    p.set_defaults(func=_cmd(_users_list))
    for name, flag in (("disable", True), ("enable", False)):
        p = us.add_parser(name, parents=[who], help=f"{name} an account")
        p.add_argument("username")
        p.set_defaults(func=_cmd(_users_disable), disabled=flag)
    p = us.add_parser("passwd", parents=[who], help="set a password (your own, or as admin)")
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true")
    p.set_defaults(func=_cmd(_users_passwd))
    p = us.add_parser("roles", parents=[who], help="replace an account's roles")
    p.add_argument("username")
    p.add_argument("--roles", required=True)
    p.add_argument("--expires", help="valid through this date (YYYY-MM-DD)")
    listen = p.add_mutually_exclusive_group()
    listen.add_argument("--can-listen", dest="can_listen", action="store_true", default=None)
    listen.add_argument("--no-listen", dest="can_listen", action="store_false")
    p.set_defaults(func=_cmd(_users_roles))

    aud = sub.add_parser("audit", help="the tamper-evident audit log")
    aus = aud.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    p = aus.add_parser("verify", parents=[who], help="check the hash chain")
    p.add_argument("--expect", action="append", default=[], metavar="SEQ:HASH",
                   help="a head printed by an earlier verify and kept outside the database")
    p.set_defaults(func=_cmd(_audit_verify))
    p = aus.add_parser("show", parents=[who], help="show entries, newest first")
    p.add_argument("--actor", dest="by_actor", help="entries made by this account")
    p.add_argument("--action", choices=sorted(ACTIONS))
    p.add_argument("--target", help="e.g. call:<id>, case:<n>, user:<name>")
    p.add_argument("--number", help="entries about this phone number (matched by keyed hash)")
    p.add_argument("--since", help="YYYY-MM-DD or ISO time")
    p.add_argument("--until", help="YYYY-MM-DD or ISO time (exclusive)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd(_audit_show))

    ret = sub.add_parser("retention", help="delete calls past the retention period")
    rs = ret.add_subparsers(dest="retention_command", metavar="ACTION", required=True)
    p = rs.add_parser("run", parents=[who], help="run retention now")
    p.add_argument("--dry-run", action="store_true", help="only report what would be deleted")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd(_retention_run))

    hold = sub.add_parser("hold", help="legal holds")
    hs = hold.add_subparsers(dest="hold_command", metavar="ACTION", required=True)
    p = hs.add_parser("add", parents=[who], help="hold a call or every call of a number")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--call")
    which.add_argument("--number")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=_cmd(_hold_add))
    p = hs.add_parser("release", parents=[who], help="release a hold")
    p.add_argument("hold_id", type=int)
    p.add_argument("--reason", required=True)
    p.set_defaults(func=_cmd(_hold_release))
    p = hs.add_parser("list", parents=[who], help="active holds")
    p.add_argument("--all", action="store_true", help="include released holds")
    p.set_defaults(func=_cmd(_hold_list))

    req = sub.add_parser("request", help="access and erasure requests")
    qs = req.add_subparsers(dest="request_command", metavar="ACTION", required=True)
    p = qs.add_parser("access", parents=[who], help="open a right-of-access case")
    _request_args(p)
    p.set_defaults(func=_cmd(_request_access))
    p = qs.add_parser("list", parents=[who], help="open cases, overdue first")
    p.add_argument("--all", action="store_true", help="include closed cases")
    p.set_defaults(func=_cmd(_request_list))
    p = qs.add_parser("export", parents=[who], help="answer an access case with a zip")
    p.add_argument("case", type=int)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=_cmd(_request_export))
    p = qs.add_parser("erase", parents=[who], help="erase a number's calls (or refuse)")
    _request_args(p)
    p.add_argument("--refuse", metavar="GROUND", help="refuse on this recorded legal ground")
    p.set_defaults(func=_cmd(_request_erase))

    p = sub.add_parser("disclose", parents=[who], help="export a clip to an authority")
    p.add_argument("--call", required=True)
    p.add_argument("--from", dest="from_", required=True, metavar="MM:SS[.mmm]")
    p.add_argument("--to", required=True, metavar="MM:SS[.mmm]")
    p.add_argument("--recipient", required=True)
    p.add_argument("--legal-basis", required=True)
    p.add_argument("--approved-by", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=_cmd(_disclose))


def _request_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--number", required=True)
    p.add_argument("--verified-by", required=True, help="who verified the requester's identity")
    p.add_argument("--method", required=True, help="how identity was verified")
    p.add_argument("--received", help="date the written request arrived (default today)")


# -- plumbing -------------------------------------------------------------------------------
def _cmd(body: Body, *, needs_actor: bool = True) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        args.needs_actor = needs_actor
        return asyncio.run(_session(body, args))

    return run


def _setup_logging() -> None:
    if sys.stderr.isatty():
        configure_logging("console", logging.WARNING)  # the terminal shows progress instead
    else:
        configure_logging(os.environ.get("CALLREC_LOG_FORMAT", "json"))


async def _session(body: Body, args: argparse.Namespace) -> int:
    _setup_logging()
    dsn = os.environ.get("CALLREC_DATABASE_URL", "").strip()
    if not dsn:
        raise ConfigError("CALLREC_DATABASE_URL is not set")
    key_set = os.environ.get("CALLREC_SECRET_KEY") or os.environ.get("CALLREC_SECRET_KEY_FILE")
    key = load_secret_key() if key_set else None
    archive = os.environ.get("CALLREC_ARCHIVE_DIR", "").strip()
    months = retention_months_from(os.environ)
    timezone = clinic_timezone()
    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3)
    except UNREACHABLE as exc:
        raise ConfigError(f"cannot connect to the database: {exc}") from exc
    try:
        service = PrivacyService(
            pool, Path(archive) if archive else None, key, retention_months=months,
            timezone=timezone,
        )
        args.actor = await _login(service, args) if args.needs_actor else None
        return await body(service, args)
    finally:
        await pool.close()


async def _login(service: PrivacyService, args: argparse.Namespace) -> Actor:
    username = args.as_user or os.environ.get("CALLREC_USER", "")
    if not username:
        raise ConfigError("who is acting? give --as USERNAME or set CALLREC_USER")
    password = os.environ.get("CALLREC_PASSWORD")
    if password is None:
        password = getpass.getpass(f"password for {username}: ")
    return await service.authenticate(username, password)


def _new_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("new password: ")
    if getpass.getpass("repeat new password: ") != first:
        raise Invalid("the passwords do not match")
    return first


def _when(service: PrivacyService, text: str | None) -> datetime | None:
    """A date (its start) or a time; without a zone, on the clinic's clock."""
    if text is None:
        return None
    if len(text.strip()) == 10:
        return service.day_start(parse_date(text))
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise Invalid(f"not a date or time: {text[:40]!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=service.timezone)


def _expiry(service: PrivacyService, text: str | None) -> datetime | None:
    return service.day_end(parse_date(text)) if text else None


def _fmt(service: PrivacyService, value: Any) -> str:
    """A time on the clinic's clock, with its zone (as the console shows it)."""
    if isinstance(value, datetime):
        return local(value, service.timezone).strftime("%Y-%m-%d %H:%M:%S %Z")
    return "-" if value is None else str(value)


# -- users ----------------------------------------------------------------------------------
async def _users_add(service: PrivacyService, args: argparse.Namespace) -> int:
    if not await service.has_users():
        if args.roles and set(args.roles.split(",")) != {"admin"}:
            raise Invalid("the first account is always an admin; add others as that admin")
        password = _new_password(args)
        user = await service.bootstrap_admin(args.username, password, args.full_name)
        print(f"created the first account {user.username} (admin)")
        return 0
    actor = await _login(service, args)
    if not args.roles:
        raise Invalid("--roles is required")
    password = _new_password(args)
    user = await service.add_user(
        actor, args.username, password, args.roles, full_name=args.full_name,
        expires_at=_expiry(service, args.expires), can_listen=args.can_listen,
    )
    print(f"created {user.username} ({', '.join(user.roles)})")
    return 0


async def _users_list(service: PrivacyService, args: argparse.Namespace) -> int:
    for u in await service.list_users(args.actor):
        state = "disabled" if u.disabled else "active"
        expires = _fmt(service, u.expires_at)
        print(f"{u.username:<20} {','.join(u.roles):<28} {state:<8} expires {expires}"
              f"{'  can-listen' if u.can_listen else ''}  {u.full_name}")
    return 0


async def _users_disable(service: PrivacyService, args: argparse.Namespace) -> int:
    user = await service.set_disabled(args.actor, args.username, args.disabled)
    print(f"{user.username}: {'disabled' if user.disabled else 'enabled'}")
    return 0


async def _users_passwd(service: PrivacyService, args: argparse.Namespace) -> int:
    await service.change_password(args.actor, args.username, _new_password(args))
    print(f"password of {args.username} changed")
    return 0


async def _users_roles(service: PrivacyService, args: argparse.Namespace) -> int:
    user = await service.set_roles(
        args.actor, args.username, args.roles, expires_at=_expiry(service, args.expires),
        can_listen=args.can_listen,
    )
    print(f"{user.username}: {', '.join(user.roles)}; expires {_fmt(service, user.expires_at)};"
          f" can listen: {'yes' if user.can_listen else 'no'}")
    return 0


# -- audit ----------------------------------------------------------------------------------
async def _audit_verify(service: PrivacyService, args: argparse.Namespace) -> int:
    try:
        anchors = dict(parse_anchor(a) for a in args.expect)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    verdict = await service.audit_verify(args.actor, anchors)
    if verdict.ok:
        print(f"audit chain intact: {verdict.entries} entries; head "
              f"{verdict.head_seq}:{verdict.head_hash}")
        return 0
    print(f"AUDIT CHAIN BROKEN ({verdict.entries} entries, head {verdict.head_seq}):")
    for problem in verdict.problems:
        print(f"  - {problem}")
    return 3


async def _audit_show(service: PrivacyService, args: argparse.Namespace) -> int:
    target = args.target
    if args.number:
        target = number_target(service.hasher.digest(canonical_number(args.number)))
    flt = AuditFilter(actor=args.by_actor, action=args.action, target=target,
                      since=_when(service, args.since), until=_when(service, args.until),
                      limit=args.limit)
    for e in await service.audit_show(args.actor, flt):
        if args.json:
            print(json.dumps({"seq": e.seq, "at": e.at.isoformat(), "actor": e.actor,
                              "action": e.action, "target": e.target, "reason": e.reason,
                              "details": e.details}, ensure_ascii=False))
        else:
            print(f"{e.seq:>6} {_fmt(service, e.at)} {e.actor:<18} {e.action:<13} {e.target}"
                  f"{'  — ' + e.reason if e.reason else ''}")
    return 0


# -- retention ------------------------------------------------------------------------------
async def _retention_run(service: PrivacyService, args: argparse.Namespace) -> int:
    bar = ProgressBar("purging") if sys.stderr.isatty() and not args.dry_run else None
    try:
        report = await service.run_retention(args.actor, dry_run=args.dry_run, progress=bar)
    finally:
        if bar:
            bar.close()
    if args.json:
        print(json.dumps(report_dict(report)))
        return 0
    verb = "would delete" if report.dry_run else "deleted"
    print(f"retention {report.months} months, cutoff {_fmt(service, report.cutoff)}: {verb} "
          f"{len(report.purged)} call(s); {report.held_skipped} held call(s) kept; "
          f"oldest remaining ended {_fmt(service, report.oldest_remaining_ended_at)}")
    if report.awaiting_access:
        print(f"{report.awaiting_access} call(s) kept until their number's open access "
              "request is answered")
    if report.resumed:
        print(f"finished {report.resumed} call(s) queued by an interrupted run")
    if report.audit_seq:
        print(f"receipt: audit entry {report.audit_seq}")
    if report.not_removed:
        print(f"{report.not_removed} call(s) stay queued: their recording file could not be "
              "removed (see the receipt and the log); the next run tries again", file=sys.stderr)
        return 1
    return 0


# -- holds ----------------------------------------------------------------------------------
async def _hold_add(service: PrivacyService, args: argparse.Namespace) -> int:
    hold = await service.add_hold(args.actor, call_id=args.call, number=args.number,
                                  reason=args.reason)
    print(f"hold {hold.id} placed on {'the number' if hold.by_number else hold.call_id}")
    return 0


async def _hold_release(service: PrivacyService, args: argparse.Namespace) -> int:
    hold = await service.release_hold(args.actor, args.hold_id, reason=args.reason)
    print(f"hold {hold.id} released")
    return 0


async def _hold_list(service: PrivacyService, args: argparse.Namespace) -> int:
    for h in await service.list_holds(args.actor, include_released=args.all):
        what = "number (hashed)" if h.by_number else f"call {h.call_id}"
        state = (f"released {_fmt(service, h.released_at)} by {h.released_by}"
                 if h.released_at else "active")
        print(f"{h.id:>5} {what:<42} {state:<10} {_fmt(service, h.created_at)} "
              f"{h.created_by}: {h.reason}")
    return 0


# -- requests -------------------------------------------------------------------------------
async def _request_access(service: PrivacyService, args: argparse.Namespace) -> int:
    case = await service.open_access_request(
        args.actor, number=args.number, verified_by=args.verified_by, method=args.method,
        received=args.received,
    )
    print(f"access case {case.id} opened; due {case.due_on.isoformat()}")
    return 0


async def _request_list(service: PrivacyService, args: argparse.Namespace) -> int:
    for c in await service.list_requests(args.actor, include_closed=args.all):
        flag = "OVERDUE" if c.overdue else ""
        print(f"{c.id:>5} {c.kind:<8} {c.status:<18} received {c.received_on} due {c.due_on}"
              f" {flag:<7} verified by {c.verified_by}"
              f"{'  refused: ' + c.refusal_reason if c.refusal_reason else ''}")
    return 0


async def _request_export(service: PrivacyService, args: argparse.Namespace) -> int:
    result = await service.export_access(args.actor, args.case, args.out)
    print(f"case {result.case_id} answered: {result.calls} call(s), {result.files} recording(s)"
          f" -> {result.out} (sha256 {result.zip_sha256})")
    if result.missing:
        print(f"recording files missing on disk (listed in the manifest): "
              f"{', '.join(result.missing)}")
    return 0


async def _request_erase(service: PrivacyService, args: argparse.Namespace) -> int:
    case = await service.erase_number(
        args.actor, number=args.number, verified_by=args.verified_by, method=args.method,
        received=args.received, refuse_ground=args.refuse,
    )
    erased = len(case.result.get("erased_calls", []))
    print(f"erasure case {case.id}: {case.status}; {erased} call(s) erased")
    if case.refusal_reason:
        print(f"refused: {case.refusal_reason}")
    return 0


async def _disclose(service: PrivacyService, args: argparse.Namespace) -> int:
    d = await service.disclose(
        args.actor, call_id=args.call, from_offset=args.from_, to_offset=args.to,
        recipient=args.recipient, legal_basis=args.legal_basis, approved_by=args.approved_by,
        out=args.out,
    )
    print(f"disclosure {d.id}: {d.to_ms - d.from_ms} ms of call {d.call_id} -> {d.out}"
          f" (clip sha256 {d.clip_sha256})")
    return 0
