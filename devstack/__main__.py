"""`python -m devstack up|down|status|demo-call|env|clean`: the local stack from the
Makefile."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import NoReturn

from devstack.errors import StackError
from devstack.stack import Stack, demo_stack, saved_stack


def _up(stack: Stack) -> None:
    started = time.monotonic()
    log = stack.cfg.dir / "logs" / "setup.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if not stack.root.ready:
        print(f"building the Asterisk 22 root (Debian sid, once; log: {log}) ...", flush=True)
    stack.up(log=log)
    took = time.monotonic() - started
    c = stack.cfg
    if stack.account is not None:
        runs_as = f"the service runs as the account {stack.account.name} (no login)"
    elif stack.closed_to_account is not None:
        runs_as = (f"the service runs as root: {stack.closed_to_account} is closed to other "
                   "accounts (a clone outside it, e.g. in /opt or /srv, runs it as the "
                   "account callrec)")
    else:
        runs_as = "the service runs as the account that ran make up"
    agents = f"{c.agent_ports['agent1']}-{c.agent_ports['agent3']}"
    print(f"""
callrec stack is up ({took:.0f} s). Everything listens on 127.0.0.1:

  SIP (Asterisk 22)      udp/{c.sip_port}   service numbers 0103808000 (fi), 0103808001 (sv)
  agents (static)        udp/{agents}  agent1..3 (or register)
  ARI                    {stack.ari_url}/ari   user {c.ari_user}
  web console            {stack.web_url}
  PostgreSQL             127.0.0.1:{c.pg_port}  database callrec
  archive                {stack.archive_dir}
  settings               {stack.cfg.dir / 'env'}
  logs                   {stack.log_dir}/callrec.log, {stack.asterisk.log_dir}/messages.log

  {runs_as}

Place a demo call (SIPp caller + SIPp agent1):   make demo-call
Stop everything:                                 make down
""")


def _demo_call(stack: Stack) -> int:
    from devstack.democall import demo_call

    return demo_call(stack)


def _exit_on_signal(signum: int, _frame: object) -> NoReturn:
    # SystemExit, not the default death: the `finally` blocks run (the mounts of an Asterisk
    # root being built are undone, a half-started part is stopped)
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack")
    parser.add_argument("action", choices=["up", "down", "status", "demo-call", "env", "clean",
                                           "callrec"])
    parser.add_argument("rest", nargs=argparse.REMAINDER,
                        help="callrec: the command's own arguments")
    args = parser.parse_args(argv)
    if args.rest and args.action != "callrec":
        parser.error(f"{args.action} takes no arguments")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    try:
        if args.action == "callrec":
            saved_stack().exec_callrec(args.rest)
        stack = demo_stack()
        if args.action == "up":
            _up(stack)
        elif args.action == "down":
            stack.down()
            print("callrec stack stopped")
        elif args.action == "status":
            print(f"asterisk: {'running' if stack.asterisk.running() else 'stopped'}")
            pg = stack.pg.data.exists() and stack.pg.running()
            print(f"postgres: {'running' if pg else 'stopped'}")
            from devstack.proc import read_pid

            svc = read_pid(stack.service_pidfile)
            print(f"callrec:  {f'running (pid {svc})' if svc else 'stopped'}")
        elif args.action == "clean":
            stack.destroy()
            print(f"callrec stack stopped and removed ({stack.cfg.dir})")
        elif args.action == "env":
            print(stack.write_env().read_text(), end="")
        elif args.action == "demo-call":
            return _demo_call(stack)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
