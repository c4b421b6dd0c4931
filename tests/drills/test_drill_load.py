"""Drill: 200 concurrent recorded calls lose nothing and mix nothing up."""

from __future__ import annotations

import time

import pytest

from bench.load import LoadAgent, LoadCaller
from bench.stacks import NOTICE_SECONDS, SERVICE_NUMBER
from devstack.stack import Stack
from tests.drills.conftest import log_events, metric
from tests.drills.reconcile import dominant_tone, rows, wait_reconciled

pytestmark = [pytest.mark.drill, pytest.mark.stack, pytest.mark.timeout(420)]

# Four groups of callers, each with its own tone and its own conversation length: a
# recording attached to the wrong call would show another group's tone or length. The
# shortest conversation outlasts the arrivals, so all 200 calls are up together.
GROUPS = [(400, 22.0), (500, 25.0), (600, 28.0), (700, 31.0)]
PER_GROUP = 50
# per group: 10 calls/s in all, half the rate at which this machine's Asterisk starts
# calls at all (bench's capacity steps): the drill is about losing nothing at 200 calls,
# and at the machine's ceiling single agents wait seconds to be connected
RATE = 2.5
# the caller's talk counts from its answer: notice, the agent's ring, their conversation
JOIN_SLACK_S = 2.5


def test_200_concurrent_calls(drill_stack: Stack, agent: LoadAgent) -> None:
    callers = []
    for i, (hz, talk) in enumerate(GROUPS):
        callers.append(LoadCaller(
            sip_port=drill_stack.sip_port, service_number=SERVICE_NUMBER, tone_hz=hz,
            talk_seconds=NOTICE_SECONDS + 1.0 + talk, calls=PER_GROUP, rate=RATE,
            limit=PER_GROUP, first_number=i * 1000).start())
    peak = 0.0
    deadline = time.monotonic() + 180
    while any(c.running for c in callers):
        assert time.monotonic() < deadline, "callers still running after 180 s"
        peak = max(peak, metric(drill_stack, "callrec_active_calls") or 0.0)
        time.sleep(0.5)
    for c in callers:
        c.wait(timeout=10)
    outcomes = [c.outcome() for c in callers]
    assert all(ok == PER_GROUP and failed == 0 for ok, failed, _ in outcomes), (
        outcomes, [c.output()[-500:] for c in callers])
    assert peak == len(GROUPS) * PER_GROUP, f"at most {peak:.0f} calls were up together"

    numbers = [n for c in callers for n in c.numbers()]
    result = wait_reconciled(drill_stack, numbers, timeout=120)
    assert not result.problems(), result.problems()

    by_number = {r.caller_number: r for r in rows(drill_stack, numbers)}
    assert len(by_number) == 200
    wrong, short = [], []
    tones = [hz for hz, _ in GROUPS]
    for c, (hz, talk) in zip(callers, GROUPS, strict=True):
        for number in c.numbers():
            row = by_number[number]
            assert row.end_reason == "completed", row
            assert row.path and row.duration_ms is not None
            heard = dominant_tone(str(drill_stack.archive_dir / row.path), tones)
            if heard != hz:
                wrong.append((number, hz, heard))
            elif abs(row.duration_ms / 1000 - talk) > JOIN_SLACK_S:
                short.append((number, talk, row.duration_ms))
    assert not wrong, f"recordings attached to the wrong call (number, tone, heard): {wrong[:10]}"
    assert not short, f"recordings not the length of their conversation: {short[:10]}"
    # every request of the 200 calls was granted: none taken for a refusal and worked around
    failed = [e for e in log_events(drill_stack) if e.get("event") == "ari command failed"]
    assert not failed, failed[:5]
