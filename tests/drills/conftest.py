"""Fault drills on the real stack (Asterisk 22 + PostgreSQL + the callrec service + SIPp).

Each drill gets a stack of its own (they break things on purpose), with bench's stack
settings: a wide RTP range, a fixed 3 s studio notice, one service answered by agent1."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.capacity import start_agent
from bench.load import LoadAgent
from bench.stacks import running_stack
from devstack.stack import Stack

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "drills"


@pytest.fixture
def drill_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with running_stack(with_service=True) as stack:
        try:
            yield stack
        finally:
            # the stack is removed afterwards: keep its logs for whoever reads a failure
            keep = ARTIFACTS / request.node.name
            shutil.rmtree(keep, ignore_errors=True)
            keep.mkdir(parents=True, exist_ok=True)
            for log in (stack.service_log, stack.asterisk.log_dir / "messages.log",
                        stack.pg.log):
                if log.exists():
                    shutil.copy(log, keep / log.name)


@pytest.fixture
def agent(drill_stack: Stack) -> Iterator[LoadAgent]:
    phone = start_agent(drill_stack.agent_ports["agent1"])
    try:
        yield phone
    finally:
        phone.stop()


def get(stack: Stack, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(stack.web_url + path, timeout=5) as resp:  # noqa: S310
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def health(stack: Stack) -> dict[str, Any]:
    status, body = get(stack, "/healthz")
    data: dict[str, Any] = json.loads(body)
    data["http_status"] = status
    return data


def metric(stack: Stack, name: str) -> float | None:
    _, body = get(stack, "/metrics")
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def log_events(stack: Stack) -> list[dict[str, Any]]:
    out = []
    for line in stack.service_log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out
