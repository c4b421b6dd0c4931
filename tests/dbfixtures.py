"""A throwaway PostgreSQL cluster for the test session, and a fresh migrated database
per test cloned from a template (fast: no migrations per test)."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from callrec.archive.migrate import migrate
from devstack.ports import free_block
from devstack.postgres import Postgres

_counter = itertools.count()


@dataclass(frozen=True)
class ScratchDatabase:
    name: str
    owner_dsn: str  # schema owner (what migrations use)
    app_dsn: str  # the service's least-privileged role
    cluster: Postgres


def start_cluster() -> Iterator[Postgres]:
    root = Path(tempfile.mkdtemp(prefix="callrec-pg-"))
    root.chmod(0o755)
    pg = Postgres(
        root=root / "pg",
        port=free_block(1, start=40000, end=50000),
        owner_password=secrets.token_hex(12),
        app_password=secrets.token_hex(12),
    )
    try:
        pg.start()
        asyncio.run(migrate(pg.url("callrec_owner")))
        # The migrated database becomes the template every test clones.
        pg.psql("ALTER DATABASE callrec WITH ALLOW_CONNECTIONS true IS_TEMPLATE true", "postgres")
        yield pg
    finally:
        pg.destroy()
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(pg: Postgres) -> Iterator[ScratchDatabase]:
    name = f"t{next(_counter)}_{secrets.token_hex(4)}"
    # Terminate anything still connected to the template, or CREATE ... TEMPLATE fails.
    pg.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = 'callrec' AND pid <> pg_backend_pid()",
        "postgres",
    )
    pg.psql(f"CREATE DATABASE {name} TEMPLATE callrec OWNER callrec_owner", "postgres")
    pg.psql(f"GRANT CONNECT ON DATABASE {name} TO callrec_app", "postgres")
    base = f"127.0.0.1:{pg.port}/{name}"
    try:
        yield ScratchDatabase(
            name=name,
            owner_dsn=f"postgresql://callrec_owner:{pg.owner_password}@{base}",
            app_dsn=f"postgresql://callrec_app:{pg.app_password}@{base}",
            cluster=pg,
        )
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", "postgres")
