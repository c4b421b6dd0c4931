"""`callrec db ...` subcommands."""

from __future__ import annotations

import argparse
import asyncio
import os

import asyncpg

from callrec.archive.migrate import migrate
from callrec.errors import ConfigError

#: A URL asyncpg cannot parse (ValueError: its ClientConfigurationError is one), a server
#: that refuses or is not there (OSError, PostgresError), a connection cut (InterfaceError).
UNREACHABLE = (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="database schema")
    dbsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    mig = dbsub.add_parser("migrate", help="apply pending migrations (as the owner role)")
    mig.set_defaults(func=_migrate)


def owner_dsn() -> str:
    """The owner's URL only: the service's role (CALLREC_DATABASE_URL) may not create tables,
    and a migration run as it would fail half-way with a permission error."""
    dsn = os.environ.get("CALLREC_DATABASE_OWNER_URL", "").strip()
    if not dsn:
        raise ConfigError("set CALLREC_DATABASE_OWNER_URL (the schema owner's connection URL)")
    return dsn


def _migrate(args: argparse.Namespace) -> int:
    try:
        applied = asyncio.run(migrate(owner_dsn()))
    except UNREACHABLE as exc:
        raise ConfigError(f"cannot connect to the database as its owner: {exc}") from exc
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0
