"""Ring plans for each strategy."""

from __future__ import annotations

from callrec.routing.model import Service, Strategy
from callrec.routing.strategy import RingState


def service(strategy: Strategy) -> Service:
    return Service(
        number="0103808000",
        name="Ajanvaraus",
        language="fi",
        notice_prompt="notice",
        closed_prompt="closed",
        agents=("agent1", "agent2", "agent3"),
        strategy=strategy,
        ring_timeout=15.0,
        max_wait=60.0,
    )


def test_in_order_rings_one_by_one_in_the_listed_order() -> None:
    state = RingState()
    state.answered("0103808000", "agent2")
    assert state.plan(service(Strategy.IN_ORDER)) == [("agent1",), ("agent2",), ("agent3",)]


def test_ring_all_rings_everyone_at_once() -> None:
    assert RingState().plan(service(Strategy.RING_ALL)) == [("agent1", "agent2", "agent3")]


def test_round_robin_starts_after_the_last_who_answered() -> None:
    state = RingState()
    plan = service(Strategy.ROUND_ROBIN)
    assert state.plan(plan) == [("agent1",), ("agent2",), ("agent3",)]
    state.answered("0103808000", "agent1")
    assert state.plan(plan) == [("agent2",), ("agent3",), ("agent1",)]
    state.answered("0103808000", "agent3")
    assert state.plan(plan) == [("agent1",), ("agent2",), ("agent3",)]
    # another service's answers do not move this rotation
    state.answered("0103808001", "agent1")
    assert state.plan(plan) == [("agent1",), ("agent2",), ("agent3",)]


def test_longest_idle_first() -> None:
    state = RingState()
    plan = service(Strategy.LONGEST_IDLE)
    state.call_ended("agent1", 100.0)
    state.call_ended("agent3", 50.0)
    # agent2 has had no call yet: it is idle longest
    assert state.plan(plan) == [("agent2",), ("agent3",), ("agent1",)]
    state.call_ended("agent2", 200.0)
    assert state.plan(plan) == [("agent3",), ("agent1",), ("agent2",)]


def test_busy_agents_are_left_out() -> None:
    state = RingState()
    assert state.plan(service(Strategy.RING_ALL), busy={"agent2"}) == [("agent1", "agent3")]
    state.answered("0103808000", "agent1")
    assert state.plan(service(Strategy.ROUND_ROBIN), busy={"agent2"}) == [
        ("agent3",),
        ("agent1",),
    ]
    assert state.plan(service(Strategy.IN_ORDER), busy={"agent1", "agent2", "agent3"}) == []
