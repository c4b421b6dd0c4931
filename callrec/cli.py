"""The `callrec` command: each area registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from callrec.errors import CallrecError

# Each module exposes register(subparsers); a subcommand sets `func(args) -> int`.
COMMAND_MODULES = (
    "callrec.service",
    "callrec.archive.commands",
    "callrec.routing.commands",
    "callrec.prompts.commands",
    "callrec.privacy.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callrec", description="Recording archive for a clinic's telephone service."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except CallrecError as exc:
        print(f"callrec: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
