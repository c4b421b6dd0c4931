"""The per-call state machine: pure transitions `(state, event) -> (state, commands)`.

No I/O, no clock, no randomness: time arrives in events, and every id the call needs (agent
channels, bridge, playbacks, recording) is derived from the call id and an attempt counter, so a
transition is a plain function of its inputs and a restarted service can recompute the ids.

Flow (issue 3): answer, play the recording notice, ring agents per strategy while the caller hears
ringing (or music on hold), and on an answer: record a snoop channel on the caller (what the
caller says and hears: the conversation's mix), caller into the bridge, and only when the
recording has started add the agent, so that the first word is captured. Nobody answers within
`max_wait`: "please call later", `no_agent`, never recorded.

The snoop is asked for as the notice starts and waits, unrecorded, until an agent answers: its
arrival in our application was the slowest step between an agent's answer and the recording
(p90 1 s with the machine saturated), and the agent waits in silence for that step. Nothing
is written before the answer: the recording itself is asked for only then. The bridge, too, is
made when the ringing starts. Under load each request to Asterisk can take a few hundred ms, so
the fewer of them lie between an answer and the agent joining, the shorter the agent's silence.

Why a snoop and not the bridge's own recorder: a bridge recorder is a third party in the bridge,
which makes Asterisk mix the bridge in software for the whole call; a snoop is an audio hook on
the caller's channel, as MixMonitor is, and the two-party bridge stays a plain one (the benchmark
measured about a third more Asterisk CPU per call with the bridge recorder).

Rounds: when every agent of the service has been tried (one at a time, or all at once for
ring_all) and `max_wait` is not over, a new round starts after `round_pause` seconds, in the same
agent order; rounds repeat until an agent answers or `max_wait` ends the wait.

Privacy rule: a call whose notice could not be played (missing prompt, failed playback) still
reaches an agent, but is not recorded: the caller was not told of the recording.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from callrec.routing.model import Strategy

# Dial statuses (app_dial's DIALSTATUS values) that end one agent's attempt.
FAILED_DIAL_STATUSES = frozenset(
    {
        "BUSY",
        "CONGESTION",
        "CHANUNAVAIL",
        "NOANSWER",
        "CANCEL",
        "DONTCALL",
        "TORTURE",
        "INVALIDARGS",
    }
)
# Extra seconds on Asterisk's own dial timeout: our ring timer decides, Asterisk's is a backstop.
DIAL_TIMEOUT_SLACK = 5
# How long to wait for RecordingStarted before adding the agent anyway.
RECORD_START_GUARD = 5.0
# How long to wait for RecordingFinished after both parties left before fetching the file anyway.
FINISH_GUARD = 30.0
# Extra seconds over a prompt's duration before a missing PlaybackFinished is assumed.
PROMPT_GUARD_SLACK = 30.0
PROMPT_GUARD_UNKNOWN = 120.0

_RECORDING_PREFIX = "callrec-"


# ---------------------------------------------------------------------------------------------
# Inputs describing the service (built by the manager from the routing snapshot and prompts)


class HoldSound(enum.StrEnum):
    RING = "ring"
    MOH = "moh"


@dataclass(frozen=True)
class AgentTarget:
    id: str
    endpoint: str  # e.g. "PJSIP/agent1"
    name: str  # stored with the call


@dataclass(frozen=True)
class PromptChoice:
    media: str  # what to pass to AriClient.play
    label: str  # the exact audio version stored with the call, e.g. "notice/fi/3f2a..."
    language: str
    duration_ms: int | None = None


@dataclass(frozen=True)
class ServicePlan:
    """What one call needs to know about its service; a snapshot taken at call start."""

    number: str
    name: str
    language: str
    strategy: Strategy
    agents: tuple[AgentTarget, ...]  # in the order to ring them (the manager orders them)
    ring_timeout: float  # seconds per agent (per round for ring_all)
    max_wait: float  # seconds from the end of the notice until "please call later"
    notice: PromptChoice | None  # None: no notice available -> the call is not recorded
    closed_prompt: PromptChoice | None
    is_open: bool = True  # False outside opening hours: closed prompt, end_reason 'closed'
    hold: HoldSound = HoldSound.RING
    round_pause: float = 2.0


# ---------------------------------------------------------------------------------------------
# State


class Phase(enum.StrEnum):
    NEW = "new"
    ANSWERING = "answering"
    NOTICE = "notice"
    RINGING = "ringing"
    CONNECTING = "connecting"
    CONVERSATION = "conversation"
    CLOSING = "closing"
    FINISHING = "finishing"
    DONE = "done"


class RecState(enum.StrEnum):
    NONE = "none"  # nothing requested yet
    DISABLED = "disabled"  # the notice was not played: this call must not be recorded
    SNOOPING = "snooping"  # the snoop to record is asked for; not yet in our application
    REQUESTED = "requested"  # the recording of the snoop is asked for
    STARTED = "started"
    ARCHIVING = "archiving"  # finished in Asterisk; ArchiveRecording issued
    ARCHIVED = "archived"
    FAILED = "failed"  # Asterisk could not record: no recording exists
    LOST = "lost"  # archiving found nothing or failed; reconciliation may still find it


_REC_SETTLED = frozenset(
    {RecState.NONE, RecState.DISABLED, RecState.ARCHIVED, RecState.FAILED, RecState.LOST}
)
_REC_RUNNING = frozenset({RecState.REQUESTED, RecState.STARTED})
_REC_LIVE = _REC_RUNNING | {RecState.SNOOPING}


class LegStatus(enum.StrEnum):
    DIALLING = "dialling"
    ANSWERED = "answered"  # the winning leg, in the call
    HUNG_UP = "hung_up"  # we asked Asterisk to hang it up
    GONE = "gone"  # Asterisk reported it gone


@dataclass(frozen=True)
class Leg:
    channel_id: str
    agent: AgentTarget
    attempt: int
    round: int
    status: LegStatus = LegStatus.DIALLING

    @property
    def live(self) -> bool:
        return self.status in (LegStatus.DIALLING, LegStatus.ANSWERED)


@dataclass(frozen=True)
class CallState:
    call_id: uuid.UUID
    caller_channel: str
    phase: Phase = Phase.NEW
    plan: ServicePlan | None = None
    started_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    abandoned_phase: str | None = None
    notice_completed: bool = False
    caller_gone: bool = False  # Asterisk told us the caller left
    caller_hung_up: bool = False  # we hung the caller up
    hold_on: bool = False
    round: int = 0
    next_agent: int = 0  # sequential strategies: index of the next agent this round
    attempts: int = 0
    legs: tuple[Leg, ...] = ()
    winner: str | None = None  # channel id of the agent in the call
    bridge_id: str | None = None
    snoop_channel: str | None = None  # the snoop on the caller, once requested
    snoop_ready: bool = False  # the snoop is in our application (it can be recorded)
    # a request for the snoop went unanswered: Asterisk may make it late, under the same id
    snoop_unconfirmed: bool = False
    # channels whose add to the call's bridge was asked for again after an unanswered one
    readded: frozenset[str] = frozenset()
    # bridges whose create went unanswered and that the call no longer counts on: Asterisk
    # may have made them late, so the call's end destroys them too
    stray_bridges: frozenset[str] = frozenset()
    recording: RecState = RecState.NONE
    recording_name: str | None = None
    timers: frozenset[str] = frozenset()
    row: Mapping[str, Any] = field(default_factory=dict)  # every column persisted so far

    def leg(self, channel_id: str) -> Leg | None:
        for leg in self.legs:
            if leg.channel_id == channel_id:
                return leg
        return None

    @property
    def winner_leg(self) -> Leg | None:
        return self.leg(self.winner) if self.winner is not None else None

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE


_STATE_FIELDS = frozenset(f.name for f in fields(CallState))


def _changed(state: CallState, changes: Mapping[str, Any]) -> CallState:
    """`dataclasses.replace` for the call state, which has no `__post_init__` and no
    `init=False` fields: a copy of its attributes with `changes` applied. Transitions set
    the state a few dozen times per call, and `replace` (which goes through every field and
    `__init__`) was the largest single cost of a transition."""
    unknown = changes.keys() - _STATE_FIELDS
    if unknown:
        raise TypeError(f"not a CallState field: {', '.join(sorted(unknown))}")
    new = object.__new__(CallState)
    # frozen only guards __setattr__; a new object's __dict__ is ours to fill
    new.__dict__.update(state.__dict__)
    new.__dict__.update(changes)
    return new


def initial_state(call_id: uuid.UUID, caller_channel: str) -> CallState:
    return CallState(call_id=call_id, caller_channel=caller_channel)


def resumed_conversation(
    *,
    call_id: uuid.UUID,
    caller_channel: str,
    agent: AgentTarget,
    agent_channel: str,
    bridge_id: str | None,
    recording_name: str | None,
    started_at: datetime,
    answered_at: datetime | None,
) -> CallState:
    """A call found in conversation after a restart: carry on from there."""
    leg = Leg(agent_channel, agent, attempt=0, round=0, status=LegStatus.ANSWERED)
    return CallState(
        call_id=call_id,
        caller_channel=caller_channel,
        phase=Phase.CONVERSATION,
        started_at=started_at,
        answered_at=answered_at,
        notice_completed=True,
        legs=(leg,),
        winner=agent_channel,
        bridge_id=bridge_id,
        snoop_channel=snoop_id_for(call_id) if recording_name else None,
        recording=RecState.STARTED if recording_name else RecState.NONE,
        recording_name=recording_name,
    )


# ---------------------------------------------------------------------------------------------
# Deterministic ids


def agent_channel_id(call_id: uuid.UUID, attempt: int) -> str:
    return str(uuid.uuid5(call_id, f"agent-{attempt}"))


def bridge_id_for(call_id: uuid.UUID) -> str:
    return str(uuid.uuid5(call_id, "bridge"))


def snoop_id_for(call_id: uuid.UUID) -> str:
    return str(uuid.uuid5(call_id, "snoop"))


def playback_id_for(call_id: uuid.UUID, what: str) -> str:
    return str(uuid.uuid5(call_id, f"playback-{what}"))


def recording_name_for(call_id: uuid.UUID) -> str:
    """Only our uuid: never any caller-controlled text."""
    return f"{_RECORDING_PREFIX}{call_id}"


def call_id_from_recording(name: str) -> uuid.UUID | None:
    if not name.startswith(_RECORDING_PREFIX):
        return None
    try:
        call_id = uuid.UUID(name[len(_RECORDING_PREFIX) :])
    except ValueError:
        return None
    return call_id if recording_name_for(call_id) == name else None


# ---------------------------------------------------------------------------------------------
# Events (translated from ARI by the manager)


@dataclass(frozen=True)
class FlowEvent:
    at: datetime


@dataclass(frozen=True)
class CallerEntered(FlowEvent):
    service_number: str
    caller_number: str
    caller_name: str
    plan: ServicePlan | None  # None: the number is not a service
    error: str | None = None  # the plan could not be made (a bug or broken configuration)


@dataclass(frozen=True)
class Answered(FlowEvent):
    """The caller's channel was answered."""


@dataclass(frozen=True)
class PromptFinished(FlowEvent):
    playback_id: str
    failed: bool = False


@dataclass(frozen=True)
class AgentDialStatus(FlowEvent):
    channel_id: str
    status: str


@dataclass(frozen=True)
class AgentAnswered(FlowEvent):
    channel_id: str


@dataclass(frozen=True)
class AgentGone(FlowEvent):
    """`cut`: Asterisk ended the channel (shutting down, or restarted), not the agent."""

    channel_id: str
    cause: int | None = None
    cut: bool = False


@dataclass(frozen=True)
class CallerGone(FlowEvent):
    """`cut`: Asterisk ended the channel (shutting down, or restarted), not the caller."""

    cause: int | None = None
    cut: bool = False


@dataclass(frozen=True)
class SnoopReady(FlowEvent):
    """The snoop channel on the caller entered our application: it can be recorded now."""

    channel_id: str


@dataclass(frozen=True)
class SnoopGone(FlowEvent):
    """The snoop channel left our application (with the caller, or before it was recorded)."""

    channel_id: str


@dataclass(frozen=True)
class RecordingStarted(FlowEvent):
    name: str


@dataclass(frozen=True)
class RecordingFinished(FlowEvent):
    name: str


@dataclass(frozen=True)
class RecordingFailed(FlowEvent):
    name: str
    cause: str | None = None


@dataclass(frozen=True)
class RecordingArchived(FlowEvent):
    name: str
    ok: bool  # False: Asterisk had no such recording, or archiving failed


@dataclass(frozen=True)
class TimerFired(FlowEvent):
    name: str


@dataclass(frozen=True)
class EndCall(FlowEvent):
    """End the call now (reconciliation, shutdown): hang up everyone, keep the recording."""

    reason: str


@dataclass(frozen=True)
class CommandFailed(FlowEvent):
    command: Command
    error: str
    not_found: bool = False  # the channel/bridge no longer exists in Asterisk
    unanswered: bool = False  # no answer in time: Asterisk may have done it all the same


# ---------------------------------------------------------------------------------------------
# Commands (carried out by the manager, in order)


@dataclass(frozen=True)
class Command:
    pass


@dataclass(frozen=True)
class Answer(Command):
    channel_id: str


@dataclass(frozen=True)
class Play(Command):
    channel_id: str
    media: str
    playback_id: str


@dataclass(frozen=True)
class Ring(Command):
    channel_id: str


@dataclass(frozen=True)
class StopRing(Command):
    channel_id: str


@dataclass(frozen=True)
class StartMoh(Command):
    channel_id: str


@dataclass(frozen=True)
class StopMoh(Command):
    channel_id: str


@dataclass(frozen=True)
class DialAgent(Command):
    """Make an agent's channel and ring it at once (an ARI originate): the channel enters
    our application only when the agent answers."""

    channel_id: str
    endpoint: str
    agent_id: str
    caller_channel_id: str  # Asterisk copies this channel's caller id to the agent's phone
    timeout: int


@dataclass(frozen=True)
class HangupChannel(Command):
    channel_id: str
    reason: str = "normal"


@dataclass(frozen=True)
class CreateBridge(Command):
    bridge_id: str  # a mixing bridge


@dataclass(frozen=True)
class AddToBridge(Command):
    bridge_id: str
    channel_id: str


@dataclass(frozen=True)
class DestroyBridge(Command):
    bridge_id: str


@dataclass(frozen=True)
class SnoopChannel(Command):
    """A snoop on `channel_id` hearing both directions, entering our application."""

    channel_id: str
    snoop_id: str


@dataclass(frozen=True)
class RecordChannel(Command):
    channel_id: str
    name: str


@dataclass(frozen=True)
class StopRecording(Command):
    name: str


@dataclass(frozen=True)
class ArchiveRecording(Command):
    name: str
    started_at: datetime | None


@dataclass(frozen=True)
class Persist(Command):
    """Columns of the `calls` row to write (merged per transition, written first).

    `durable`: commit only once the write is on disk. A call's end (the whole row again, so
    nothing written before it can be missing) is durable. The earlier writes commit without
    waiting for the disk: PostgreSQL has them, so they survive a crash of this process, and
    under load the call flow must not wait behind other processes' disk flushes (at 24
    calls/s the first write took up to 17 s). The first one is still waited for (the
    manager's rule): the row exists before the call is answered."""

    fields: Mapping[str, Any]
    durable: bool = True


@dataclass(frozen=True)
class StartTimer(Command):
    name: str
    seconds: float


@dataclass(frozen=True)
class CancelTimer(Command):
    name: str


@dataclass(frozen=True)
class MarkAgent(Command):
    """Tell the agent tracker an agent took (busy) or left (not busy) a call."""

    agent_id: str
    busy: bool
    at: datetime


@dataclass(frozen=True)
class Log(Command):
    level: str  # "debug", "info", "warning", "error"
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Timer names

MAX_WAIT = "max_wait"
ROUND_PAUSE = "round_pause"
NOTICE_GUARD = "notice_guard"
CLOSING_GUARD = "closing_guard"
RECORD_GUARD = "record_guard"
FINISH_GUARD_TIMER = "finish_guard"


def _leg_timer(attempt: int) -> str:
    return f"ring-{attempt}"


def _round_timer(round_no: int) -> str:
    return f"ring-round-{round_no}"


# ---------------------------------------------------------------------------------------------
# The transition function


def transition(state: CallState, event: FlowEvent) -> tuple[CallState, list[Command]]:
    """The next state and the commands to carry out, in order. Never raises for any event."""
    step = _Step(state, event.at)
    handler = _HANDLERS.get(type(event))
    if handler is None:
        step.log("warning", "unhandled flow event", event=type(event).__name__)
    else:
        handler(step, event)
    return step.finish()


class _Step:
    """Accumulates one transition: the evolving state and the commands to emit."""

    def __init__(self, state: CallState, at: datetime) -> None:
        self.s = state
        self.at = at
        self.before = state.phase
        self.out: list[Command] = []
        self.row: dict[str, Any] = {}

    # -- bookkeeping ---------------------------------------------------------------------------
    def set(self, **changes: Any) -> None:
        self.s = _changed(self.s, changes)

    def emit(self, *commands: Command) -> None:
        self.out.extend(commands)

    def persist(self, **fields: Any) -> None:
        self.row.update(fields)

    def log(self, level: str, message: str, **fields: Any) -> None:
        self.out.append(Log(level, message, fields))

    def start_timer(self, name: str, seconds: float) -> None:
        self.set(timers=self.s.timers | {name})
        self.emit(StartTimer(name, max(0.0, seconds)))

    def cancel_timer(self, name: str) -> None:
        if name in self.s.timers:
            self.set(timers=self.s.timers - {name})
            self.emit(CancelTimer(name))

    def update_leg(self, channel_id: str, status: LegStatus) -> None:
        self.set(
            legs=tuple(
                replace(leg, status=status) if leg.channel_id == channel_id else leg
                for leg in self.s.legs
            )
        )

    def hangup_leg(self, leg: Leg, reason: str) -> None:
        if leg.live:
            self.update_leg(leg.channel_id, LegStatus.HUNG_UP)
            self.emit(HangupChannel(leg.channel_id, reason))

    def hangup_caller(self, reason: str = "normal", *, even_if_gone: bool = False) -> None:
        """`even_if_gone`: for a caller only believed gone (a "not found" that may be the
        bridge's)."""
        if not self.s.caller_hung_up and (even_if_gone or not self.s.caller_gone):
            self.set(caller_hung_up=True)
            self.emit(HangupChannel(self.s.caller_channel, reason))

    def stop_hold(self) -> None:
        if self.s.hold_on:
            self.set(hold_on=False)
            if not self.s.caller_gone:
                plan = self.s.plan
                if plan is not None and plan.hold is HoldSound.MOH:
                    self.emit(StopMoh(self.s.caller_channel))
                else:
                    self.emit(StopRing(self.s.caller_channel))

    def finish(self) -> tuple[CallState, list[Command]]:
        if self.s.phase is not self.before:
            if self.s.started_at is not None:  # else no row exists to update
                self.row.setdefault("state", self.s.phase.value)
            self.out.insert(
                0, Log("debug", "phase", {"from": self.before.value, "to": self.s.phase.value})
            )
        if self.row:
            self.s = _changed(self.s, {"row": {**self.s.row, **self.row}})
            if "ended_at" in self.row:
                self.out.insert(0, Persist(dict(self.s.row), durable=True))
            else:
                self.out.insert(0, Persist(dict(self.row), durable=False))
        return self.s, self.out


# -- call start -----------------------------------------------------------------------------


def _on_caller_entered(step: _Step, ev: CallerEntered) -> None:
    if step.s.phase is not Phase.NEW:
        step.log("debug", "duplicate call start ignored")
        return
    step.set(started_at=ev.at, plan=ev.plan)
    step.persist(
        caller_number=ev.caller_number,
        caller_name=ev.caller_name,
        service_number=ev.service_number,
        started_at=ev.at,
        caller_channel_id=step.s.caller_channel,
    )
    if ev.error is not None:
        step.log("error", "call refused: no plan could be made", error=ev.error)
        step.hangup_caller("normal")
        _end(step, "failed")
        return
    if ev.plan is None:
        step.log("warning", "call to a number that is no service", service_number=ev.service_number)
        step.hangup_caller("unallocated")
        _end(step, "unknown_service")
        return
    step.persist(service_name=ev.plan.name, language=ev.plan.language)
    step.set(phase=Phase.ANSWERING)
    step.emit(Answer(step.s.caller_channel))


def _on_answered(step: _Step, ev: Answered) -> None:
    plan = step.s.plan
    if step.s.phase is not Phase.ANSWERING or plan is None:
        step.log("debug", "answer event ignored", phase=step.s.phase.value)
        return
    if not plan.is_open:
        step.set(end_reason="closed")
        step.persist(end_reason="closed")
        _play_closing(step)
        return
    if plan.notice is None:
        step.log("error", "no recording notice available: the call will not be recorded")
        step.set(recording=RecState.DISABLED)
        _start_waiting(step)
        return
    pid = playback_id_for(step.s.call_id, "notice")
    step.emit(Play(step.s.caller_channel, plan.notice.media, pid))
    _request_snoop(step)
    step.persist(
        notice_started_at=ev.at,
        notice_prompt=plan.notice.label,
        notice_language=plan.notice.language,
    )
    step.set(phase=Phase.NOTICE)
    step.start_timer(NOTICE_GUARD, _prompt_guard(plan.notice))


def _prompt_guard(prompt: PromptChoice) -> float:
    if prompt.duration_ms is None:
        return PROMPT_GUARD_UNKNOWN
    return prompt.duration_ms / 1000 + PROMPT_GUARD_SLACK


def _on_prompt_finished(step: _Step, ev: PromptFinished) -> None:
    s = step.s
    if s.phase is Phase.NOTICE and ev.playback_id == playback_id_for(s.call_id, "notice"):
        step.cancel_timer(NOTICE_GUARD)
        _notice_over(step, completed=not ev.failed)
    elif s.phase is Phase.CLOSING and ev.playback_id == playback_id_for(s.call_id, "closed"):
        step.cancel_timer(CLOSING_GUARD)
        step.hangup_caller()
        _end(step, s.end_reason or "no_agent")
    else:
        step.log("debug", "playback event ignored", playback_id=ev.playback_id)


def _notice_over(step: _Step, *, completed: bool) -> None:
    step.set(notice_completed=completed)
    step.persist(notice_completed=completed)
    if not completed:
        step.log("warning", "the recording notice did not play: the call will not be recorded")
        step.set(recording=RecState.DISABLED)
        _drop_snoop(step)
    _start_waiting(step)


# -- ringing --------------------------------------------------------------------------------


def _start_waiting(step: _Step) -> None:
    plan = step.s.plan
    assert plan is not None
    if not plan.agents:
        step.log("warning", "service has no agents", service_number=plan.number)
        _go_closing(step, "no_agent")
        return
    step.set(phase=Phase.RINGING)
    step.start_timer(MAX_WAIT, plan.max_wait)
    step.set(hold_on=True)
    if plan.hold is HoldSound.MOH:
        step.emit(StartMoh(step.s.caller_channel))
    else:
        step.emit(Ring(step.s.caller_channel))
    # The (empty) bridge is made now, not when an agent answers: one request less while the
    # agent waits to be connected. Before the agents are dialled, so that a failure to make
    # it is heard before any answer.
    _create_bridge(step)
    _start_round(step)


def _create_bridge(step: _Step) -> None:
    bridge = bridge_id_for(step.s.call_id)
    step.set(bridge_id=bridge)
    step.persist(bridge_id=bridge)
    step.emit(CreateBridge(bridge))


def _start_round(step: _Step) -> None:
    plan = step.s.plan
    assert plan is not None
    step.set(round=step.s.round + 1, next_agent=0)
    if plan.strategy is Strategy.RING_ALL:
        for agent in plan.agents:
            _dial(step, agent)
        step.start_timer(_round_timer(step.s.round), plan.ring_timeout)
    else:
        _dial_next(step)


def _dial(step: _Step, agent: AgentTarget) -> Leg:
    plan = step.s.plan
    assert plan is not None
    attempt = step.s.attempts + 1
    leg = Leg(agent_channel_id(step.s.call_id, attempt), agent, attempt, step.s.round)
    step.set(attempts=attempt, legs=(*step.s.legs, leg))
    # One request: a channel made in our application and then dialled cost three (make,
    # put in a holding bridge, dial), each waiting for the channel's thread in Asterisk, and
    # the dial waited longest, in the bridge (at 16 calls/s, alone on this machine: callers'
    # wait for the agent p99 6.5 s before, 4.2 s after; Asterisk's CPU per call 143 ->
    # 129 ms). Ringing outside our application, the leg needs no bridge of its own either.
    step.emit(
        DialAgent(
            leg.channel_id,
            agent.endpoint,
            agent.id,
            step.s.caller_channel,
            math.ceil(plan.ring_timeout) + DIAL_TIMEOUT_SLACK,
        ),
    )
    return leg


def _dial_next(step: _Step) -> None:
    plan = step.s.plan
    assert plan is not None
    if step.s.next_agent >= len(plan.agents):
        _end_round(step)
        return
    agent = plan.agents[step.s.next_agent]
    step.set(next_agent=step.s.next_agent + 1)
    leg = _dial(step, agent)
    step.start_timer(_leg_timer(leg.attempt), plan.ring_timeout)


def _end_round(step: _Step) -> None:
    plan = step.s.plan
    assert plan is not None
    step.log("info", "every agent tried; next round after a pause", round=step.s.round)
    step.start_timer(ROUND_PAUSE, plan.round_pause)


def _leg_failed(step: _Step, leg: Leg, why: str) -> None:
    """An agent leg of the current ringing stopped without answering: move on."""
    step.log("info", "agent not reached", agent_id=leg.agent.id, why=why)
    if step.s.phase is not Phase.RINGING or leg.round != step.s.round:
        return
    plan = step.s.plan
    assert plan is not None
    if plan.strategy is Strategy.RING_ALL:
        if not any(
            other.round == step.s.round and other.status is LegStatus.DIALLING
            for other in step.s.legs
        ):
            step.cancel_timer(_round_timer(step.s.round))
            _end_round(step)
    elif leg.attempt == step.s.attempts:  # the agent currently being rung
        step.cancel_timer(_leg_timer(leg.attempt))
        _dial_next(step)


def _go_closing(step: _Step, reason: str) -> None:
    """Give up waiting: stop ringing everyone, tell the caller to call later."""
    for leg in step.s.legs:
        step.hangup_leg(leg, "normal")
    for name in sorted(step.s.timers):
        if name.startswith("ring-") or name in (ROUND_PAUSE, MAX_WAIT):
            step.cancel_timer(name)
    step.stop_hold()
    _drop_snoop(step)
    step.set(end_reason=reason)
    step.persist(end_reason=reason)
    _play_closing(step)


def _play_closing(step: _Step) -> None:
    plan = step.s.plan
    assert plan is not None
    if plan.closed_prompt is None or step.s.caller_gone:
        step.hangup_caller()
        _end(step, step.s.end_reason or "no_agent")
        return
    step.set(phase=Phase.CLOSING)
    step.emit(
        Play(
            step.s.caller_channel,
            plan.closed_prompt.media,
            playback_id_for(step.s.call_id, "closed"),
        )
    )
    step.start_timer(CLOSING_GUARD, _prompt_guard(plan.closed_prompt))


def _on_dial_status(step: _Step, ev: AgentDialStatus) -> None:
    leg = step.s.leg(ev.channel_id)
    if leg is None:
        step.log("debug", "dial status for an unknown channel", channel_id=ev.channel_id)
        return
    status = ev.status.upper()
    if status == "ANSWER":
        _on_agent_answered(step, AgentAnswered(ev.at, ev.channel_id))
    elif status in FAILED_DIAL_STATUSES and leg.status is LegStatus.DIALLING:
        step.hangup_leg(leg, "normal")
        _leg_failed(step, leg, status.lower())


def _on_agent_answered(step: _Step, ev: AgentAnswered) -> None:
    s = step.s
    leg = s.leg(ev.channel_id)
    if leg is None:
        step.log("warning", "answer from an unknown channel ignored", channel_id=ev.channel_id)
        return
    if leg.channel_id == s.winner:
        return  # the same answer reported twice (Dial's ANSWER and StasisStart)
    if s.phase is Phase.RINGING and s.winner is None and leg.status is LegStatus.DIALLING:
        _connect(step, leg)
        return
    if leg.live:
        reason = "answered_elsewhere" if s.winner is not None else "normal"
        step.log("info", "late answer hung up", agent_id=leg.agent.id, reason=reason)
        step.hangup_leg(leg, reason)
    else:
        step.log("debug", "answer on a leg already hung up", agent_id=leg.agent.id)


def _connect(step: _Step, leg: Leg) -> None:
    s = step.s
    for name in sorted(s.timers):
        if name.startswith("ring-") or name in (ROUND_PAUSE, MAX_WAIT):
            step.cancel_timer(name)
    step.update_leg(leg.channel_id, LegStatus.ANSWERED)
    step.set(winner=leg.channel_id, answered_at=step.at)
    step.persist(
        answered_at=step.at,
        agent_id=leg.agent.id,
        agent_name=leg.agent.name,
        agent_endpoint=leg.agent.endpoint,
        agent_channel_id=leg.channel_id,
    )
    recorded = s.recording is not RecState.DISABLED
    if recorded:
        name = recording_name_for(s.call_id)
        step.set(recording_name=name, phase=Phase.CONNECTING)
        step.persist(recording_name=name)
        if s.snoop_ready and s.snoop_channel is not None:
            # the usual case: the snoop came during the notice; recording it comes first
            step.set(recording=RecState.REQUESTED)
            step.emit(RecordChannel(s.snoop_channel, name))
        else:
            # still on its way (recorded when it arrives), or lost: asked for again first,
            # so that its arrival travels back while the caller is being bridged
            _request_snoop(step, again=s.snoop_unconfirmed)
            step.set(recording=RecState.SNOOPING)
    step.stop_hold()
    if step.s.bridge_id is None:  # the one made while ringing could not be made
        _create_bridge(step)
    bridge = step.s.bridge_id
    assert bridge is not None
    step.emit(AddToBridge(bridge, s.caller_channel), MarkAgent(leg.agent.id, True, step.at))
    for other in step.s.legs:
        if other.channel_id != leg.channel_id:
            step.hangup_leg(other, "answered_elsewhere")
    if recorded:
        step.start_timer(RECORD_GUARD, RECORD_START_GUARD)
    else:
        step.emit(AddToBridge(bridge, leg.channel_id))
        step.set(phase=Phase.CONVERSATION)


def _add_agent(step: _Step) -> None:
    leg = step.s.winner_leg
    assert leg is not None and step.s.bridge_id is not None
    step.cancel_timer(RECORD_GUARD)
    step.emit(AddToBridge(step.s.bridge_id, leg.channel_id))
    step.set(phase=Phase.CONVERSATION)


def _on_agent_gone(step: _Step, ev: AgentGone) -> None:
    s = step.s
    leg = s.leg(ev.channel_id)
    if leg is None:
        step.log("debug", "hangup of an unknown channel", channel_id=ev.channel_id)
        return
    if leg.status is LegStatus.GONE:
        return
    was_dialling = leg.status is LegStatus.DIALLING
    step.update_leg(leg.channel_id, LegStatus.GONE)
    if leg.channel_id == s.winner:
        if s.phase in (Phase.CONNECTING, Phase.CONVERSATION):
            if ev.cut:
                step.log("warning", "Asterisk cut the agent's channel")
                _end(step, "interrupted")
                return
            step.log("info", "agent hung up", cause=ev.cause)
            step.hangup_caller()
            _end(step, "completed")
        return
    if was_dialling:
        _leg_failed(step, leg, f"cause {ev.cause}")


# Phases in which a cut caller channel ends the call as `interrupted` (in CLOSING the call
# ends anyway, with the reason it is closing for).
_CUT_PHASES = frozenset({Phase.ANSWERING, Phase.NOTICE, Phase.RINGING, Phase.CONNECTING,
                         Phase.CONVERSATION})


def _on_caller_gone(step: _Step, ev: CallerGone) -> None:
    s = step.s
    if s.caller_gone:
        return
    step.set(caller_gone=True)
    if s.caller_hung_up:
        return  # we hung up; the call is already ending
    phase = s.phase
    if ev.cut and phase in _CUT_PHASES:
        # no party ended it: neither abandoned nor completed (a call back may be owed)
        step.log("warning", "Asterisk cut the call", phase=phase.value)
        _end(step, "interrupted")
        return
    if phase is Phase.NEW:
        step.log("warning", "caller left before the call started")
        step.set(phase=Phase.DONE)
    elif phase in (Phase.ANSWERING, Phase.NOTICE):
        step.cancel_timer(NOTICE_GUARD)
        _end(step, "abandoned", abandoned_phase="notice")
    elif phase is Phase.RINGING:
        _end(step, "abandoned", abandoned_phase="ringing")
    elif phase is Phase.CONNECTING:
        _end(step, "abandoned", abandoned_phase="connecting")
    elif phase is Phase.CONVERSATION:
        _end(step, "completed")
    elif phase is Phase.CLOSING:
        step.cancel_timer(CLOSING_GUARD)
        _end(step, s.end_reason or "no_agent")


# -- recording ------------------------------------------------------------------------------


# Phases in which a snoop asked for at the notice waits, unrecorded, for an agent's answer.
_SNOOP_WAITING_PHASES = frozenset({Phase.ANSWERING, Phase.NOTICE, Phase.RINGING})


def _request_snoop(step: _Step, *, again: bool = False) -> None:
    """Ask for the snoop on the caller unless it is asked for already (`again`: even so,
    after a request that went unanswered: either it was lost and this one makes the snoop,
    or Asterisk refuses this one because the first made it under the same id)."""
    s = step.s
    if s.snoop_channel is not None and not again:
        return
    snoop = snoop_id_for(s.call_id)
    step.set(snoop_channel=snoop, snoop_ready=False)
    step.emit(SnoopChannel(s.caller_channel, snoop))


def _on_snoop_ready(step: _Step, ev: SnoopReady) -> None:
    s = step.s
    if ev.channel_id != s.snoop_channel:
        step.log("debug", "snoop channel not wanted (any more)", channel_id=ev.channel_id)
        return
    if s.snoop_ready or s.recording in (
        RecState.REQUESTED, RecState.STARTED, RecState.ARCHIVING
    ):
        step.log("debug", "snoop reported twice", channel_id=ev.channel_id)
        return
    step.set(snoop_ready=True)
    if s.recording is RecState.NONE and s.phase in _SNOOP_WAITING_PHASES:
        return  # kept for the answer
    if s.recording is RecState.SNOOPING and s.recording_name is not None:
        if s.phase in (Phase.CONNECTING, Phase.CONVERSATION):
            step.set(recording=RecState.REQUESTED)
            step.emit(RecordChannel(ev.channel_id, s.recording_name))
            return
        _nothing_recorded(step)
    _drop_snoop(step)  # nothing to record any more


def _on_snoop_gone(step: _Step, ev: SnoopGone) -> None:
    s = step.s
    if ev.channel_id != s.snoop_channel or s.recording is not RecState.NONE:
        return  # the end of a recorded snoop is reported by its recording
    step.log("info", "the snoop left before an agent answered", channel_id=ev.channel_id)
    _forget_snoop(step)  # asked for again on an answer


def _drop_snoop(step: _Step) -> None:
    if step.s.snoop_channel is not None:
        step.emit(HangupChannel(step.s.snoop_channel))
        _forget_snoop(step)


def _forget_snoop(step: _Step) -> None:
    step.set(snoop_channel=None, snoop_ready=False, snoop_unconfirmed=False)


def _nothing_recorded(step: _Step) -> None:
    """The call ended before its recording could start: there is no recording to wait for."""
    step.log("info", "the call ended before its recording started")
    step.cancel_timer(FINISH_GUARD_TIMER)
    step.set(recording=RecState.FAILED)
    step.persist(recording_name=None)
    _maybe_done(step)


def _on_recording_started(step: _Step, ev: RecordingStarted) -> None:
    s = step.s
    if ev.name != s.recording_name or s.recording is not RecState.REQUESTED:
        step.log("debug", "recording start ignored", name=ev.name)
        return
    step.set(recording=RecState.STARTED)
    if s.phase is Phase.CONNECTING:
        _add_agent(step)
    elif s.phase in (Phase.FINISHING, Phase.DONE):
        # both parties have left already: nothing to record, let it end now
        step.emit(StopRecording(ev.name))


def _on_recording_finished(step: _Step, ev: RecordingFinished) -> None:
    s = step.s
    if ev.name != s.recording_name or s.recording not in _REC_RUNNING:
        step.log("debug", "recording finish ignored", name=ev.name)
        return
    step.cancel_timer(FINISH_GUARD_TIMER)
    step.set(recording=RecState.ARCHIVING)
    step.emit(ArchiveRecording(ev.name, s.started_at))
    if s.phase is Phase.CONNECTING:  # finished before it started: add the agent anyway
        _add_agent(step)


def _on_recording_failed(step: _Step, ev: RecordingFailed) -> None:
    s = step.s
    if ev.name != s.recording_name or s.recording not in _REC_RUNNING:
        step.log("debug", "recording failure ignored", name=ev.name)
        return
    _recording_failed(step, ev.cause or "failed")


def _recording_failed(step: _Step, cause: str) -> None:
    step.log("error", "recording failed: the call goes on unrecorded", cause=cause)
    step.cancel_timer(FINISH_GUARD_TIMER)
    step.set(recording=RecState.FAILED)
    step.persist(recording_name=None)
    if step.s.phase is Phase.CONNECTING:
        _add_agent(step)
    _maybe_done(step)


def _on_recording_archived(step: _Step, ev: RecordingArchived) -> None:
    s = step.s
    if ev.name != s.recording_name or s.recording is not RecState.ARCHIVING:
        step.log("debug", "archive result ignored", name=ev.name)
        return
    if ev.ok:
        step.set(recording=RecState.ARCHIVED)
    else:
        step.log("error", "recording could not be archived", name=ev.name)
        step.set(recording=RecState.LOST)
    _maybe_done(step)


# -- timers ---------------------------------------------------------------------------------


def _on_timer(step: _Step, ev: TimerFired) -> None:
    s = step.s
    if ev.name not in s.timers:
        step.log("debug", "stale timer ignored", timer=ev.name)
        return
    step.set(timers=s.timers - {ev.name})
    name = ev.name
    if name == MAX_WAIT:
        if s.phase is Phase.RINGING:
            step.log("info", "nobody answered within the maximum wait")
            _go_closing(step, "no_agent")
    elif name == ROUND_PAUSE:
        if s.phase is Phase.RINGING:
            _start_round(step)
    elif name.startswith("ring-round-"):
        if s.phase is Phase.RINGING:
            for leg in s.legs:
                if leg.round == s.round:
                    step.hangup_leg(leg, "no_answer")
            _end_round(step)
    elif name.startswith("ring-"):
        for leg in s.legs:
            if _leg_timer(leg.attempt) == name and leg.status is LegStatus.DIALLING:
                step.hangup_leg(leg, "no_answer")
                _leg_failed(step, leg, "ring timeout")
    elif name == NOTICE_GUARD:
        if s.phase is Phase.NOTICE:
            step.log("warning", "no end of the notice playback reported")
            _notice_over(step, completed=False)
    elif name == CLOSING_GUARD:
        if s.phase is Phase.CLOSING:
            step.hangup_caller()
            _end(step, s.end_reason or "no_agent")
    elif name == RECORD_GUARD:
        if s.phase is Phase.CONNECTING:
            step.log("warning", "recording not started in time: agent added anyway")
            _add_agent(step)
    elif name == FINISH_GUARD_TIMER and s.phase is Phase.FINISHING and s.recording_name:
        if s.recording is RecState.SNOOPING:
            _nothing_recorded(step)
            _drop_snoop(step)
            return
        if s.recording not in _REC_RUNNING:
            return
        step.log("warning", "no end of recording reported: fetching it anyway")
        step.set(recording=RecState.ARCHIVING)
        step.emit(StopRecording(s.recording_name), ArchiveRecording(s.recording_name, s.started_at))


# -- failures of commands ---------------------------------------------------------------------


def _on_command_failed(step: _Step, ev: CommandFailed) -> None:
    s = step.s
    cmd = ev.command
    step.log("warning", "command failed", command=type(cmd).__name__, error=ev.error)
    if isinstance(cmd, DialAgent):
        leg = s.leg(cmd.channel_id)
        if leg is not None and leg.status is LegStatus.DIALLING:
            # hang up even so: after a timeout the channel may exist all the same
            step.hangup_leg(leg, "normal")
            _leg_failed(step, leg, "could not dial")
    elif isinstance(cmd, Answer):
        if s.phase is Phase.ANSWERING:
            if ev.not_found:
                step.set(caller_gone=True)
                _end(step, "abandoned", abandoned_phase="notice")
            else:
                step.hangup_caller()
                _end(step, "failed")
    elif isinstance(cmd, Play):
        if cmd.playback_id not in (
            playback_id_for(s.call_id, "notice"),
            playback_id_for(s.call_id, "closed"),
        ):
            return
        if ev.not_found:
            # ARI's 404 to a play is the channel's: the caller left (its hang-up event may
            # come after this answer)
            _on_caller_gone(step, CallerGone(ev.at))
        elif ev.unanswered:
            # Asterisk may play it late (a stall): its end, or the prompt's guard, decides;
            # agents are not rung over a notice that may still be playing
            step.log("info", "prompt playback awaited after an unanswered request",
                     playback_id=cmd.playback_id)
        else:
            _on_prompt_finished(step, PromptFinished(ev.at, cmd.playback_id, failed=True))
    elif (
        isinstance(cmd, SnoopChannel)
        and cmd.snoop_id == s.snoop_channel
        and (ev.unanswered or s.snoop_unconfirmed)
        and s.phase not in (Phase.FINISHING, Phase.DONE)
    ):
        # Asterisk may make it late (a stall), under the same id: a refusal of a second
        # request is most likely that id in use. Its arrival is awaited; the record guard
        # bounds the agent's wait, as for any snoop on its way.
        if not s.snoop_ready:
            step.log("info", "snoop awaited after an unanswered request", error=ev.error)
            step.set(snoop_unconfirmed=True)
    elif (
        isinstance(cmd, RecordChannel)
        and ev.unanswered
        and s.recording is RecState.REQUESTED
        and cmd.name == s.recording_name
        and s.phase not in (Phase.FINISHING, Phase.DONE)
    ):
        # the same for the recording: Asterisk may start it late; the record guard adds the
        # agent meanwhile, and at the end the finish guard fetches whatever there is
        step.log("info", "recording start awaited after an unanswered request", error=ev.error)
    elif isinstance(cmd, SnoopChannel) and s.recording is RecState.NONE:
        if cmd.snoop_id == s.snoop_channel:
            _forget_snoop(step)  # asked for again when an agent answers
    elif isinstance(cmd, SnoopChannel | RecordChannel):
        expected = RecState.SNOOPING if isinstance(cmd, SnoopChannel) else RecState.REQUESTED
        if s.recording is not expected:
            return
        if isinstance(cmd, RecordChannel) and cmd.channel_id == s.snoop_channel:
            _drop_snoop(step)  # of no use any more
        if s.phase in (Phase.FINISHING, Phase.DONE):
            _nothing_recorded(step)
        else:
            _recording_failed(step, ev.error)
    elif isinstance(cmd, CreateBridge):
        if s.phase in (Phase.CONNECTING, Phase.CONVERSATION):
            _fail_call(step)
        elif s.phase is Phase.RINGING and s.bridge_id == cmd.bridge_id:
            # made again when an agent answers (Asterisk's "already exists" to that, after
            # a create done late, counts as made)
            step.set(bridge_id=None)
            _maybe_stray(step, ev, cmd.bridge_id)
    elif isinstance(cmd, AddToBridge):
        if s.phase not in (Phase.CONNECTING, Phase.CONVERSATION):
            return
        if (
            ev.unanswered
            and cmd.channel_id in (s.caller_channel, s.winner)
            and cmd.channel_id not in s.readded
        ):
            # done late in a stall, or lost: Asterisk takes a second add of a member as a
            # re-join of the same bridge, so asking once more is safe either way
            step.log("info", "bridge add asked again after an unanswered request",
                     channel_id=cmd.channel_id, error=ev.error)
            step.set(readded=s.readded | {cmd.channel_id})
            step.emit(AddToBridge(cmd.bridge_id, cmd.channel_id))
            return
        # "not found" may be the bridge's (404) while the channel lives on: hang it up anyway
        if cmd.channel_id == s.winner and ev.not_found:
            leg = s.leg(cmd.channel_id)
            if leg is not None:
                step.hangup_leg(leg, "normal")
            _on_agent_gone(step, AgentGone(ev.at, cmd.channel_id))
        elif cmd.channel_id == s.caller_channel and ev.not_found:
            if (
                s.phase is Phase.CONVERSATION
                and cmd.channel_id not in s.readded  # a first add: the caller never joined
                and not (s.caller_gone or s.caller_hung_up)
            ):
                # the caller left before reaching the agent (the add's answer came before
                # the hang-up event): abandoned while being connected, not a conversation
                step.set(caller_gone=True)
                _end(step, "abandoned", abandoned_phase="connecting")
            else:
                _on_caller_gone(step, CallerGone(ev.at))
            step.hangup_caller(even_if_gone=True)
        else:
            _fail_call(step)
    elif (
        isinstance(cmd, ArchiveRecording)
        and s.recording is RecState.ARCHIVING
        and cmd.name == s.recording_name
    ):
        _on_recording_archived(step, RecordingArchived(ev.at, cmd.name, ok=False))


def _maybe_stray(step: _Step, ev: CommandFailed, bridge_id: str) -> None:
    if ev.unanswered:
        step.set(stray_bridges=step.s.stray_bridges | {bridge_id})


def _on_end_call(step: _Step, ev: EndCall) -> None:
    if step.s.phase in (Phase.FINISHING, Phase.DONE):
        return
    if step.s.phase is Phase.NEW:  # no row yet, nothing set up
        step.hangup_caller()
        step.set(phase=Phase.DONE)
        return
    reason = step.s.end_reason if step.s.phase is Phase.CLOSING and step.s.end_reason else ev.reason
    step.hangup_caller()
    _end(step, reason)


def _fail_call(step: _Step) -> None:
    step.hangup_caller()
    _end(step, "failed")


# -- the end ----------------------------------------------------------------------------------


def _end(step: _Step, reason: str, *, abandoned_phase: str | None = None) -> None:
    """Both sides are leaving: hang up whatever is left, close the row, then finish up."""
    s = step.s
    if s.phase in (Phase.FINISHING, Phase.DONE):
        return
    for leg in s.legs:
        step.hangup_leg(leg, "normal")
    step.hangup_caller()
    if s.recording in (RecState.NONE, RecState.DISABLED):
        # an unrecorded snoop of the notice: it ends with the caller, who is leaving
        _forget_snoop(step)
    for name in sorted(s.timers):
        step.cancel_timer(name)
    step.set(hold_on=False, ended_at=step.at, end_reason=reason, abandoned_phase=abandoned_phase)
    step.persist(ended_at=step.at, end_reason=reason)
    if abandoned_phase is not None:
        step.persist(abandoned_phase=abandoned_phase)
    winner = s.winner_leg
    if winner is not None:
        step.emit(MarkAgent(winner.agent.id, False, step.at))
    step.log("info", "call ended", end_reason=reason)
    step.set(phase=Phase.FINISHING)
    if step.s.recording in _REC_LIVE:
        step.start_timer(FINISH_GUARD_TIMER, FINISH_GUARD)
    _maybe_done(step)


def _maybe_done(step: _Step) -> None:
    s = step.s
    if s.phase is not Phase.FINISHING or s.recording not in _REC_SETTLED:
        return
    for name in sorted(s.timers):
        step.cancel_timer(name)
    held = [s.bridge_id] if s.bridge_id is not None else []
    for bridge in [*held, *sorted(s.stray_bridges - set(held))]:
        step.emit(DestroyBridge(bridge))
    step.set(phase=Phase.DONE)


_HANDLERS: Mapping[type[FlowEvent], Any] = {
    CallerEntered: _on_caller_entered,
    Answered: _on_answered,
    PromptFinished: _on_prompt_finished,
    AgentDialStatus: _on_dial_status,
    AgentAnswered: _on_agent_answered,
    AgentGone: _on_agent_gone,
    CallerGone: _on_caller_gone,
    SnoopReady: _on_snoop_ready,
    SnoopGone: _on_snoop_gone,
    RecordingStarted: _on_recording_started,
    RecordingFinished: _on_recording_finished,
    RecordingFailed: _on_recording_failed,
    RecordingArchived: _on_recording_archived,
    TimerFired: _on_timer,
    CommandFailed: _on_command_failed,
    EndCall: _on_end_call,
}


def live_channels(state: CallState) -> Iterable[str]:
    """Channels the call still holds open in Asterisk (neither gone nor hung up by us)."""
    if not (state.caller_gone or state.caller_hung_up):
        yield state.caller_channel
    for leg in state.legs:
        if leg.live:
            yield leg.channel_id


# ---------------------------------------------------------------------------------------------
# What each command touches, for carrying out one transition's requests at once


def touches(command: Command) -> frozenset[str] | None:
    """The channels, bridges and recordings in Asterisk `command` acts on. A transition's
    commands are carried out in order, except that one touching nothing an earlier one
    still under way touches need not wait for it: under load each request to Asterisk takes
    a few hundred ms, and the ringing's requests, one after another, kept the caller waiting
    seconds. Empty: nothing in Asterisk (done at once); None: everything before it
    is finished first, and it before anything after it (the call's row)."""
    match command:
        case Answer(channel_id=c) | Play(channel_id=c) | Ring(channel_id=c):
            return frozenset({c})
        case StopRing(channel_id=c) | StartMoh(channel_id=c) | StopMoh(channel_id=c):
            return frozenset({c})
        case HangupChannel(channel_id=c):
            return frozenset({c})
        case DialAgent(channel_id=c):
            # the caller's channel is only read (its caller id): no need to wait for it
            return frozenset({c})
        case CreateBridge(bridge_id=b) | DestroyBridge(bridge_id=b):
            return frozenset({b})
        case AddToBridge(bridge_id=b, channel_id=c):
            return frozenset({b, c})
        case SnoopChannel(channel_id=c, snoop_id=s):
            return frozenset({c, s})
        case RecordChannel(channel_id=c, name=name):
            return frozenset({c, f"recording:{name}"})
        case StopRecording(name=name):
            return frozenset({f"recording:{name}"})
        case StartTimer() | CancelTimer() | MarkAgent() | Log():
            return frozenset()
        case _:  # Persist, ArchiveRecording, and whatever comes next: in strict order
            return None
