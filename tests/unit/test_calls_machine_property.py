"""Property: any sequence of events never raises, and a finished call leaves nothing open."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

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
    leg_id,
)

TIMER_NAMES = [
    m.MAX_WAIT,
    m.ROUND_PAUSE,
    m.NOTICE_GUARD,
    m.CLOSING_GUARD,
    m.RECORD_GUARD,
    m.FINISH_GUARD_TIMER,
    *(f"ring-{i}" for i in range(1, 9)),
    *(f"ring-round-{i}" for i in range(1, 4)),
]
channels = st.one_of(st.integers(1, 8).map(leg_id), st.just("stranger"), st.just(CALLER_CHANNEL))
recordings = st.sampled_from([REC, "callrec-00000000-0000-0000-0000-000000000000"])
plans = st.builds(
    m.ServicePlan,
    number=st.just("100"),
    name=st.just("Ajanvaraus"),
    language=st.just("fi"),
    strategy=st.sampled_from(list(Strategy)),
    agents=st.lists(st.sampled_from(AGENTS), min_size=1, max_size=3, unique=True).map(tuple),
    ring_timeout=st.sampled_from([0.5, 15.0]),
    max_wait=st.sampled_from([0.0, 60.0]),
    notice=st.sampled_from([NOTICE, NOTICE, NOTICE, None]),
    closed_prompt=st.sampled_from([CLOSED, None]),
    is_open=st.sampled_from([True, True, True, False]),
    hold=st.sampled_from(list(m.HoldSound)),
    round_pause=st.sampled_from([0.0, 2.0]),
)
commands_that_fail = st.one_of(
    st.builds(m.Answer, st.just(CALLER_CHANNEL)),
    st.builds(
        m.Play, st.just(CALLER_CHANNEL), st.just("x"), st.sampled_from([NOTICE_PB, CLOSED_PB])
    ),
    st.builds(m.DialAgent, channels, st.just("PJSIP/agent1"), st.just("a1"),
              st.just(CALLER_CHANNEL), st.just(20)),
    st.builds(m.CreateBridge, st.just(BRIDGE)),
    st.builds(m.AddToBridge, st.just(BRIDGE), channels),
    st.builds(m.SnoopChannel, st.just(CALLER_CHANNEL), st.just(SNOOP)),
    st.builds(m.RecordChannel, st.sampled_from([SNOOP, "x"]), recordings),
    st.builds(m.ArchiveRecording, recordings, st.none()),
    st.builds(m.HangupChannel, channels),
)

# Events without their time: the test adds a clock that only moves forward.
event_makers = st.one_of(
    st.builds(
        lambda p, e: ("entered", p, e),
        st.one_of(st.none(), plans),
        st.sampled_from([None, None, "RoutingError()"]),
    ),
    st.just(("answered",)),
    st.builds(
        lambda pb, f: ("prompt", pb, f), st.sampled_from([NOTICE_PB, CLOSED_PB, "x"]), st.booleans()
    ),
    st.builds(
        lambda c, s: ("dial", c, s),
        channels,
        st.sampled_from(
            [
                "RINGING",
                "PROGRESS",
                "ANSWER",
                "BUSY",
                "NOANSWER",
                "CANCEL",
                "CHANUNAVAIL",
                "CONGESTION",
            ]
        ),
    ),
    st.builds(lambda c: ("agent_answered", c), channels),
    st.builds(lambda c, k, cut: ("agent_gone", c, k, cut), channels,
              st.sampled_from([16, 17, 19, 21, None]), st.booleans()),
    st.builds(lambda k, cut: ("caller_gone", k, cut), st.sampled_from([16, None]), st.booleans()),
    st.builds(lambda c: ("snoop_ready", c), st.sampled_from([SNOOP, SNOOP, "x"])),
    st.builds(lambda c: ("snoop_gone", c), st.sampled_from([SNOOP, "x"])),
    st.builds(lambda r: ("rec_started", r), recordings),
    st.builds(lambda r: ("rec_finished", r), recordings),
    st.builds(lambda r: ("rec_failed", r), recordings),
    st.builds(lambda r, ok: ("rec_archived", r, ok), recordings, st.booleans()),
    st.builds(lambda t: ("timer", t), st.sampled_from(TIMER_NAMES)),
    st.builds(lambda r: ("end", r), st.sampled_from(["interrupted", "completed"])),
    st.builds(lambda c, nf, na: ("failed", c, nf, na), commands_that_fail, st.booleans(),
              st.booleans()),
)


def make_event(spec: tuple[object, ...], at: datetime) -> m.FlowEvent:
    kind, *args = spec
    factories = {
        "entered": lambda p, e: m.CallerEntered(at, "100", "+358401", "x", p, e),
        "answered": lambda: m.Answered(at),
        "prompt": lambda pb, f: m.PromptFinished(at, pb, f),
        "dial": lambda c, s: m.AgentDialStatus(at, c, s),
        "agent_answered": lambda c: m.AgentAnswered(at, c),
        "agent_gone": lambda c, k, cut=False: m.AgentGone(at, c, k, cut),
        "caller_gone": lambda k, cut=False: m.CallerGone(at, k, cut),
        "snoop_ready": lambda c: m.SnoopReady(at, c),
        "snoop_gone": lambda c: m.SnoopGone(at, c),
        "rec_started": lambda r: m.RecordingStarted(at, r),
        "rec_finished": lambda r: m.RecordingFinished(at, r),
        "rec_failed": lambda r: m.RecordingFailed(at, r, "x"),
        "rec_archived": lambda r, ok: m.RecordingArchived(at, r, ok),
        "timer": lambda t: m.TimerFired(at, t),
        "end": lambda r: m.EndCall(at, r),
        "failed": lambda c, nf, na=False: m.CommandFailed(
            at, c, "boom", not_found=nf, unanswered=na
        ),
    }
    return factories[str(kind)](*args)  # type: ignore[no-any-return]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=plans,
    script_len=st.integers(0, 8),
    winner=st.integers(1, 3),
    noise=st.lists(st.tuples(st.integers(0, 8), event_makers), max_size=30),
    start_properly=st.sampled_from([True, True, True, False]),
)
def test_any_event_sequence_ends_with_every_leg_closed(
    first: m.ServicePlan,
    script_len: int,
    winner: int,
    noise: list[tuple[int, tuple[object, ...]]],
    start_properly: bool,
) -> None:
    # A plausible call (so that deep phases are reached) with random events mixed in.
    script: list[tuple[object, ...]] = [
        ("answered",),
        ("prompt", NOTICE_PB, False),
        ("dial", leg_id(1), "RINGING"),
        ("agent_answered", leg_id(winner)),
        ("rec_started", REC),
        ("caller_gone", 16) if winner % 2 else ("agent_gone", leg_id(winner), 16),
        ("rec_finished", REC),
        ("rec_archived", REC, True),
    ][:script_len]
    specs: list[tuple[object, ...]] = []
    for position, spec in enumerate(script):
        specs.extend(extra for where, extra in noise if where == position)
        specs.append(spec)
    specs.extend(extra for where, extra in noise if where >= len(script))
    state = m.initial_state(CALL_ID, CALLER_CHANNEL)
    now = T0
    created: set[str] = set()
    closed: set[str] = set()
    hangups: dict[str, int] = {}
    timers: set[str] = set()
    answered: set[str] = set()
    winners: set[str] = set()
    bridges: set[str] = set()
    notice_completed = False
    recorded = False
    phases: set[m.Phase] = set()

    def feed(event: m.FlowEvent) -> None:
        nonlocal state, notice_completed, recorded
        state, out = m.transition(state, event)
        if isinstance(event, m.AgentGone):
            closed.add(event.channel_id)
        if isinstance(event, m.AgentAnswered):
            answered.add(event.channel_id)
        if isinstance(event, m.CommandFailed) and isinstance(event.command, m.CreateBridge):
            bridges.discard(event.command.bridge_id)  # may be made again
        for cmd in out:
            if isinstance(cmd, m.DialAgent):
                assert cmd.channel_id not in created, "channel ids are never reused"
                created.add(cmd.channel_id)
            elif isinstance(cmd, m.HangupChannel):
                hangups[cmd.channel_id] = hangups.get(cmd.channel_id, 0) + 1
                assert hangups[cmd.channel_id] == 1, f"{cmd.channel_id} hung up twice"
                closed.add(cmd.channel_id)
            elif isinstance(cmd, m.StartTimer):
                timers.add(cmd.name)
            elif isinstance(cmd, m.CancelTimer):
                assert cmd.name in timers, f"cancel of a timer never started: {cmd.name}"
                timers.discard(cmd.name)
            elif isinstance(cmd, m.RecordChannel):
                assert state.winner is not None, "recording without an agent"
                assert state.notice_completed, "recording without the notice heard"
                recorded = True
            elif isinstance(cmd, m.CreateBridge):
                assert cmd.bridge_id not in bridges, "one bridge per call, made once"
                bridges.add(cmd.bridge_id)
            elif isinstance(cmd, m.AddToBridge) and cmd.channel_id != CALLER_CHANNEL:
                assert cmd.channel_id == state.winner, "only the winning agent is bridged"
                winners.add(cmd.channel_id)
        if isinstance(event, m.TimerFired):
            timers.discard(event.name)
        assert state.timers == frozenset(timers)
        assert len(winners) <= 1, "two agents connected"
        phases.add(state.phase)

    def tick() -> datetime:
        nonlocal now
        now += timedelta(milliseconds=50)
        return now

    if start_properly:
        feed(m.CallerEntered(tick(), "100", "+358401", "x", first))
    for spec in specs:
        feed(make_event(spec, tick()))

    for phase in (m.Phase.CONVERSATION, m.Phase.CLOSING, m.Phase.CONNECTING):
        if phase in phases:
            event(f"reached {phase.value}")

    # Drive the call to its end the way the world would: the caller leaves, timers fire,
    # recordings end and get archived.
    for _ in range(20):
        if state.done:
            break
        feed(m.CallerGone(tick(), 16))
        for name in sorted(state.timers):
            feed(m.TimerFired(tick(), name))
        if state.recording_name and state.recording in (m.RecState.REQUESTED, m.RecState.STARTED):
            feed(m.RecordingFinished(tick(), state.recording_name))
        if state.recording_name and state.recording is m.RecState.ARCHIVING:
            feed(m.RecordingArchived(tick(), state.recording_name, True))
    assert state.done, state
    assert created <= closed, f"agent legs left open: {created - closed}"
    assert not list(m.live_channels(state))
    assert not timers, f"timers left running: {timers}"
    assert state.recording not in (m.RecState.REQUESTED, m.RecState.STARTED, m.RecState.ARCHIVING)
    if state.started_at is not None:
        assert state.end_reason in {
            "completed",
            "no_agent",
            "abandoned",
            "unknown_service",
            "closed",
            "failed",
            "interrupted",
        }
    if recorded:
        assert state.answered_at is not None
