"""`callrec config check FILE` and `callrec reload`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from callrec.errors import ConfigError
from callrec.prompts.errors import PromptError
from callrec.prompts.index import read_index
from callrec.prompts.paths import PromptPaths
from callrec.routing.errors import RoutingError
from callrec.routing.loader import default_prompts_dir, load_routing
from callrec.routing.model import Routing


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `config check` and `reload`."""
    config = sub.add_parser("config", help="routing configuration")
    config_sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    check = config_sub.add_parser(
        "check",
        help="validate a routing file (errors as file:line: message, exit status 1)",
    )
    check.add_argument("file", type=Path)
    check.add_argument(
        "--prompts-dir",
        type=Path,
        default=None,
        help="where prompt sources are (default: $CALLREC_PROMPTS_DIR or ./prompts)",
    )
    check.set_defaults(func=_check)

    reload = sub.add_parser(
        "reload",
        help="make the running service re-read its routing file now (SIGHUP)",
        description=(
            "Checks the routing file ($CALLREC_CONFIG, or --config), then sends SIGHUP to the "
            "service whose process id is in $CALLREC_PID_FILE (or --pid-file). The service "
            "also notices a changed file by itself within about a second."
        ),
    )
    reload.add_argument("--pid-file", type=Path, default=None)
    reload.add_argument("--config", type=Path, default=None)
    reload.add_argument("--prompts-dir", type=Path, default=None)
    reload.set_defaults(func=_reload)


def _check(args: argparse.Namespace) -> int:
    try:
        routing = load_routing(args.file, prompts_dir=args.prompts_dir)
    except RoutingError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"{args.file}: {count} problem{'s' if count != 1 else ''}", file=sys.stderr)
        return 1
    print(
        f"{args.file}: OK ({len(routing.services)} services, {len(routing.agents)} agents, "
        f"version {routing.version})"
    )
    for warning in _unbuilt_prompts(routing):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _unbuilt_prompts(routing: Routing) -> list[str]:
    """Prompts that have a source but no built version yet (calls would lack them)."""
    cache_dir = PromptPaths.from_env().cache_dir
    try:
        index = read_index(cache_dir)
    except PromptError as exc:
        return [exc.message]
    needed = sorted(
        {(s.notice_prompt, s.language) for s in routing.services.values()}
        | {(s.closed_prompt, s.language) for s in routing.services.values()}
    )
    return [
        f"prompt {name}/{language} is not built in {cache_dir}; run `callrec prompts build`"
        for name, language in needed
        if f"{name}/{language}" not in index.prompts
    ]


def _reload(args: argparse.Namespace) -> int:
    config = args.config or (
        Path(os.environ["CALLREC_CONFIG"]) if "CALLREC_CONFIG" in os.environ else None
    )
    if config is not None:
        try:
            load_routing(config, prompts_dir=args.prompts_dir or default_prompts_dir())
        except RoutingError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            print("not reloaded: the service keeps its current routing", file=sys.stderr)
            return 1
    else:
        print("warning: the routing file was not checked first (no --config, "
              "CALLREC_CONFIG unset); the service checks it and keeps its routing if it is "
              "wrong", file=sys.stderr)
    pid = _read_pid(args.pid_file)
    _check_is_callrec(pid)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ConfigError(f"no process {pid} (is the service running?)") from None
    except PermissionError:
        raise ConfigError(f"not allowed to signal process {pid}") from None
    print(f"sent SIGHUP to callrec (pid {pid})")
    return 0


def _check_is_callrec(pid: int) -> None:
    """A stale pid file may name a process that is not callrec now: SIGHUP would end it."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except FileNotFoundError:
        raise ConfigError(f"no process {pid} (is the service running?)") from None
    except OSError:
        return  # no /proc to ask (another system): signal as told
    if not any(b"callrec" in part for part in argv[:4]):
        shown = b" ".join(argv[:3]).decode(errors="replace")[:80]
        raise ConfigError(f"process {pid} is not callrec ({shown!r}): the pid file is stale")


def _read_pid(pid_file: Path | None) -> int:
    if pid_file is None:
        value = os.environ.get("CALLREC_PID_FILE", "").strip()
        if not value:
            raise ConfigError("CALLREC_PID_FILE is not set (or pass --pid-file)")
        pid_file = Path(value)
    try:
        text = pid_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{pid_file}: cannot read the pid file: {exc}") from exc
    # the process id first; what may follow it (the local stack adds the process's start
    # time, to tell a stale file) is not ours to read
    first = text.split()[0] if text else ""
    if not (first.isascii() and first.isdigit()) or int(first) <= 1:
        raise ConfigError(f"{pid_file}: does not hold a process id")
    return int(first)
