"""Agent tracker orders (round_robin, longest_idle) and opening hours."""

from __future__ import annotations

import datetime as dt

from callrec.calls.agents import AgentTracker
from callrec.calls.hours import is_open
from callrec.routing.model import OpeningInterval, Service, Strategy

T = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)  # a Monday, 10:00 in Helsinki
IDS = ["a1", "a2", "a3"]


def at(minutes: int) -> dt.datetime:
    return T + dt.timedelta(minutes=minutes)


def test_in_order_and_ring_all_keep_the_configured_order() -> None:
    tracker = AgentTracker()
    tracker.busy("a1", at(0))
    for strategy in (Strategy.IN_ORDER, Strategy.RING_ALL):
        assert tracker.order(strategy, IDS) == IDS


def test_round_robin_starts_after_the_last_agent_who_answered() -> None:
    tracker = AgentTracker()
    assert tracker.order(Strategy.ROUND_ROBIN, IDS) == IDS
    tracker.busy("a1", at(0))
    tracker.free("a1", at(1))
    assert tracker.order(Strategy.ROUND_ROBIN, IDS) == ["a2", "a3", "a1"]
    tracker.busy("a3", at(2))
    tracker.free("a3", at(3))
    assert tracker.order(Strategy.ROUND_ROBIN, IDS) == ["a1", "a2", "a3"]
    tracker.busy("a2", at(4))
    # a2 is in a call: it goes last rather than away
    assert tracker.order(Strategy.ROUND_ROBIN, IDS) == ["a3", "a1", "a2"]


def test_longest_idle_prefers_agents_never_seen_then_the_oldest_idle() -> None:
    tracker = AgentTracker()
    tracker.busy("a1", at(0))
    tracker.free("a1", at(5))
    tracker.busy("a2", at(1))
    tracker.free("a2", at(2))
    assert tracker.order(Strategy.LONGEST_IDLE, IDS) == ["a3", "a2", "a1"]
    tracker.busy("a3", at(6))
    assert tracker.order(Strategy.LONGEST_IDLE, IDS) == ["a2", "a1", "a3"]


def test_an_agent_in_two_calls_is_free_only_after_both() -> None:
    tracker = AgentTracker()
    tracker.busy("a1", at(0))
    tracker.busy("a1", at(1))
    tracker.free("a1", at(2))
    assert tracker.in_call("a1")
    tracker.free("a1", at(3))
    assert not tracker.in_call("a1")
    tracker.free("a1", at(4))  # one too many: harmless
    assert not tracker.in_call("a1")


def service(*hours: OpeningInterval, tz: str = "Europe/Helsinki") -> Service:
    return Service(
        number="100",
        name="x",
        language="fi",
        notice_prompt="notice",
        closed_prompt="closed",
        agents=("a1",),
        strategy=Strategy.IN_ORDER,
        ring_timeout=15,
        max_wait=60,
        hours=hours,
        timezone=tz,
    )


def test_opening_hours_in_the_service_time_zone() -> None:
    monday_8_16 = OpeningInterval(0, dt.time(8), dt.time(16))
    svc = service(monday_8_16)
    assert is_open(svc, T)  # 10:00 local
    assert is_open(svc, dt.datetime(2026, 3, 2, 6, 0, tzinfo=dt.UTC))  # 08:00 local
    assert not is_open(svc, dt.datetime(2026, 3, 2, 5, 59, tzinfo=dt.UTC))  # 07:59 local
    assert not is_open(svc, dt.datetime(2026, 3, 2, 14, 0, tzinfo=dt.UTC))  # 16:00 local
    assert not is_open(svc, T + dt.timedelta(days=1))  # Tuesday
    assert is_open(service(), T), "no hours: always open"


def test_interval_past_midnight_and_unknown_zone() -> None:
    sunday_night = OpeningInterval(6, dt.time(22), dt.time(2))
    svc = service(sunday_night, tz="UTC")
    assert is_open(svc, dt.datetime(2026, 3, 1, 23, 0, tzinfo=dt.UTC))  # Sunday 23:00
    assert is_open(svc, dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC))  # Monday 01:00
    assert not is_open(svc, dt.datetime(2026, 3, 2, 3, 0, tzinfo=dt.UTC))
    assert is_open(service(sunday_night, tz="Mars/Olympus"), T)


def test_what_the_archive_remembers_sets_the_turns_after_a_restart() -> None:
    tracker = AgentTracker()  # a new run
    tracker.remember("a2", answered=at(-30), idle_since=at(-20))
    tracker.remember("a1", answered=at(-60), idle_since=at(-50))
    tracker.remember("a3", answered=None, idle_since=None)
    assert tracker.order(Strategy.ROUND_ROBIN, IDS) == ["a3", "a1", "a2"]
    # never seen first, then the one idle longest
    assert tracker.order(Strategy.LONGEST_IDLE, IDS) == ["a3", "a1", "a2"]


def test_this_runs_own_calls_win_over_the_archive() -> None:
    tracker = AgentTracker()
    tracker.busy("a1", at(0))
    tracker.busy("a2", at(1))
    tracker.free("a2", at(2))
    # read late (the database was away at start): older than what this run saw
    tracker.remember("a2", answered=at(-30), idle_since=at(-20))
    tracker.remember("a1", answered=at(-40), idle_since=at(-35))
    # after a2, this run's last answer; a1, in a call, last
    assert tracker.order(Strategy.ROUND_ROBIN, IDS) == ["a3", "a2", "a1"]
    assert tracker.in_call("a1"), "the archive's old end does not free an agent in a call"
    tracker.free("a1", at(5))
    assert tracker.order(Strategy.LONGEST_IDLE, IDS) == ["a3", "a2", "a1"]
