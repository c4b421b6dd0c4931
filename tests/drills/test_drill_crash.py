"""Drill: callrec SIGKILLed with 20 calls in conversation, then restarted."""

from __future__ import annotations

import signal
import time

import pytest

from bench.load import LoadAgent, LoadCaller
from bench.stacks import NOTICE_SECONDS, SERVICE_NUMBER
from devstack.stack import Stack
from tests.drills.conftest import health
from tests.drills.reconcile import rows, wait_reconciled
from tests.polling import eventually_sync

pytestmark = [pytest.mark.drill, pytest.mark.stack, pytest.mark.timeout(300)]


def test_sigkill_with_20_calls_in_conversation(drill_stack: Stack, agent: LoadAgent) -> None:
    talk = 25.0
    callers = LoadCaller(sip_port=drill_stack.sip_port, service_number=SERVICE_NUMBER,
                         talk_seconds=NOTICE_SECONDS + 1.0 + talk, calls=20, rate=10, limit=20,
                         first_number=0).start()
    numbers = callers.numbers()

    def in_conversation() -> bool:
        return sum(1 for r in rows(drill_stack, numbers) if r.state == "conversation") == 20

    eventually_sync(in_conversation, timeout=30, what="20 calls in conversation")
    drill_stack.stop_service(signal.SIGKILL)

    # While callrec is down, new calls reach the agent through the dialplan fallback,
    # neither announced nor recorded.
    outage = LoadCaller(sip_port=drill_stack.sip_port, service_number=SERVICE_NUMBER,
                        tone_hz=600, talk_seconds=4, calls=3, rate=3, limit=3,
                        first_number=5000).start()
    assert outage.wait(timeout=60) == 0, outage.output()
    ok, failed, _ = outage.outcome()
    assert (ok, failed) == (3, 0)
    assert not rows(drill_stack, outage.numbers()), "fallback calls must not be recorded"
    console = (drill_stack.asterisk.log_dir / "messages.log").read_text(errors="replace")
    assert "callrec not reachable" in console

    drill_stack.start_service()
    t0 = time.monotonic()
    eventually_sync(lambda: health(drill_stack)["ari_connected"], timeout=10,
                    what="callrec reconnected")
    assert callers.wait(timeout=talk + 60) == 0, callers.output()
    result = wait_reconciled(drill_stack, numbers, timeout=60)
    assert not result.problems(), result.problems()
    for row in rows(drill_stack, numbers):
        assert row.end_reason == "completed", row
        assert row.duration_ms is not None and row.duration_ms >= (talk - 10) * 1000, row
    assert time.monotonic() - t0 < talk + 90
