"""The pure call state machine: every path of issue 3, and odd orders of events."""

from __future__ import annotations

import pytest

from callrec.calls import machine as m
from callrec.routing.model import Strategy
from tests.unit.test_calls_harness import (
    AGENTS,
    BRIDGE,
    CALL_ID,
    CALLER_CHANNEL,
    CLOSED,
    CLOSED_PB,
    NOTICE,
    NOTICE_PB,
    REC,
    SNOOP,
    T0,
    Sim,
    dialled,
    leg_id,
    plan,
)


def bridged(sim: Sim) -> list[m.AddToBridge]:
    """Channels put into the call's bridge."""
    return [c for c in sim.all(m.AddToBridge) if c.bridge_id == BRIDGE]


def test_unknown_service_is_hung_up_cleanly_and_recorded() -> None:
    sim = Sim()
    out = sim.enter(None)
    assert sim.state.phase is m.Phase.DONE
    assert m.HangupChannel(CALLER_CHANNEL, "unallocated") in out
    assert not sim.all(m.Answer)
    row = sim.persisted()
    assert row["end_reason"] == "unknown_service"
    assert row["service_number"] == "100"
    assert row["caller_number"] == "+358401234567"
    assert row["started_at"] <= row["ended_at"]
    assert row["state"] == "done"
    assert any(c.level == "warning" for c in sim.all(m.Log))
    # the row is written before anything else happens
    assert isinstance(out[0], m.Persist)


def test_happy_path_in_order() -> None:
    sim = Sim()
    out = sim.enter(plan())
    assert isinstance(out[0], m.Persist)
    assert m.Answer(CALLER_CHANNEL) in out
    assert sim.state.phase is m.Phase.ANSWERING

    out = sim.answered()
    assert m.Play(CALLER_CHANNEL, NOTICE.media, NOTICE_PB) in out
    # the snoop to record is asked for with the notice (after it: the notice comes first)
    # and waits, unrecorded, for an answer
    assert out.index(m.SnoopChannel(CALLER_CHANNEL, SNOOP)) > out.index(
        m.Play(CALLER_CHANNEL, NOTICE.media, NOTICE_PB))
    assert sim.state.phase is m.Phase.NOTICE
    row = sim.persisted()
    assert row["notice_prompt"] == "notice/fi/abc"
    assert row["notice_language"] == "fi"
    assert row["notice_started_at"] > row["started_at"]
    assert not sim.all(m.DialAgent), "no agent is reached before the notice ends"
    assert sim.snoop_ready() == []
    assert not sim.all(m.RecordChannel), "nothing is recorded before an agent answers"

    out = sim.notice_done()
    assert sim.persisted()["notice_completed"] is True
    assert m.Ring(CALLER_CHANNEL) in out
    assert m.StartTimer(m.MAX_WAIT, 60.0) in out
    assert sim.all(m.DialAgent, out) == [dialled(1, "PJSIP/agent1", "a1")]
    assert m.StartTimer("ring-1", 15.0) in out
    assert sim.state.phase is m.Phase.RINGING
    assert not sim.all(m.RecordChannel)
    # the bridge is made while ringing, before the agents are dialled
    assert out.index(m.CreateBridge(BRIDGE)) < out.index(
        dialled(1, "PJSIP/agent1", "a1"))
    assert sim.persisted()["bridge_id"] == BRIDGE

    sim.feed(m.AgentDialStatus(sim.at(), leg_id(1), "RINGING"))
    assert sim.state.phase is m.Phase.RINGING
    out = sim.agent_answers(1)
    assert sim.state.phase is m.Phase.CONNECTING
    assert m.StopRing(CALLER_CHANNEL) in out
    assert m.CancelTimer(m.MAX_WAIT) in out
    assert m.CancelTimer("ring-1") in out
    # the waiting snoop recorded first, then the caller into the bridge made while ringing;
    # the agent only after the recording has started
    kinds = [type(c) for c in out
             if isinstance(c, m.CreateBridge | m.AddToBridge | m.RecordChannel)]
    assert kinds == [m.RecordChannel, m.AddToBridge]
    assert m.RecordChannel(SNOOP, REC) in out
    assert m.AddToBridge(BRIDGE, CALLER_CHANNEL) in out
    assert not sim.all(m.SnoopChannel, out), "the snoop of the notice is used"
    assert m.AddToBridge(BRIDGE, leg_id(1)) not in out
    row = sim.persisted()
    assert row["agent_name"] == "Aino Agentti"
    assert row["agent_id"] == "a1"
    assert row["agent_endpoint"] == "PJSIP/agent1"
    assert row["recording_name"] == REC
    assert row["bridge_id"] == BRIDGE
    assert row["answered_at"] > row["notice_started_at"]
    assert sim.state.phase is m.Phase.CONNECTING

    out = sim.feed(m.RecordingStarted(sim.at(), REC))
    assert out.count(m.AddToBridge(BRIDGE, leg_id(1))) == 1
    assert sim.state.phase is m.Phase.CONVERSATION

    out = sim.feed(m.CallerGone(sim.at(), 16))
    assert m.HangupChannel(leg_id(1), "normal") in out
    assert sim.state.phase is m.Phase.FINISHING
    row = sim.persisted()
    assert row["end_reason"] == "completed"
    assert row["ended_at"] > row["answered_at"]

    sim.feed(m.AgentGone(sim.at(), leg_id(1), 16))
    out = sim.feed(m.RecordingFinished(sim.at(), REC))
    assert out == [m.CancelTimer(m.FINISH_GUARD_TIMER), m.ArchiveRecording(REC, T0 + sim.step)]
    out = sim.feed(m.RecordingArchived(sim.at(), REC, ok=True))
    assert m.DestroyBridge(BRIDGE) in out
    assert sim.state.done
    assert sim.persisted()["state"] == "done"
    assert sim.all(m.MarkAgent) == [
        m.MarkAgent("a1", True, sim.state.answered_at),  # type: ignore[arg-type]
        m.MarkAgent("a1", False, sim.state.ended_at),  # type: ignore[arg-type]
    ]
    assert list(m.live_channels(sim.state)) == []


@pytest.mark.parametrize("status", ["BUSY", "CONGESTION", "CHANUNAVAIL", "NOANSWER"])
def test_in_order_skips_an_agent_whose_dial_fails(status: str) -> None:
    sim = Sim()
    sim.to_ringing(plan())
    out = sim.feed(m.AgentDialStatus(sim.at(), leg_id(1), status))
    assert m.HangupChannel(leg_id(1), "normal") in out
    assert m.CancelTimer("ring-1") in out
    assert dialled(2, "PJSIP/agent2", "a2") in out
    assert m.StartTimer("ring-2", 15.0) in out
    # the channel's destruction that follows changes nothing more
    out = sim.feed(m.AgentGone(sim.at(), leg_id(1), 17))
    assert not sim.all(m.DialAgent, out)


@pytest.mark.parametrize("cause", [17, 18, 19, 20, 21, 1, 34])
def test_in_order_skips_an_agent_whose_channel_is_destroyed(cause: int) -> None:
    sim = Sim()
    sim.to_ringing(plan())
    out = sim.feed(m.AgentGone(sim.at(), leg_id(1), cause))
    assert not sim.all(m.HangupChannel, out), "a gone channel is not hung up again"
    assert dialled(2, "PJSIP/agent2", "a2") in out


def test_in_order_ring_timeout_moves_to_the_next_agent() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    out = sim.timer("ring-1")
    assert m.HangupChannel(leg_id(1), "no_answer") in out
    assert dialled(2, "PJSIP/agent2", "a2") in out
    sim.agent_answers(2)
    assert sim.persisted()["agent_name"] == "Bertil Bengtsson"
    # the first agent's late answer is not taken
    out = sim.agent_answers(1)
    assert sim.state.winner == leg_id(2)
    assert not sim.all(m.HangupChannel, out), "already hung up once"


def test_rounds_repeat_until_max_wait() -> None:
    sim = Sim()
    sim.to_ringing(plan(round_pause=2.0))
    sim.timer("ring-1")
    out = sim.timer("ring-2")
    assert m.StartTimer(m.ROUND_PAUSE, 2.0) in out
    assert not sim.all(m.DialAgent, out)
    out = sim.timer(m.ROUND_PAUSE)
    assert dialled(3, "PJSIP/agent1", "a1") in out
    assert sim.state.round == 2
    sim.feed(m.AgentDialStatus(sim.at(), leg_id(3), "BUSY"))
    assert sim.state.leg(leg_id(4)) is not None


def test_max_wait_plays_please_call_later_and_never_records() -> None:
    sim = Sim()
    sim.to_ringing(plan(strategy=Strategy.RING_ALL))
    out = sim.timer(m.MAX_WAIT)
    # the snoop that waited for an answer goes too: nothing listens to the closed prompt
    assert sim.hangups() == {leg_id(1): ["normal"], leg_id(2): ["normal"], SNOOP: ["normal"]}
    assert m.StopRing(CALLER_CHANNEL) in out
    assert m.Play(CALLER_CHANNEL, CLOSED.media, CLOSED_PB) in out
    assert m.CancelTimer("ring-round-1") in out
    assert sim.state.phase is m.Phase.CLOSING
    out = sim.feed(m.PromptFinished(sim.at(), CLOSED_PB))
    assert m.HangupChannel(CALLER_CHANNEL, "normal") in out
    assert sim.state.done
    row = sim.persisted()
    assert row["end_reason"] == "no_agent"
    assert "recording_name" not in row
    assert not sim.all(m.RecordChannel)
    assert not bridged(sim), "nobody in the call's bridge"
    assert m.DestroyBridge(BRIDGE) in sim.history, "the bridge of the ringing goes"
    # an agent answering now is hung up, not connected
    sim.feed(m.CallerGone(sim.at()))
    assert sim.state.done
    assert not sim.state.timers


def test_max_wait_when_caller_leaves_during_the_closed_prompt() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.timer(m.MAX_WAIT)
    sim.feed(m.CallerGone(sim.at(), 16))
    assert sim.state.done
    assert sim.persisted()["end_reason"] == "no_agent"
    assert CALLER_CHANNEL not in sim.hangups()


def test_ring_all_first_answer_wins_second_answer_100ms_later_is_hung_up() -> None:
    sim = Sim(step_ms=100)
    out = sim.to_ringing(plan(strategy=Strategy.RING_ALL, agents=AGENTS))
    assert [c.channel_id for c in sim.all(m.DialAgent, out)] == [leg_id(1), leg_id(2), leg_id(3)]
    assert m.StartTimer("ring-round-1", 15.0) in out
    out = sim.agent_answers(2)
    assert sim.state.winner == leg_id(2)
    assert m.HangupChannel(leg_id(1), "answered_elsewhere") in out
    assert m.HangupChannel(leg_id(3), "answered_elsewhere") in out
    out = sim.agent_answers(3)  # 100 ms later
    assert sim.state.winner == leg_id(2)
    assert not sim.all(m.CreateBridge, out)
    assert sim.hangups() == {leg_id(1): ["answered_elsewhere"], leg_id(3): ["answered_elsewhere"]}
    out = sim.feed(m.AgentDialStatus(sim.at(), leg_id(3), "ANSWER"))
    assert all(isinstance(c, m.Log) for c in out)
    sim.feed(m.SnoopReady(sim.at(), SNOOP))
    sim.feed(m.RecordingStarted(sim.at(), REC))
    assert sim.all(m.AddToBridge)[-1] == m.AddToBridge(BRIDGE, leg_id(2))
    assert sim.persisted()["agent_name"] == "Bertil Bengtsson"


def test_ring_all_round_timeout_and_all_busy() -> None:
    sim = Sim()
    sim.to_ringing(plan(strategy=Strategy.RING_ALL))
    out = sim.timer("ring-round-1")
    assert sim.hangups() == {leg_id(1): ["no_answer"], leg_id(2): ["no_answer"]}
    assert m.StartTimer(m.ROUND_PAUSE, 2.0) in out
    out = sim.timer(m.ROUND_PAUSE)
    assert [c.channel_id for c in sim.all(m.DialAgent, out)] == [leg_id(3), leg_id(4)]
    sim.feed(m.AgentDialStatus(sim.at(), leg_id(3), "BUSY"))
    assert m.ROUND_PAUSE not in sim.state.timers
    out = sim.feed(m.AgentGone(sim.at(), leg_id(4), 17))
    assert m.CancelTimer("ring-round-2") in out
    assert m.StartTimer(m.ROUND_PAUSE, 2.0) in out


@pytest.mark.parametrize("strategy", [Strategy.ROUND_ROBIN, Strategy.LONGEST_IDLE])
def test_sequential_strategies_ring_in_the_given_order(strategy: Strategy) -> None:
    sim = Sim()
    out = sim.to_ringing(plan(strategy=strategy, agents=(AGENTS[2], AGENTS[0])))
    assert sim.all(m.DialAgent, out) == [dialled(1, "PJSIP/agent3", "a3")]
    out = sim.timer("ring-1")
    assert dialled(2, "PJSIP/agent1", "a1") in out


def test_caller_hangs_up_during_the_notice() -> None:
    sim = Sim()
    sim.enter(plan())
    sim.answered()
    out = sim.feed(m.CallerGone(sim.at(), 16))
    assert sim.state.done
    assert m.CancelTimer(m.NOTICE_GUARD) in out
    row = sim.persisted()
    assert row["end_reason"] == "abandoned"
    assert row["abandoned_phase"] == "notice"
    assert row.get("notice_completed", False) is False
    assert not sim.all(m.HangupChannel), "the caller is gone; nothing to hang up"
    # the playback ends after the hangup: still nothing rings
    sim.notice_done()
    assert not sim.all(m.DialAgent)
    assert sim.state.done


def test_caller_hangs_up_while_ringing() -> None:
    sim = Sim()
    sim.to_ringing(plan(strategy=Strategy.RING_ALL))
    out = sim.feed(m.CallerGone(sim.at(), 16))
    assert sim.hangups() == {leg_id(1): ["normal"], leg_id(2): ["normal"]}
    assert m.CancelTimer(m.MAX_WAIT) in out
    assert sim.state.done
    row = sim.persisted()
    assert (row["end_reason"], row["abandoned_phase"]) == ("abandoned", "ringing")


def test_agent_answering_after_the_caller_hung_up_gets_no_bridge() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.feed(m.CallerGone(sim.at(), 16))
    out = sim.agent_answers(1)
    assert not bridged(sim)
    assert not sim.all(m.HangupChannel, out), "hung up once already"
    assert sim.hangups() == {leg_id(1): ["normal"]}


def test_recording_started_after_the_caller_hung_up() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.agent_answers(1)
    sim.feed(m.SnoopReady(sim.at(), SNOOP))
    out = sim.feed(m.CallerGone(sim.at(), 16))
    assert m.HangupChannel(leg_id(1), "normal") in out
    assert sim.state.phase is m.Phase.FINISHING
    row = sim.persisted()
    assert (row["end_reason"], row["abandoned_phase"]) == ("abandoned", "connecting")
    out = sim.feed(m.RecordingStarted(sim.at(), REC))
    assert m.StopRecording(REC) in out
    assert m.AddToBridge(BRIDGE, leg_id(1)) not in sim.history
    sim.feed(m.RecordingFinished(sim.at(), REC))
    sim.feed(m.RecordingArchived(sim.at(), REC, ok=True))
    assert sim.state.done


def test_recording_failure_keeps_the_call_going_unrecorded() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.agent_answers(1)
    sim.feed(m.SnoopReady(sim.at(), SNOOP))
    out = sim.feed(m.RecordingFailed(sim.at(), REC, "disk full"))
    assert m.AddToBridge(BRIDGE, leg_id(1)) in out
    assert sim.state.phase is m.Phase.CONVERSATION
    assert sim.persisted()["recording_name"] is None
    assert any(c.level == "error" for c in sim.all(m.Log, out))
    sim.feed(m.AgentGone(sim.at(), leg_id(1), 16))
    assert sim.state.done
    assert sim.persisted()["end_reason"] == "completed"
    assert not sim.all(m.ArchiveRecording)


def test_snoop_command_failure_counts_as_recording_failure() -> None:
    sim = Sim()
    sim.to_ringing(plan(), snoop_ready=False)
    sim.agent_answers(1)
    cmd = m.SnoopChannel(CALLER_CHANNEL, SNOOP)
    out = sim.feed(m.CommandFailed(sim.at(), cmd, "500 no snoop"))
    assert m.AddToBridge(BRIDGE, leg_id(1)) in out
    assert sim.state.recording is m.RecState.FAILED
    assert sim.persisted()["recording_name"] is None


def test_record_command_failure_hangs_up_the_snoop_and_goes_on_unrecorded() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.agent_answers(1)
    sim.feed(m.SnoopReady(sim.at(), SNOOP))
    out = sim.feed(m.CommandFailed(sim.at(), m.RecordChannel(SNOOP, REC), "409 name in use"))
    assert m.HangupChannel(SNOOP) in out
    assert m.AddToBridge(BRIDGE, leg_id(1)) in out
    assert sim.state.recording is m.RecState.FAILED
    # a late duplicate of the snoop's start changes nothing and hangs up nothing twice
    out = sim.feed(m.SnoopReady(sim.at(), SNOOP))
    assert all(isinstance(c, m.Log) for c in out)
    sim.feed(m.AgentGone(sim.at(), leg_id(1), 16))
    assert sim.state.done
    assert sim.hangups()[SNOOP] == ["normal"]


def test_recording_request_unanswered_is_awaited_and_recorded_when_it_starts_late() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.agent_answers(1)
    record = m.RecordChannel(SNOOP, REC)
    out = sim.feed(m.CommandFailed(sim.at(), record, "no answer within 10 s", unanswered=True))
    assert m.HangupChannel(SNOOP) not in out, "the snoop may be recording already"
    assert sim.state.recording is m.RecState.REQUESTED
    out = sim.timer(m.RECORD_GUARD)
    assert m.AddToBridge(BRIDGE, leg_id(1)) in out
    sim.feed(m.RecordingStarted(sim.at(), REC))
    assert sim.state.recording is m.RecState.STARTED
    sim.feed(m.CallerGone(sim.at(), 16))
    out = sim.feed(m.RecordingFinished(sim.at(), REC))
    assert m.ArchiveRecording(REC, sim.state.started_at) in out


def test_recording_request_unanswered_that_never_starts_is_fetched_at_the_end() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.agent_answers(1)
    record = m.RecordChannel(SNOOP, REC)
    sim.feed(m.CommandFailed(sim.at(), record, "no answer within 10 s", unanswered=True))
    sim.timer(m.RECORD_GUARD)
    sim.feed(m.CallerGone(sim.at(), 16))
    out = sim.timer(m.FINISH_GUARD_TIMER)
    assert m.ArchiveRecording(REC, sim.state.started_at) in out
    sim.feed(m.RecordingArchived(sim.at(), REC, False))
    assert sim.state.done and sim.state.recording is m.RecState.LOST


def test_snoop_still_on_its_way_at_the_answer_is_recorded_when_it_comes() -> None:
    sim = Sim()
    sim.to_ringing(plan(), snoop_ready=False)
    out = sim.agent_answers(1)
    assert not sim.all(m.SnoopChannel, out), "asked for once, at the notice"
    assert not sim.all(m.RecordChannel, out)
    assert m.AddToBridge(BRIDGE, CALLER_CHANNEL) in out
    out = sim.feed(m.SnoopReady(sim.at(), SNOOP))
    assert out == [m.RecordChannel(SNOOP, REC)]
    out = sim.feed(m.RecordingStarted(sim.at(), REC))
    assert m.AddToBridge(BRIDGE, leg_id(1)) in out
    assert sim.state.phase is m.Phase.CONVERSATION


def test_snoop_failed_during_the_notice_is_asked_for_again_at_the_answer() -> None:
    sim = Sim()
    sim.enter(plan())
    sim.answered()
    out = sim.feed(m.CommandFailed(sim.at(), m.SnoopChannel(CALLER_CHANNEL, SNOOP), "500"))
    assert all(isinstance(c, m.Log) for c in out), "the call goes on"
    assert sim.state.phase is m.Phase.NOTICE
    sim.notice_done()
    out = sim.agent_answers(1)
    assert m.SnoopChannel(CALLER_CHANNEL, SNOOP) in out
    assert out.index(m.SnoopChannel(CALLER_CHANNEL, SNOOP)) < out.index(
        m.AddToBridge(BRIDGE, CALLER_CHANNEL)), "asked for before the caller is bridged"
    assert sim.state.recording is m.RecState.SNOOPING
    assert sim.feed(m.SnoopReady(sim.at(), SNOOP)) == [m.RecordChannel(SNOOP, REC)]
    sim.feed(m.RecordingStarted(sim.at(), REC))
    assert sim.state.phase is m.Phase.CONVERSATION


def test_snoop_unanswered_at_the_notice_arriving_late_is_recorded() -> None:
    # a stall: Asterisk answers the request after the timeout and makes the snoop late
    sim = Sim()
    sim.enter(plan())
    sim.answered()
    snoop = m.SnoopChannel(CALLER_CHANNEL, SNOOP)
    out = sim.feed(m.CommandFailed(sim.at(), snoop, "no answer within 10 s", unanswered=True))
    assert all(isinstance(c, m.Log) for c in out), "the call goes on"
    assert sim.state.snoop_channel == SNOOP, "still expected, under the same id"
    sim.notice_done()
    sim.feed(m.SnoopReady(sim.at(), SNOOP))
    out = sim.agent_answers(1)
    assert not sim.all(m.SnoopChannel, out)
    assert m.RecordChannel(SNOOP, REC) in out


def test_snoop_unanswered_at_the_notice_and_refused_again_at_the_answer_is_awaited() -> None:
    # seen at saturation: the second request refused ("500 Snoop channel could not be
    # created") because the first made the snoop late under the same id; the call went
    # unrecorded while that snoop arrived
    sim = Sim()
    sim.enter(plan())
    sim.answered()
    snoop = m.SnoopChannel(CALLER_CHANNEL, SNOOP)
    sim.feed(m.CommandFailed(sim.at(), snoop, "no answer within 10 s", unanswered=True))
    sim.notice_done()
    out = sim.agent_answers(1)
    assert snoop in out, "asked for again: the first request may have been lost"
    assert sim.state.recording is m.RecState.SNOOPING
    out = sim.feed(m.CommandFailed(sim.at(), snoop, "500 Snoop channel could not be created"))
    assert all(isinstance(c, m.Log) for c in out), "not a failed recording"
    assert sim.state.recording is m.RecState.SNOOPING
    assert m.AddToBridge(BRIDGE, leg_id(1)) not in sim.all(m.AddToBridge), "the agent waits"
    assert sim.feed(m.SnoopReady(sim.at(), SNOOP)) == [m.RecordChannel(SNOOP, REC)]
    out = sim.feed(m.RecordingStarted(sim.at(), REC))
    assert m.AddToBridge(BRIDGE, leg_id(1)) in out
    sim.feed(m.CallerGone(sim.at(), 16))
    sim.feed(m.RecordingFinished(sim.at(), REC))
    sim.feed(m.RecordingArchived(sim.at(), REC, True))
    assert sim.state.done
    assert sim.persisted()["recording_name"] == REC


def test_snoop_unanswered_at_the_answer_is_recorded_when_it_comes_after_the_guard() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.feed(m.SnoopGone(sim.at(), SNOOP))
    sim.agent_answers(1)
    snoop = m.SnoopChannel(CALLER_CHANNEL, SNOOP)
    out = sim.feed(m.CommandFailed(sim.at(), snoop, "no answer within 10 s", unanswered=True))
    assert sim.state.recording is m.RecState.SNOOPING
    assert not sim.all(m.AddToBridge, out)
    out = sim.timer(m.RECORD_GUARD)
    assert m.AddToBridge(BRIDGE, leg_id(1)) in out, "the agent is not held past the guard"
    assert sim.feed(m.SnoopReady(sim.at(), SNOOP)) == [m.RecordChannel(SNOOP, REC)]
    sim.feed(m.RecordingStarted(sim.at(), REC))
    assert sim.state.recording is m.RecState.STARTED


def test_a_refused_snoop_without_an_unanswered_request_before_still_fails_the_recording() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.feed(m.SnoopGone(sim.at(), SNOOP))
    sim.agent_answers(1)
    snoop = m.SnoopChannel(CALLER_CHANNEL, SNOOP)
    out = sim.feed(m.CommandFailed(sim.at(), snoop, "500 Snoop channel could not be created"))
    assert sim.state.recording is m.RecState.FAILED
    assert m.AddToBridge(BRIDGE, leg_id(1)) in out


def test_snoop_unanswered_after_the_caller_left_waits_for_nothing() -> None:
    sim = Sim()
    sim.to_ringing(plan(), snoop_ready=False)
    sim.agent_answers(1)
    sim.feed(m.CallerGone(sim.at(), 16))
    snoop = m.SnoopChannel(CALLER_CHANNEL, SNOOP)
    sim.feed(m.CommandFailed(sim.at(), snoop, "no answer within 10 s", unanswered=True))
    assert sim.state.done
    assert sim.persisted()["recording_name"] is None


def test_snoop_gone_while_ringing_is_asked_for_again_at_the_answer() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.feed(m.SnoopGone(sim.at(), SNOOP))
    assert sim.state.snoop_channel is None and not sim.state.snoop_ready
    out = sim.agent_answers(1)
    assert m.SnoopChannel(CALLER_CHANNEL, SNOOP) in out
    assert not sim.all(m.RecordChannel, out), "not before the new snoop is there"
    assert sim.feed(m.SnoopReady(sim.at(), SNOOP)) == [m.RecordChannel(SNOOP, REC)]


def test_snoop_gone_with_the_recorded_caller_changes_nothing() -> None:
    sim = Sim()
    sim.to_conversation()
    out = sim.feed(m.SnoopGone(sim.at(), SNOOP))
    assert out == []
    assert sim.state.snoop_channel == SNOOP and sim.state.recording is m.RecState.STARTED


def test_caller_leaving_while_ringing_takes_the_unrecorded_snoop_along() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.feed(m.CallerGone(sim.at(), 16))
    assert SNOOP not in sim.hangups(), "it ends with the caller: no request for it"
    assert sim.state.snoop_channel is None
    assert not sim.all(m.RecordChannel)
    assert sim.state.done


def test_bridge_that_could_not_be_made_while_ringing_is_made_at_the_answer() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    out = sim.feed(m.CommandFailed(sim.at(), m.CreateBridge(BRIDGE), "500"))
    assert sim.state.phase is m.Phase.RINGING, "the caller keeps waiting"
    assert sim.state.bridge_id is None
    out = sim.agent_answers(1)
    assert out.index(m.CreateBridge(BRIDGE)) < out.index(m.AddToBridge(BRIDGE, CALLER_CHANNEL))
    sim.feed(m.RecordingStarted(sim.at(), REC))
    assert sim.state.phase is m.Phase.CONVERSATION
    sim.feed(m.CallerGone(sim.at(), 16))
    sim.feed(m.RecordingFinished(sim.at(), REC))
    sim.feed(m.RecordingArchived(sim.at(), REC, True))
    assert sim.state.done
    assert sim.all(m.DestroyBridge) == [m.DestroyBridge(BRIDGE)]


def test_snoop_reported_twice_records_once() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.agent_answers(1)
    sim.feed(m.SnoopReady(sim.at(), SNOOP))
    out = sim.feed(m.SnoopReady(sim.at(), SNOOP))
    assert all(isinstance(c, m.Log) for c in out)
    assert sim.all(m.RecordChannel) == [m.RecordChannel(SNOOP, REC)]
    out = sim.feed(m.SnoopReady(sim.at(), "someone-elses-snoop"))
    assert all(isinstance(c, m.Log) for c in out)


def test_snoop_ready_after_the_caller_left_records_nothing() -> None:
    sim = Sim()
    sim.to_ringing(plan(), snoop_ready=False)
    sim.agent_answers(1)
    sim.feed(m.CallerGone(sim.at(), 16))
    assert sim.state.phase is m.Phase.FINISHING
    out = sim.feed(m.SnoopReady(sim.at(), SNOOP))
    assert m.HangupChannel(SNOOP) in out
    assert not sim.all(m.RecordChannel)
    assert sim.state.done
    assert sim.persisted()["recording_name"] is None
    assert m.DestroyBridge(BRIDGE) in out


def test_snoop_that_never_comes_ends_the_call_unrecorded_after_the_guard() -> None:
    sim = Sim()
    sim.to_ringing(plan(), snoop_ready=False)
    sim.agent_answers(1)
    sim.feed(m.CallerGone(sim.at(), 16))
    out = sim.timer(m.FINISH_GUARD_TIMER)
    assert sim.state.done
    assert m.HangupChannel(SNOOP) in out
    assert not sim.all(m.ArchiveRecording)
    assert sim.persisted()["recording_name"] is None


def test_snoop_late_after_the_record_guard_is_still_recorded() -> None:
    sim = Sim()
    sim.to_ringing(plan(), snoop_ready=False)
    sim.agent_answers(1)
    sim.timer(m.RECORD_GUARD)
    assert sim.state.phase is m.Phase.CONVERSATION
    out = sim.feed(m.SnoopReady(sim.at(), SNOOP))
    assert out == [m.RecordChannel(SNOOP, REC)]
    sim.feed(m.RecordingStarted(sim.at(), REC))
    assert sim.state.recording is m.RecState.STARTED
    assert sim.all(m.AddToBridge).count(m.AddToBridge(BRIDGE, leg_id(1))) == 1


def test_recording_start_guard_adds_the_agent_anyway() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.agent_answers(1)
    sim.feed(m.SnoopReady(sim.at(), SNOOP))
    out = sim.timer(m.RECORD_GUARD)
    assert m.AddToBridge(BRIDGE, leg_id(1)) in out
    out = sim.feed(m.RecordingStarted(sim.at(), REC))
    assert m.AddToBridge(BRIDGE, leg_id(1)) not in out
    assert sim.state.recording is m.RecState.STARTED


def test_agent_hangs_up_in_conversation() -> None:
    sim = Sim()
    sim.to_conversation()
    out = sim.feed(m.AgentGone(sim.at(), leg_id(1), 16))
    assert m.HangupChannel(CALLER_CHANNEL, "normal") in out
    assert sim.persisted()["end_reason"] == "completed"
    assert sim.state.phase is m.Phase.FINISHING
    # the caller's own hangup event afterwards changes nothing
    assert sim.feed(m.CallerGone(sim.at(), 16)) == []


def test_caller_cut_by_asterisk_in_conversation_is_interrupted_and_still_archived() -> None:
    sim = Sim()
    sim.to_conversation()
    out = sim.feed(m.CallerGone(sim.at(), cut=True))
    assert sim.persisted()["end_reason"] == "interrupted"
    assert sim.persisted().get("abandoned_phase") is None
    assert m.HangupChannel(leg_id(1), "normal") in out
    assert m.StartTimer(m.FINISH_GUARD_TIMER, m.FINISH_GUARD) in out
    assert any(c.level == "warning" for c in sim.all(m.Log, out))
    # the agent's own cut afterwards changes nothing; the recording is archived as ever
    assert sim.feed(m.AgentGone(sim.at(), leg_id(1), cut=True)) == []
    sim.feed(m.RecordingFinished(sim.at(), REC))
    out = sim.feed(m.RecordingArchived(sim.at(), REC, ok=True))
    assert sim.state.done
    assert sim.persisted()["end_reason"] == "interrupted"


def test_agent_cut_by_asterisk_in_conversation_is_interrupted() -> None:
    sim = Sim()
    sim.to_conversation()
    sim.feed(m.AgentGone(sim.at(), leg_id(1), cut=True))
    assert sim.persisted()["end_reason"] == "interrupted"
    assert sim.state.phase is m.Phase.FINISHING
    assert sim.feed(m.CallerGone(sim.at(), cut=True)) == []


@pytest.mark.parametrize("where", ["notice", "ringing", "connecting"])
def test_caller_cut_by_asterisk_while_waiting_is_interrupted_not_abandoned(where: str) -> None:
    sim = Sim()
    if where == "notice":
        sim.enter(plan())
        sim.answered()
    else:
        sim.to_ringing(plan())
        if where == "connecting":
            sim.snoop_ready()
            sim.agent_answers(1)
            assert sim.state.phase is m.Phase.CONNECTING
    sim.feed(m.CallerGone(sim.at(), cut=True))
    row = sim.persisted()
    assert (row["end_reason"], row.get("abandoned_phase")) == ("interrupted", None)
    assert not sim.state.timers or sim.state.phase is m.Phase.FINISHING


def test_caller_cut_while_closing_keeps_the_reason_it_was_closing_for() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.timer(m.MAX_WAIT)
    sim.feed(m.CallerGone(sim.at(), cut=True))
    assert sim.persisted()["end_reason"] == "no_agent"


def test_finish_guard_fetches_a_recording_whose_end_was_not_reported() -> None:
    sim = Sim()
    sim.to_conversation()
    out = sim.feed(m.CallerGone(sim.at(), 16))
    assert m.StartTimer(m.FINISH_GUARD_TIMER, m.FINISH_GUARD) in out
    out = sim.timer(m.FINISH_GUARD_TIMER)
    assert out[-2:] == [m.StopRecording(REC), m.ArchiveRecording(REC, sim.state.started_at)]
    # the late RecordingFinished does not archive a second time
    assert not sim.all(m.ArchiveRecording, sim.feed(m.RecordingFinished(sim.at(), REC)))
    sim.feed(m.RecordingArchived(sim.at(), REC, ok=False))
    assert sim.state.done
    assert sim.state.recording is m.RecState.LOST


def test_recording_finished_mid_conversation_is_archived_and_call_goes_on() -> None:
    sim = Sim()
    sim.to_conversation()
    out = sim.feed(m.RecordingFinished(sim.at(), REC))
    assert m.ArchiveRecording(REC, sim.state.started_at) in out
    sim.feed(m.RecordingArchived(sim.at(), REC, ok=True))
    assert sim.state.phase is m.Phase.CONVERSATION
    sim.feed(m.CallerGone(sim.at()))
    assert sim.state.done


def test_failed_notice_means_no_recording() -> None:
    sim = Sim()
    sim.enter(plan())
    sim.answered()
    out = sim.notice_done(failed=True)
    assert m.HangupChannel(SNOOP) in out, "the snoop asked for with the notice goes"
    assert sim.persisted()["notice_completed"] is False
    out = sim.agent_answers(1)
    assert m.AddToBridge(BRIDGE, leg_id(1)) in out
    assert sim.all(m.SnoopChannel) == [m.SnoopChannel(CALLER_CHANNEL, SNOOP)]
    assert not sim.all(m.RecordChannel)
    assert sim.state.phase is m.Phase.CONVERSATION
    sim.feed(m.CallerGone(sim.at()))
    assert sim.state.done


def test_play_command_failure_for_the_notice_means_no_recording() -> None:
    sim = Sim()
    sim.enter(plan())
    sim.answered()
    cmd = m.Play(CALLER_CHANNEL, NOTICE.media, NOTICE_PB)
    sim.feed(m.CommandFailed(sim.at(), cmd, "500"))
    assert sim.state.phase is m.Phase.RINGING
    assert sim.state.recording is m.RecState.DISABLED


def test_missing_notice_prompt_means_no_recording() -> None:
    sim = Sim()
    sim.enter(plan(notice=None))
    out = sim.answered()
    assert not sim.all(m.Play, out)
    assert sim.state.phase is m.Phase.RINGING
    sim.agent_answers(1)
    assert not sim.all(m.SnoopChannel) and not sim.all(m.RecordChannel)


def test_notice_guard_when_no_playback_end_arrives() -> None:
    sim = Sim()
    out = sim.enter(plan())
    out = sim.answered()
    assert m.StartTimer(m.NOTICE_GUARD, 4.0 + m.PROMPT_GUARD_SLACK) in out
    sim.timer(m.NOTICE_GUARD)
    assert sim.state.phase is m.Phase.RINGING
    assert sim.state.recording is m.RecState.DISABLED


def test_closed_service_plays_the_closed_prompt() -> None:
    sim = Sim()
    sim.enter(plan(is_open=False))
    out = sim.answered()
    assert m.Play(CALLER_CHANNEL, CLOSED.media, CLOSED_PB) in out
    assert not sim.all(m.Play, [c for c in out if c == m.Play(CALLER_CHANNEL, NOTICE.media, "")])
    sim.feed(m.PromptFinished(sim.at(), CLOSED_PB))
    assert sim.state.done
    assert sim.persisted()["end_reason"] == "closed"
    assert not sim.all(m.DialAgent)


def test_service_without_agents_says_please_call_later() -> None:
    sim = Sim()
    out = sim.to_ringing(plan(agents=()))
    assert m.Play(CALLER_CHANNEL, CLOSED.media, CLOSED_PB) in out
    assert sim.state.phase is m.Phase.CLOSING


def test_no_closed_prompt_hangs_up_at_max_wait() -> None:
    sim = Sim()
    sim.to_ringing(plan(closed_prompt=None))
    out = sim.timer(m.MAX_WAIT)
    assert m.HangupChannel(CALLER_CHANNEL, "normal") in out
    assert sim.state.done
    assert sim.persisted()["end_reason"] == "no_agent"


def test_closing_guard_hangs_up_when_no_playback_end_arrives() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.timer(m.MAX_WAIT)
    out = sim.timer(m.CLOSING_GUARD)
    assert m.HangupChannel(CALLER_CHANNEL, "normal") in out
    assert sim.state.done


def test_music_on_hold_instead_of_ringing() -> None:
    sim = Sim()
    out = sim.to_ringing(plan(hold=m.HoldSound.MOH))
    assert m.StartMoh(CALLER_CHANNEL) in out
    out = sim.agent_answers(1)
    assert m.StopMoh(CALLER_CHANNEL) in out


def test_duplicate_and_unknown_events_change_nothing() -> None:
    sim = Sim()
    sim.to_conversation()
    before = sim.state
    for event in (
        m.CallerEntered(sim.at(), "100", "x", "y", plan()),
        m.Answered(sim.at()),
        m.AgentAnswered(sim.at(), leg_id(1)),
        m.AgentAnswered(sim.at(), "no-such-channel"),
        m.AgentGone(sim.at(), "no-such-channel", 16),
        m.AgentDialStatus(sim.at(), "no-such-channel", "BUSY"),
        m.RecordingStarted(sim.at(), REC),
        m.RecordingStarted(sim.at(), "callrec-someone-else"),
        m.RecordingFinished(sim.at(), "callrec-someone-else"),
        m.RecordingArchived(sim.at(), REC, ok=True),
        m.PromptFinished(sim.at(), NOTICE_PB),
        m.PromptFinished(sim.at(), "unknown-playback"),
        m.TimerFired(sim.at(), "ring-1"),  # cancelled already: stale
        m.TimerFired(sim.at(), "no-such-timer"),
    ):
        out = sim.feed(event)
        assert all(isinstance(c, m.Log) for c in out), (event, out)
        assert sim.state == before


def test_each_agent_leg_is_one_dial_request_and_rings_in_no_bridge() -> None:
    sim = Sim()
    out = sim.to_ringing(plan(strategy=Strategy.RING_ALL))
    asterisk = [c for c in out if m.touches(c)]
    assert asterisk == [
        m.Ring(CALLER_CHANNEL),
        m.CreateBridge(BRIDGE),
        dialled(1, "PJSIP/agent1", "a1"),
        dialled(2, "PJSIP/agent2", "a2"),
    ]
    sim.agent_answers(1)
    sim.feed(m.RecordingStarted(sim.at(), REC))
    assert sim.all(m.AddToBridge) == [m.AddToBridge(BRIDGE, CALLER_CHANNEL),
                                      m.AddToBridge(BRIDGE, leg_id(1))]
    sim.feed(m.CallerGone(sim.at(), 16))
    sim.feed(m.RecordingFinished(sim.at(), REC))
    out = sim.feed(m.RecordingArchived(sim.at(), REC, True))
    assert sim.state.done
    assert sim.all(m.DestroyBridge) == [m.DestroyBridge(BRIDGE)]


def test_bridges_whose_create_went_unanswered_are_destroyed_at_the_end() -> None:
    # Asterisk may make them late: once forgotten, they stayed in Asterisk until its restart
    sim = Sim()
    sim.to_ringing(plan())
    sim.feed(m.CommandFailed(sim.at(), m.CreateBridge(BRIDGE), "no answer within 10 s",
                             unanswered=True))
    assert sim.state.bridge_id is None
    sim.timer(m.MAX_WAIT)
    sim.feed(m.PromptFinished(sim.at(), CLOSED_PB))
    assert sim.state.done and sim.persisted()["end_reason"] == "no_agent"
    assert sim.all(m.DestroyBridge) == [m.DestroyBridge(BRIDGE)]


def test_a_bridge_made_again_at_the_answer_is_destroyed_once() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.feed(m.CommandFailed(sim.at(), m.CreateBridge(BRIDGE), "no answer", unanswered=True))
    out = sim.agent_answers(1)
    assert m.CreateBridge(BRIDGE) in out
    sim.feed(m.RecordingStarted(sim.at(), REC))
    sim.feed(m.CallerGone(sim.at(), 16))
    sim.feed(m.RecordingFinished(sim.at(), REC))
    sim.feed(m.RecordingArchived(sim.at(), REC, True))
    assert sim.state.done and sim.persisted()["end_reason"] == "completed"
    assert sim.all(m.DestroyBridge) == [m.DestroyBridge(BRIDGE)]


def test_dial_status_answer_and_state_up_count_as_one_answer() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.feed(m.AgentDialStatus(sim.at(), leg_id(1), "ANSWER"))
    sim.agent_answers(1)
    assert sim.all(m.CreateBridge) == [m.CreateBridge(BRIDGE)]
    assert len(sim.all(m.SnoopChannel)) == 1


def test_a_failed_dial_request_moves_on() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    cmd = dialled(1, "PJSIP/agent1", "a1")
    out = sim.feed(m.CommandFailed(sim.at(), cmd, "500 allocation failed"))
    assert dialled(2, "PJSIP/agent2", "a2") in out
    assert sim.hangups() == {leg_id(1): ["normal"]}, "in case it exists after all"


def test_answer_failure_when_the_caller_is_gone() -> None:
    sim = Sim()
    sim.enter(plan())
    sim.feed(m.CommandFailed(sim.at(), m.Answer(CALLER_CHANNEL), "404", not_found=True))
    assert sim.state.done
    assert sim.persisted()["end_reason"] == "abandoned"
    assert not sim.hangups()


def test_bridge_failure_ends_the_call_as_failed() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.agent_answers(1)
    sim.feed(m.CommandFailed(sim.at(), m.CreateBridge(BRIDGE), "500"))
    assert sim.persisted()["end_reason"] == "failed"
    assert set(sim.hangups()) == {CALLER_CHANNEL, leg_id(1)}


def test_agent_not_bridged_for_not_found_is_hung_up_all_the_same() -> None:
    # 404 on addChannel names the bridge, not the channel: the agent may still be connected
    sim = Sim()
    sim.to_conversation()
    add = m.AddToBridge(BRIDGE, leg_id(1))
    sim.feed(m.CommandFailed(sim.at(), add, "404 Bridge not found", not_found=True))
    assert sim.state.phase is m.Phase.FINISHING
    assert set(sim.hangups()) == {CALLER_CHANNEL, leg_id(1)}


@pytest.mark.parametrize("channel", [leg_id(1), CALLER_CHANNEL])
def test_an_unanswered_add_to_the_bridge_is_asked_again_once(channel: str) -> None:
    sim = Sim()
    sim.to_conversation()
    add = m.AddToBridge(BRIDGE, channel)
    out = sim.feed(m.CommandFailed(sim.at(), add, "no answer within 10 s", unanswered=True))
    assert out.count(add) == 1, "asked again"
    assert sim.state.phase is m.Phase.CONVERSATION
    assert not sim.hangups()
    # a second request left unanswered too: Asterisk is not taking requests, the call fails
    sim.feed(m.CommandFailed(sim.at(), add, "no answer within 10 s", unanswered=True))
    assert sim.persisted()["end_reason"] == "failed"
    assert set(sim.hangups()) == {CALLER_CHANNEL, leg_id(1)}


def test_only_the_calls_own_parties_are_asked_into_its_bridge_again() -> None:
    # found by the property test: an unanswered add of another channel was sent again, into
    # the recorded bridge
    sim = Sim()
    sim.to_conversation()
    add = m.AddToBridge(BRIDGE, leg_id(2))
    out = sim.feed(m.CommandFailed(sim.at(), add, "no answer within 10 s", unanswered=True))
    assert add not in out


def test_a_refused_add_to_the_bridge_is_not_asked_again() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.agent_answers(1)
    add = m.AddToBridge(BRIDGE, leg_id(1))
    out = sim.feed(m.CommandFailed(sim.at(), add, "500 Internal Server Error"))
    assert add not in out
    assert sim.persisted()["end_reason"] == "failed"


def test_caller_not_bridged_for_not_found_is_hung_up_all_the_same() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.agent_answers(1)
    add = m.AddToBridge(BRIDGE, CALLER_CHANNEL)
    sim.feed(m.CommandFailed(sim.at(), add, "404 Bridge not found", not_found=True))
    assert sim.state.phase in (m.Phase.FINISHING, m.Phase.DONE)
    assert sim.hangups()[CALLER_CHANNEL] == ["normal"]
    assert leg_id(1) in sim.hangups()


def test_ids_are_deterministic_and_free_of_caller_text() -> None:
    a, b = Sim(), Sim()
    for sim in (a, b):
        sim.feed(
            m.CallerEntered(sim.at(), "100", "../../etc/passwd", "'; DROP TABLE calls; --", plan())
        )
        sim.answered()
        sim.notice_done()
        sim.agent_answers(1)
    assert a.history == b.history
    assert f"callrec-{CALL_ID}" == REC
    assert m.call_id_from_recording(REC) == CALL_ID
    for bad in ("callrec-../x", "other-" + str(CALL_ID), "callrec-" + str(CALL_ID).upper()):
        assert m.call_id_from_recording(bad) is None
    assert a.persisted()["caller_number"] == "../../etc/passwd"


def test_resumed_conversation_finishes_and_archives() -> None:
    agent = AGENTS[0]
    state = m.resumed_conversation(
        call_id=CALL_ID,
        caller_channel=CALLER_CHANNEL,
        agent=agent,
        agent_channel="agent-chan",
        bridge_id=BRIDGE,
        recording_name=REC,
        started_at=T0,
        answered_at=T0,
    )
    sim = Sim()
    sim.state = state
    out = sim.feed(m.CallerGone(sim.at()))
    assert m.HangupChannel("agent-chan", "normal") in out
    sim.feed(m.RecordingFinished(sim.at(), REC))
    sim.feed(m.RecordingArchived(sim.at(), REC, ok=True))
    assert sim.state.done
    assert sim.persisted()["end_reason"] == "completed"


def test_end_call_in_conversation_hangs_up_both_and_keeps_the_recording() -> None:
    sim = Sim()
    sim.to_conversation()
    out = sim.feed(m.EndCall(sim.at(), "completed"))
    assert set(sim.hangups()) == {CALLER_CHANNEL, leg_id(1)}
    assert m.StartTimer(m.FINISH_GUARD_TIMER, m.FINISH_GUARD) in out
    assert sim.persisted()["end_reason"] == "completed"
    sim.feed(m.RecordingFinished(sim.at(), REC))
    sim.feed(m.RecordingArchived(sim.at(), REC, ok=True))
    assert sim.state.done


def test_end_call_while_closing_keeps_no_agent() -> None:
    sim = Sim()
    sim.to_ringing(plan())
    sim.timer(m.MAX_WAIT)
    sim.feed(m.EndCall(sim.at(), "interrupted"))
    assert sim.persisted()["end_reason"] == "no_agent"
    assert sim.state.done


def test_a_call_without_a_plan_is_recorded_as_failed_and_hung_up() -> None:
    sim = Sim()
    sim.feed(m.CallerEntered(sim.at(), "100", "+358401", "x", None, "RoutingError('boom')"))
    assert sim.state.done
    assert sim.hangups() == {CALLER_CHANNEL: ["normal"]}
    row = sim.persisted()
    assert (row["end_reason"], row["service_number"]) == ("failed", "100")
    assert not sim.all(m.Answer)


def test_only_the_last_row_write_is_durable_and_it_carries_the_whole_row() -> None:
    sim = Sim()
    sim.to_conversation()
    sim.feed(m.CallerGone(sim.at(), 16))
    writes = sim.all(m.Persist)
    assert "started_at" in writes[0].fields  # the row is born (the manager waits for it)
    ending = [w for w in writes if "ended_at" in w.fields]
    assert len(ending) == 1 and ending[0].durable and writes[-1] is ending[0]
    before = writes[: writes.index(ending[0])]
    assert len(before) > 1 and not any(w.durable for w in before)
    # the last write alone would rebuild the row if the lazy ones in between were lost
    assert ending[0].fields == sim.persisted()
    for column in ("caller_number", "service_number", "agent_name", "recording_name",
                   "notice_prompt", "answered_at"):
        assert column in ending[0].fields


def test_state_copies_match_dataclasses_replace() -> None:
    """Transitions copy the state with `_changed` instead of `dataclasses.replace`; the two
    must agree, which holds while the state has no `__post_init__` and no `init=False` field."""
    import dataclasses

    assert not hasattr(m.CallState, "__post_init__")
    assert all(f.init for f in dataclasses.fields(m.CallState))
    before = m.resumed_conversation(
        call_id=CALL_ID, caller_channel=CALLER_CHANNEL, agent=AGENTS[0],
        agent_channel=leg_id(1), bridge_id=BRIDGE, recording_name=REC,
        started_at=T0, answered_at=T0,
    )
    changes = {"phase": m.Phase.DONE, "attempts": 3, "timers": frozenset({"x"}), "row": {"a": 1}}
    after = m._changed(before, changes)
    assert after == dataclasses.replace(before, **changes)
    assert after is not before and before.phase is m.Phase.CONVERSATION
    with pytest.raises(dataclasses.FrozenInstanceError):
        after.phase = m.Phase.NEW  # type: ignore[misc]  # frozen: what this checks
    with pytest.raises(TypeError, match="not a CallState field: phasee"):
        m._changed(before, {"phasee": m.Phase.DONE})


def test_a_recorded_caller_gone_as_the_agent_answers_is_abandoned_not_completed() -> None:
    # under load the 404s of the snoop's recording and of the caller's add come before the
    # caller's hang-up event: the call was once archived as a completed conversation
    sim = Sim()
    sim.to_ringing(plan())
    out = sim.agent_answers(1)
    record = next(c for c in out if isinstance(c, m.RecordChannel))
    add_caller = m.AddToBridge(BRIDGE, CALLER_CHANNEL)
    assert add_caller in out
    sim.feed(m.CommandFailed(sim.at(), record, "404 Channel not found", not_found=True))
    sim.feed(m.CommandFailed(sim.at(), add_caller, "404 Channel not found", not_found=True))
    sim.feed(m.CallerGone(sim.at(), 16))
    row = sim.persisted()
    assert (row["end_reason"], row["abandoned_phase"]) == ("abandoned", "connecting")
    assert leg_id(1) in sim.hangups()


def test_a_caller_gone_at_a_second_add_after_talking_is_a_conversation() -> None:
    # the first add went unanswered (and may have been done): the caller may have talked
    sim = Sim()
    sim.to_conversation()
    add = m.AddToBridge(BRIDGE, CALLER_CHANNEL)
    sim.feed(m.CommandFailed(sim.at(), add, "no answer within 10 s", unanswered=True))
    sim.feed(m.CommandFailed(sim.at(), add, "404 Channel not found", not_found=True))
    assert sim.persisted()["end_reason"] == "completed"


def test_a_notice_play_left_unanswered_is_awaited_not_taken_for_failed() -> None:
    sim = Sim()
    sim.enter(plan())
    out = sim.answered()
    play = next(c for c in out if isinstance(c, m.Play))
    sim.snoop_ready()
    out = sim.feed(m.CommandFailed(sim.at(), play, "no answer within 10 s", unanswered=True))
    assert sim.state.phase is m.Phase.NOTICE, "agents are not rung over the notice"
    assert not [c for c in out if isinstance(c, m.Ring | m.DialAgent)]
    # Asterisk played it late, and through: the call is recorded as any other
    sim.notice_done()
    assert sim.state.phase is m.Phase.RINGING and sim.persisted()["notice_completed"] is True
    sim.agent_answers(1)
    sim.feed(m.RecordingStarted(sim.at(), REC))
    assert sim.state.phase is m.Phase.CONVERSATION and sim.state.recording is m.RecState.STARTED


def test_a_notice_play_left_unanswered_and_never_played_ends_unrecorded_by_its_guard() -> None:
    sim = Sim()
    sim.enter(plan())
    play = next(c for c in sim.answered() if isinstance(c, m.Play))
    sim.feed(m.CommandFailed(sim.at(), play, "no answer within 10 s", unanswered=True))
    sim.feed(m.TimerFired(sim.at(), m.NOTICE_GUARD))
    assert sim.state.phase is m.Phase.RINGING
    assert sim.state.recording is m.RecState.DISABLED
    assert sim.persisted()["notice_completed"] is False


def test_a_notice_play_refused_for_a_channel_gone_is_the_caller_leaving() -> None:
    sim = Sim()
    sim.enter(plan())
    play = next(c for c in sim.answered() if isinstance(c, m.Play))
    out = sim.feed(m.CommandFailed(sim.at(), play, "404 Channel not found", not_found=True))
    assert not [c for c in out if isinstance(c, m.Ring | m.DialAgent)]
    sim.feed(m.CallerGone(sim.at(), 16))  # its event, late
    row = sim.persisted()
    assert (row["end_reason"], row["abandoned_phase"]) == ("abandoned", "notice")
