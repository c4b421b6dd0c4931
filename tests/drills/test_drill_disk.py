"""Drill: the archive's filesystem fills up (a small tmpfs), then space returns."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from bench.load import LoadAgent, LoadCaller
from bench.stacks import NOTICE_SECONDS, SERVICE_NUMBER
from devstack.stack import Stack
from tests.drills.conftest import health, log_events, metric
from tests.drills.reconcile import reconcile, rows, wait_reconciled
from tests.polling import eventually_sync

pytestmark = [pytest.mark.drill, pytest.mark.stack, pytest.mark.timeout(300)]


@pytest.fixture
def small_archive(drill_stack: Stack) -> Iterator[Stack]:
    """The archive directory on a 600 KiB tmpfs (room for about three 10 s recordings),
    mounted under the running service (devstack's start-up wait does not accept a service
    that is already degraded, and a disk fills up while the service runs anyway)."""
    target = str(drill_stack.archive_dir)
    owner = os.stat(target)  # the service's account, as the directory it covers
    options = f"size=600k,mode=0750,uid={owner.st_uid},gid={owner.st_gid}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", target], check=True)
    try:
        yield drill_stack
    finally:
        drill_stack.stop_service()
        subprocess.run(["umount", "-l", target], check=False)


def fill_archive(stack: Stack) -> list[str]:
    """Six 10 s calls into an archive with room for about three; returns their numbers."""
    callers = LoadCaller(sip_port=stack.sip_port, service_number=SERVICE_NUMBER,
                         talk_seconds=NOTICE_SECONDS + 1.0 + 10.0, calls=6, rate=6, limit=6,
                         first_number=0).start()
    assert callers.wait(timeout=90) == 0, callers.output()
    numbers = callers.numbers()
    eventually_sync(lambda: len(rows(stack, numbers)) == 6
                    and all(r.state == "done" for r in rows(stack, numbers)),
                    timeout=30, what="six rows closed")
    return numbers


def test_archive_disk_full_raises_the_alarm_and_records_no_half_file(
    small_archive: Stack, agent: LoadAgent,
) -> None:
    stack = small_archive
    numbers = fill_archive(stack)

    # the alarm: logs, health, metrics
    eventually_sync(
        lambda: any(e.get("event") == "archive_disk_full" for e in log_events(stack)),
        timeout=30, what="archive_disk_full in the log")
    h = health(stack)
    assert h["http_status"] == 503 and h["archive_writable"] is False, h
    assert metric(stack, "callrec_archive_writable") == 0

    # every call has its row; what is recorded as archived is complete and intact, and
    # no half-written file is left behind; the rest waits in Asterisk's spool
    now = reconcile(stack, numbers)
    assert not now.missing_rows and not now.bad_files and not now.missing_files, now
    assert not now.partial_files and not now.orphan_files, now
    archived = [r for r in rows(stack, numbers) if r.path]
    assert 0 < len(archived) < 6, "the tmpfs should hold some recordings, not all"
    assert len(now.spool_left) == 6 - len(archived), now.spool_left


def test_archive_recovers_when_space_returns(small_archive: Stack, agent: LoadAgent) -> None:
    stack = small_archive
    numbers = fill_archive(stack)
    assert reconcile(stack, numbers).spool_left, "the drill needs recordings left over"

    # space returns: the alarm clears and the recordings Asterisk kept are archived,
    # without a new call and without restarting anything
    subprocess.run(["mount", "-o", "remount,size=256m", str(stack.archive_dir)], check=True)
    eventually_sync(lambda: health(stack)["archive_writable"], timeout=30,
                    what="archive writable again")
    result = wait_reconciled(stack, numbers, timeout=90)
    assert not result.problems(), result.problems()
