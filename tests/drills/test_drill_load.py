"""Drill: 200 concurrent recorded calls lose nothing and mix nothing up."""

from __future__ import annotations

import pytest

from bench.load import LoadAgent, LoadCaller
from bench.stacks import NOTICE_SECONDS, SERVICE_NUMBER
from devstack.stack import Stack
from tests.drills.reconcile import dominant_tone, rows, wait_reconciled

pytestmark = [pytest.mark.drill, pytest.mark.stack, pytest.mark.timeout(420)]

# Four groups of callers, each with its own tone and its own conversation length: a
# recording attached to the wrong call would show another group's tone or length.
GROUPS = [(400, 12.0), (500, 15.0), (600, 18.0), (700, 21.0)]
PER_GROUP = 50
RATE = 5.0  # per group: all 200 calls arrive within 10 s and are up together


def test_200_concurrent_calls(drill_stack: Stack, agent: LoadAgent) -> None:
    callers = []
    for i, (hz, talk) in enumerate(GROUPS):
        callers.append(LoadCaller(
            sip_port=drill_stack.sip_port, service_number=SERVICE_NUMBER, tone_hz=hz,
            talk_seconds=NOTICE_SECONDS + 1.0 + talk, calls=PER_GROUP, rate=RATE,
            limit=PER_GROUP, first_number=i * 1000).start())
    for c in callers:
        c.wait(timeout=180)
    outcomes = [c.outcome() for c in callers]
    assert all(ok == PER_GROUP and failed == 0 for ok, failed, _ in outcomes), (
        outcomes, [c.output()[-500:] for c in callers])
    assert sum(peak for _, _, peak in outcomes) >= 150  # the groups overlapped

    numbers = [n for c in callers for n in c.numbers()]
    result = wait_reconciled(drill_stack, numbers, timeout=120)
    assert not result.problems(), result.problems()

    by_number = {r.caller_number: r for r in rows(drill_stack, numbers)}
    assert len(by_number) == 200
    wrong = []
    tones = [hz for hz, _ in GROUPS]
    for c, (hz, talk) in zip(callers, GROUPS, strict=True):
        for number in c.numbers():
            row = by_number[number]
            assert row.end_reason == "completed", row
            assert row.path and row.duration_ms is not None
            heard = dominant_tone(str(drill_stack.archive_dir / row.path), tones)
            if heard != hz or abs(row.duration_ms / 1000 - talk) > 2.5:
                wrong.append((number, hz, heard, talk, row.duration_ms))
    assert not wrong, f"recordings attached to the wrong call: {wrong[:10]}"
