"""Drills: PostgreSQL away for 60 s under load; Asterisk restarted under load."""

from __future__ import annotations

import time

import pytest

from bench.load import LoadAgent, LoadCaller
from bench.stacks import NOTICE_SECONDS, SERVICE_NUMBER
from devstack.stack import Stack
from tests.drills.conftest import health, log_events, metric
from tests.drills.reconcile import rows, wait_reconciled
from tests.polling import eventually_sync

pytestmark = [pytest.mark.drill, pytest.mark.stack]

OUTAGE_S = 60.0


@pytest.mark.timeout(360)
def test_postgres_stopped_60_s_under_load(drill_stack: Stack, agent: LoadAgent) -> None:
    # one call a second for 80 s, 8 s conversations: calls start, talk and end while the
    # database is away, and some span its return
    talk = 8.0
    callers = LoadCaller(sip_port=drill_stack.sip_port, service_number=SERVICE_NUMBER,
                         talk_seconds=NOTICE_SECONDS + 1.0 + talk, calls=80, rate=1, limit=80,
                         first_number=0).start()
    time.sleep(8)
    drill_stack.pg.stop()
    down_at = time.monotonic()
    eventually_sync(lambda: not health(drill_stack)["database_reachable"] or None, timeout=20,
                    what="callrec notices the database is away")
    assert metric(drill_stack, "callrec_database_up") == 0
    while time.monotonic() - down_at < OUTAGE_S:
        time.sleep(1)
    backlog = health(drill_stack)["journal_backlog"]
    drill_stack.pg.start()
    assert backlog > 0, "writes during the outage should wait in the journal"

    assert callers.wait(timeout=180) == 0, callers.output()
    result = wait_reconciled(drill_stack, callers.numbers(), timeout=90)
    assert not result.problems(), result.problems()
    eventually_sync(lambda: health(drill_stack)["journal_backlog"] == 0, timeout=30,
                    what="journal drained")
    assert all(r.end_reason == "completed" for r in rows(drill_stack, callers.numbers()))
    events = log_events(drill_stack)
    assert any(e.get("event") == "journal_drained" for e in events)
    lost = [e for e in events if e.get("event") in ("call row not written",
                                                    "journal_operation_rejected")]
    assert not lost, lost[:3]


@pytest.mark.timeout(300)
def test_asterisk_restarted_under_load(drill_stack: Stack, agent: LoadAgent) -> None:
    talk = 30.0
    cut = LoadCaller(sip_port=drill_stack.sip_port, service_number=SERVICE_NUMBER,
                     talk_seconds=NOTICE_SECONDS + 1.0 + talk, calls=10, rate=10, limit=10,
                     first_number=0).start()
    numbers = cut.numbers()
    eventually_sync(
        lambda: sum(1 for r in rows(drill_stack, numbers) if r.state == "conversation") == 10,
        timeout=30, what="10 calls in conversation")
    cut_at = time.time()
    drill_stack.asterisk.stop()
    eventually_sync(lambda: not health(drill_stack)["ari_connected"] or None, timeout=10,
                    what="callrec notices Asterisk is gone")
    down_until = time.time()
    drill_stack.asterisk.start()
    up_at = time.monotonic()
    eventually_sync(lambda: health(drill_stack)["ari_connected"], timeout=10,
                    what="callrec reconnected")
    reconnect_s = time.monotonic() - up_at
    assert reconnect_s < 5.0, f"reconnected {reconnect_s:.1f} s after Asterisk was back"
    cut.stop()

    # calls cut by the restart are closed as cut by Asterisk (no party hung up: `interrupted`,
    # not `completed`), at the time they were cut; the recording that Asterisk kept is
    # archived with each
    result = wait_reconciled(drill_stack, numbers, timeout=60)
    assert not result.problems(), result.problems()
    cut = rows(drill_stack, numbers)
    assert {r.end_reason for r in cut} == {"interrupted"}, cut
    assert all(r.ended_at and cut_at <= r.ended_at <= down_until for r in cut), (
        cut_at, down_until, cut)
    assert metric(drill_stack, 'callrec_calls_total{end_reason="interrupted"}') >= 10

    # and new calls go through
    after = LoadCaller(sip_port=drill_stack.sip_port, service_number=SERVICE_NUMBER,
                       talk_seconds=NOTICE_SECONDS + 1.0 + 4.0, calls=3, rate=3, limit=3,
                       first_number=100).start()
    assert after.wait(timeout=60) == 0, after.output()
    result = wait_reconciled(drill_stack, after.numbers(), timeout=30)
    assert not result.problems(), result.problems()
