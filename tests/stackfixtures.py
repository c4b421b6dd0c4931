"""The real local stack for integration tests: Asterisk 22 + PostgreSQL + the callrec
service, on free ports, built by the same devstack code as `make up`."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

from devstack.stack import Stack, StackConfig


def start_stack(with_service: bool = True) -> Iterator[Stack]:
    directory = Path(tempfile.mkdtemp(prefix="callrec-stack-"))
    directory.chmod(0o755)
    stack = Stack(StackConfig.ephemeral(directory))
    try:
        stack.up(with_service=with_service, log=directory / "setup.log")
        yield stack
    finally:
        stack.destroy()
