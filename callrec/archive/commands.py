"""`callrec db ...` subcommands."""

from __future__ import annotations

import argparse
import asyncio
import os

from callrec.archive.migrate import migrate
from callrec.errors import ConfigError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="database schema")
    dbsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    mig = dbsub.add_parser("migrate", help="apply pending migrations (as the owner role)")
    mig.set_defaults(func=_migrate)


def owner_dsn() -> str:
    dsn = os.environ.get("CALLREC_DATABASE_OWNER_URL") or os.environ.get("CALLREC_DATABASE_URL")
    if not dsn:
        raise ConfigError("set CALLREC_DATABASE_OWNER_URL (the schema owner's connection URL)")
    return dsn


def _migrate(args: argparse.Namespace) -> int:
    applied = asyncio.run(migrate(owner_dsn()))
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0
