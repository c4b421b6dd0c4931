"""Shared fixtures: real PostgreSQL (and, for stack tests, the real local stack)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.postgres import Postgres
from devstack.stack import Stack
from tests.dbfixtures import ScratchDatabase, fresh_database, start_cluster
from tests.stackfixtures import start_stack


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Postgres]:
    yield from start_cluster()


@pytest.fixture
def db(pg_cluster: Postgres) -> Iterator[ScratchDatabase]:
    """A freshly migrated, empty database for one test."""
    yield from fresh_database(pg_cluster)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The whole real stack with the callrec service running (session-wide)."""
    yield from start_stack(with_service=True)


@pytest.fixture(scope="module")
def bare_stack() -> Iterator[Stack]:
    """Asterisk + PostgreSQL without the callrec service: the test is the ARI app."""
    yield from start_stack(with_service=False)
