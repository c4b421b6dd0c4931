"""Shared fixtures: real PostgreSQL (and, for stack tests, the real local stack)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.postgres import Postgres
from tests.dbfixtures import ScratchDatabase, fresh_database, start_cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Postgres]:
    yield from start_cluster()


@pytest.fixture
def db(pg_cluster: Postgres) -> Iterator[ScratchDatabase]:
    """A freshly migrated, empty database for one test."""
    yield from fresh_database(pg_cluster)
