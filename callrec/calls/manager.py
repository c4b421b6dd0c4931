"""`CallManager`: runs one asyncio task per call around the pure state machine.

ARI events are routed to calls by the ids the calls own (caller channel, agent channels,
playbacks, recording); `handle` only translates and enqueues, so the event reader never blocks.
Each call task applies its events one at a time, logs the transition (the one place where that
happens, with `call_id` bound), and carries out the commands in order with the ARI client, the
call store, the archiver and its timers. Results that matter to the flow (answered, a command
failed, a recording archived, a timer fired) come back into the same queue as events.

After every (re)connection `reconcile` brings what Asterisk holds and what PostgreSQL says
into line: calls of an earlier run still in conversation are resumed, the others are closed,
and recordings left in Asterisk's spool are archived.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog

from callrec.archive.errors import CallPurged
from callrec.ari import events as ari_events
from callrec.ari.errors import (
    AriBadRequest,
    AriConflict,
    AriError,
    AriNoAnswer,
    AriNotFound,
    AriUnprocessable,
)
from callrec.calls import machine as m
from callrec.calls.agents import AgentTracker
from callrec.calls.plan import build_plan
from callrec.calls.ports import Archiver, Ari, CallRow, Prompts, RoutingSource, Store
from callrec.histograms import Histogram

log = structlog.get_logger(__name__)

AGENT_ARGS_PREFIX = "agent:"
SNOOP_ARGS_PREFIX = "snoop:"
# Deterministic agent-leg ids of a call of an earlier run are looked for up to this attempt.
MAX_LEGS_SEARCHED = 200
# An unclaimed channel in our application younger than this may be a call whose StasisStart
# is still on its way to us: leave it alone.
ORPHAN_MIN_AGE = timedelta(seconds=30)
# The dialplan label (in the extension where the call entered Stasis) that takes calls callrec
# stops before connecting them: the agents rung directly, unrecorded (asterisk-conf).
HANDBACK_LABEL = "handback"
# Row states of a call that has not reached an agent yet and can still be handed back.
_WAITING_STATES = frozenset({m.Phase.ANSWERING, m.Phase.NOTICE, m.Phase.RINGING})
# How long `close` may spend handing waiting callers back to the dialplan.
HANDBACK_TIMEOUT = 10.0
# How long `close` lets row writes under way finish.
WRITES_DRAIN_TIMEOUT = 15.0
# How far back the archive is read, once per run, for the agents' turns and idle times (the
# `round_robin` and `longest_idle` strategies): a working day.
AGENT_HISTORY = timedelta(hours=12)
# How long an answered agent's channel may take to enter our application before it is put
# in the call's bridge all the same (Asterisk refuses the add, and the machine handles that).
STASIS_START_WAIT = 5.0
# Pauses before a reconciliation Asterisk left unanswered is tried again (the last repeats).
RECONCILE_PAUSES = (1.0, 2.0, 5.0, 10.0, 30.0)
# Waits worth a warning line of their own: the caller hears nothing before the notice, the
# agent nothing before being connected (the call flow's goals are tens of milliseconds).
SLOW_NOTICE_S = 1.0
SLOW_JOIN_S = 1.0
# Commands whose failure changes the flow: the machine hears about it.
_REPORTED_FAILURES = (
    m.Answer,
    m.Play,
    m.DialAgent,
    m.CreateBridge,
    m.AddToBridge,
    m.SnoopChannel,
    m.RecordChannel,
)

_T = TypeVar("_T")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _Call:
    """One call: its state, its queue, its timers, and the Asterisk ids it owns."""

    def __init__(self, state: m.CallState, service_number: str) -> None:
        self.id = state.call_id
        self.snoop_id = m.snoop_id_for(state.call_id)  # looked up on every channel event
        self.notice_playback = m.playback_id_for(state.call_id, "notice")
        self.state = state
        self.service_number = service_number
        self.queue: asyncio.Queue[m.FlowEvent] = asyncio.Queue()
        # loop timers, not tasks: a call starts and cancels half a dozen, most never fire
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.task: asyncio.Task[None] | None = None
        self.owned: set[str] = set()  # channel, playback and recording ids, for unrouting
        # Asterisk's name of each of the call's channels, by id (`_addressed`)
        self.names: dict[str, str] = {}
        # The call's one writer of its row after the first write: it writes what is pending
        # until nothing is, so the writes reach PostgreSQL in order while the call flow goes
        # on without them, and writes that pile up behind a slow one go as one.
        self.writes: asyncio.Task[None] | None = None
        self.pending: dict[str, Any] = {}
        self.pending_durable = False
        self.row_started = False  # the first write, waited for, is done
        # Hang-ups under way: nothing in the flow waits for them (their failures change
        # nothing), so an agent waiting to be connected never waits behind one.
        self.hangups: set[asyncio.Task[None]] = set()


class CallManager:
    """Per-call tasks around the state machine (contract §5)."""

    #: The ARI event types `handle` acts on; the client asks Asterisk for these only.
    EVENT_TYPES = frozenset(
        {
            "StasisStart",
            "StasisEnd",
            "ChannelHangupRequest",
            "ChannelDestroyed",
            "Dial",
            "PlaybackFinished",
            "RecordingStarted",
            "RecordingFinished",
            "RecordingFailed",
            "ApplicationReplaced",
        }
    )

    def __init__(
        self,
        ari: Ari,
        store: Store,
        archiver: Archiver,
        routing: RoutingSource,
        prompts: Prompts,
        app_name: str,
        *,
        clock: Callable[[], datetime] = _utcnow,
        tracker: AgentTracker | None = None,
        round_pause: float = 2.0,
        hold: m.HoldSound = m.HoldSound.RING,
        reconcile_pauses: Sequence[float] = RECONCILE_PAUSES,
    ) -> None:
        self._ari = ari
        self._store = store
        self._archiver = archiver
        self._routing = routing
        self._prompts = prompts
        self.app_name = app_name
        self._clock = clock
        self.tracker = tracker or AgentTracker()
        self._round_pause = round_pause
        self._hold = hold
        self._calls: dict[uuid.UUID, _Call] = {}
        self._by_channel: dict[str, _Call] = {}
        self._by_playback: dict[str, _Call] = {}
        self._by_recording: dict[str, _Call] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._writes: set[asyncio.Task[None]] = set()
        # agent channels dialled but not yet in our application (they enter when answered):
        # adding one to a bridge before its StasisStart fails with 422
        self._in_stasis: dict[str, asyncio.Future[None]] = {}
        # agent channels whose dial request is under way: Asterisk may not list them yet
        self._dialling: set[str] = set()
        self._reconcile_lock = asyncio.Lock()
        self._reconcile_generation = 0
        self._reconcile_pauses = reconcile_pauses
        self._born = clock()  # rows started before this belong to an earlier run
        self._history_read = False
        self._closed = False
        # Asterisk's startup time at the last reconciliation, and when events last stopped:
        # a later startup means its channels were cut by a restart, not hung up by a party
        self._asterisk_started: datetime | None = None
        self._lost_contact_at: datetime | None = None
        self.calls_by_end_reason: Counter[str] = Counter()
        #: StasisStart -> the notice playing, and agent answer -> agent in the bridge: the
        #: two waits the call flow adds, where overload shows first.
        self.notice_wait = Histogram()
        self.agent_join = Histogram()
        self.reconciliations = 0

    # -- public ---------------------------------------------------------------------------

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    @property
    def events_waiting(self) -> int:
        """Events queued for the calls' tasks and not yet handled. Unbounded: `handle`
        must never block, or one slow call would hold up the events of every other."""
        return sum(call.queue.qsize() for call in self._calls.values())

    def states(self) -> list[m.CallState]:
        """A snapshot of the calls in progress (for status pages and tests)."""
        return [call.state for call in self._calls.values()]

    async def handle(self, event: ari_events.Event) -> None:
        """Route one ARI event to its call (never blocks, never raises)."""
        if self._closed:
            return
        try:
            self._route(event)
        except Exception:
            log.exception("ari event could not be routed", ari_event=event.type)

    async def reconcile(self) -> bool:
        """Bring calls, Asterisk and PostgreSQL into line (after every connect and at start).

        A pass Asterisk does not answer (slow after a restart, say) is tried again after a
        pause, until one completes or a newer reconciliation takes over: only a complete
        pass ends the calls whose hang-ups were lost with the events. True if one did."""
        self._reconcile_generation += 1
        generation = self._reconcile_generation
        pauses = iter(self._reconcile_pauses)
        pause = 0.0
        while True:
            async with self._reconcile_lock:
                try:
                    await self._reconcile()
                    return True
                except AriError as exc:
                    pause = next(pauses, pause)
                    log.warning("reconciliation incomplete: Asterisk unavailable",
                                error=str(exc), retry_in_s=pause)
                except Exception:
                    # a bug: trying again would only repeat it; the next connection does
                    log.exception("reconciliation failed")
                    return False
                finally:
                    self.reconciliations += 1
            await asyncio.sleep(pause)
            if self._closed or generation != self._reconcile_generation:
                return False

    async def close(self) -> None:
        """Cancel and await every call task. Calls in conversation go on in Asterisk and the
        next run resumes them; callers still waiting are handed to the dialplan."""
        self._closed = True
        waiting = [c.state for c in self._calls.values() if c.state.phase in _WAITING_STATES]
        tasks = [c.task for c in self._calls.values() if c.task is not None]
        tasks.extend(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if waiting:
            handing = [asyncio.create_task(self._hand_back_waiting(s)) for s in waiting]
            await _finish_or_cancel(handing, HANDBACK_TIMEOUT)
        if self._writes:
            # row writes already under way are let finish; one cut short is journalled by
            # the store (replaying an upsert is harmless), as is one that fails
            await _finish_or_cancel(list(self._writes), WRITES_DRAIN_TIMEOUT)

    # -- routing ARI events ---------------------------------------------------------------

    def _route(self, event: ari_events.Event) -> None:
        now = self._clock()
        match event:
            case ari_events.StasisStart(channel=channel, args=args):
                self._stasis_start(channel.id, channel, args, now)
            case ari_events.StasisEnd(channel=channel):
                self._channel_gone(channel.id, None, now)
            case ari_events.ChannelHangupRequest(channel=channel, cause=cause, shutdown=shutdown):
                self._channel_gone(channel.id, cause, now, cut=shutdown)
            case ari_events.ChannelDestroyed(channel=channel, cause=cause):
                self._channel_gone(channel.id, cause, now)
            case ari_events.Dial(peer=peer, dialstatus=status):
                call = self._by_channel.get(peer.id)
                if call and status and peer.id != call.state.caller_channel:
                    call.queue.put_nowait(m.AgentDialStatus(now, peer.id, status))
            case ari_events.PlaybackFinished(playback=playback):
                call = self._by_playback.get(playback.id)
                if call:
                    failed = playback.state == "failed"
                    call.queue.put_nowait(m.PromptFinished(now, playback.id, failed))
            case ari_events.RecordingStarted(recording=rec):
                self._to_recording(rec.name, m.RecordingStarted(now, rec.name))
            case ari_events.RecordingFinished(recording=rec):
                self._to_recording(rec.name, m.RecordingFinished(now, rec.name))
            case ari_events.RecordingFailed(recording=rec):
                self._to_recording(rec.name, m.RecordingFailed(now, rec.name, rec.cause))
            case ari_events.Connected(reconnect=reconnect):
                # the service runs `reconcile()` on every Connected (contract §5)
                log.info("ari connected", reconnect=reconnect)
            case ari_events.Disconnected(reason=reason):
                self._lost_contact_at = now
                log.warning("ari disconnected: events are lost until reconnection", reason=reason)
            case ari_events.ApplicationReplaced():
                log.error("another client took over the ARI application", app=self.app_name)
            case _:
                pass

    def _stasis_start(
        self, channel_id: str, channel: Any, args: tuple[str, ...], now: datetime
    ) -> None:
        if args and args[0].startswith(SNOOP_ARGS_PREFIX):
            call = self._by_channel.get(channel_id)
            if call is not None:
                call.queue.put_nowait(m.SnoopReady(now, channel_id))
            else:
                log.warning("snoop channel of no live call hung up", channel_id=channel_id)
                self._spawn(self._hangup_quietly(channel_id, "normal"))
            return
        if args and args[0].startswith(AGENT_ARGS_PREFIX):
            self._no_longer_awaited(channel_id)
            owner = self._by_channel.get(channel_id)
            leg = owner.state.leg(channel_id) if owner is not None else None
            if leg is None or leg.status in (m.LegStatus.HUNG_UP, m.LegStatus.GONE):
                # a leg of a call that is over (or of an earlier run), or one its call gave
                # up on and hung up before Asterisk made it (a stalled create): nobody will
                # bridge it
                log.warning("agent channel of no live call hung up", channel_id=channel_id,
                            call_id=str(owner.state.call_id) if owner is not None else None)
                self._spawn(self._hangup_quietly(channel_id, "normal"))
            elif owner is not None:
                # an originated channel enters the application only once answered: the
                # answer's second witness beside Dial's ANSWER (whichever comes first
                # connects, the other is a no-op), so no ChannelStateChange is asked for
                owner.queue.put_nowait(m.AgentAnswered(now, channel_id))
            return
        if channel_id in self._by_channel:
            return
        service_number = args[0] if args else channel.exten
        call_id = uuid.uuid4()
        call = self._add_call(m.initial_state(call_id, channel_id), service_number)
        call.names[channel_id] = channel.name
        plan: m.ServicePlan | None = None
        error: str | None = None
        try:
            plan = build_plan(
                self._routing.current(),  # the call keeps this snapshot
                service_number,
                now,
                self._prompts,
                self.tracker,
                call_id=call_id,
                hold=self._hold,
                round_pause=self._round_pause,
            )
        except Exception as exc:
            # the call still gets its row (end_reason 'failed') and a clean hangup
            log.exception("call plan failed", call_id=str(call_id))
            error = repr(exc)
        call.queue.put_nowait(
            m.CallerEntered(
                now, service_number, channel.caller.number, channel.caller.name, plan, error
            )
        )
        self._start(call)

    def _channel_gone(
        self, channel_id: str, cause: int | None, now: datetime, *, cut: bool = False
    ) -> None:
        """`cut`: Asterisk ended the channel (shutting down or restarted), not a party."""
        call = self._by_channel.get(channel_id)
        if call is None:
            return
        if channel_id == call.snoop_id:
            # it ends with the caller (its recording reports that end); gone earlier, the
            # call asks for another when an agent answers
            call.queue.put_nowait(m.SnoopGone(now, channel_id))
            return
        if channel_id == call.state.caller_channel:
            call.queue.put_nowait(m.CallerGone(now, cause, cut))
        else:
            self._no_longer_awaited(channel_id)  # gone before it entered: no add waits for it
            call.queue.put_nowait(m.AgentGone(now, channel_id, cause, cut))

    def _to_recording(self, name: str, event: m.FlowEvent) -> None:
        call = self._by_recording.get(name)
        if call is not None:
            call.queue.put_nowait(event)

    # -- call tasks -----------------------------------------------------------------------

    def _add_call(self, state: m.CallState, service_number: str) -> _Call:
        call = _Call(state, service_number)
        self._calls[call.id] = call
        self._own(call, self._by_channel, state.caller_channel)
        return call

    def _own(self, call: _Call, index: dict[str, _Call], key: str) -> None:
        index[key] = call
        call.owned.add(key)

    def _start(self, call: _Call) -> None:
        call.task = asyncio.create_task(self._run(call), name=f"call-{call.id}")

    async def _run(self, call: _Call) -> None:
        structlog.contextvars.bind_contextvars(call_id=str(call.id))
        try:
            while not call.state.done:
                event = await call.queue.get()
                await self._apply(call, event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call task failed: ending the call")
            await self._emergency_end(call)
        finally:
            await self._retire(call)

    async def _apply(self, call: _Call, event: m.FlowEvent) -> None:
        before = call.state
        call.state, commands = m.transition(before, event)
        self._log_transition(before, call.state, event, commands)
        await self._carry_out(call, commands)

    async def _carry_out(self, call: _Call, commands: list[m.Command]) -> None:
        """Carry out one transition's commands in order, but each request to Asterisk only
        after the earlier ones touching the same channels or bridges (`m.touches`); all are
        finished before the call's next event."""
        things = [m.touches(c) for c in commands]
        last_request = _last_before_barriers(things)
        last: dict[str, asyncio.Task[None]] = {}  # per thing touched: its latest request
        under_way: list[asyncio.Task[None]] = []
        try:
            for i, (command, touched) in enumerate(zip(commands, things, strict=True)):
                if touched is None:
                    if under_way:
                        await asyncio.wait(under_way)
                        under_way.clear()
                        last.clear()
                    await self._execute(call, command)
                    continue
                before = {last[t] for t in touched if t in last and not last[t].done()}
                if not touched or i in last_request:
                    # nothing after it can start alongside it: no task of its own needed
                    if before:
                        await asyncio.wait(before)
                    await self._execute(call, command)
                    continue
                task = asyncio.ensure_future(self._execute_after(before, call, command))
                under_way.append(task)
                last.update(dict.fromkeys(touched, task))
            if under_way:
                await asyncio.wait(under_way)
        except (Exception, asyncio.CancelledError):
            for task in under_way:
                task.cancel()
            if under_way:
                await asyncio.wait(under_way)
            raise

    async def _execute_after(
        self, before: set[asyncio.Task[None]], call: _Call, command: m.Command
    ) -> None:
        if before:
            await asyncio.wait(before)
        await self._execute(call, command)

    def _log_transition(
        self,
        before: m.CallState,
        after: m.CallState,
        event: m.FlowEvent,
        commands: list[m.Command],
    ) -> None:
        """The one place where call transitions are logged."""
        fields: dict[str, Any] = {
            "flow_event": type(event).__name__,
            "phase": after.phase.value,
            "commands": [type(c).__name__ for c in commands if not isinstance(c, m.Log)],
        }
        if before.phase is not after.phase:
            log.info("call transition", previous=before.phase.value, **fields)
        else:
            log.debug("call transition", **fields)
        for note in commands:
            if isinstance(note, m.Log):
                getattr(log, note.level, log.info)(note.message, **note.fields)

    async def _retire(self, call: _Call) -> None:
        if call.writes is not None:
            await asyncio.wait([call.writes])
        if call.hangups:
            await asyncio.wait(call.hangups)
        for timer in call.timers.values():
            timer.cancel()
        call.timers.clear()
        for key in call.owned:
            self._in_stasis.pop(key, None)
            for index in (self._by_channel, self._by_playback, self._by_recording):
                if index.get(key) is call:
                    del index[key]
        self._calls.pop(call.id, None)
        if call.state.done:
            self.calls_by_end_reason[call.state.end_reason or "unknown"] += 1
            self._summary(call)

    def _summary(self, call: _Call) -> None:
        s = call.state

        def seconds(a: datetime | None, b: datetime | None) -> float | None:
            return round((b - a).total_seconds(), 3) if a and b else None

        winner = s.winner_leg
        log.info(
            "call summary",
            service_number=call.service_number,
            service_name=s.plan.name if s.plan else None,
            end_reason=s.end_reason,
            abandoned_phase=s.abandoned_phase,
            agent_name=winner.agent.name if winner else None,
            agent_id=winner.agent.id if winner else None,
            notice_completed=s.notice_completed,
            agents_tried=s.attempts,
            wait_s=seconds(s.started_at, s.answered_at or s.ended_at),
            talk_s=seconds(s.answered_at, s.ended_at),
            total_s=seconds(s.started_at, s.ended_at),
            recording=s.recording.value,
        )

    async def _emergency_end(self, call: _Call) -> None:
        """A bug ended the call task: hang up what is left and close the row."""
        for channel_id in m.live_channels(call.state):
            await self._hangup_quietly(channel_id, "normal")
        if call.state.started_at is not None and call.state.ended_at is None:
            await self._persist(call, ended_at=self._clock(), end_reason="failed", state="done")

    # -- carrying out commands ------------------------------------------------------------

    async def _execute(self, call: _Call, command: m.Command) -> None:
        try:
            await self._do(call, command)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._command_failed(call, command, exc)

    def _command_failed(self, call: _Call, command: m.Command, exc: Exception) -> None:
        name = type(command).__name__
        if isinstance(exc, AriNotFound) and not isinstance(command, _REPORTED_FAILURES):
            log.debug("already gone in Asterisk", command=name)
            return
        if isinstance(exc, AriError):
            log.warning("ari command failed", command=name, error=str(exc))
        else:
            log.error("command failed", command=name, error=repr(exc), exc_info=exc)
        if isinstance(command, _REPORTED_FAILURES):
            gone = isinstance(exc, AriNotFound) or (
                isinstance(command, m.AddToBridge)
                and isinstance(exc, AriBadRequest | AriUnprocessable)
            )
            call.queue.put_nowait(m.CommandFailed(
                self._clock(), command, str(exc), gone, unanswered=isinstance(exc, AriNoAnswer)
            ))

    async def _do(self, call: _Call, cmd: m.Command) -> None:
        ari = self._ari
        match cmd:
            case m.Persist(fields=fields, durable=durable):
                await self._persist(call, durable=durable, **fields)
            case m.Answer(channel_id=channel_id):
                await ari.answer(channel_id)
                call.queue.put_nowait(m.Answered(self._clock()))
            case m.Play(channel_id=channel_id, media=media, playback_id=playback_id):
                self._own(call, self._by_playback, playback_id)
                await ari.play(channel_id, media, playback_id=playback_id)
                if playback_id == call.notice_playback:
                    self._waited(self.notice_wait, call.state.started_at, SLOW_NOTICE_S,
                                 "caller waited long for the notice")
            case m.Ring(channel_id=channel_id):
                await ari.ring(channel_id)
            case m.StopRing(channel_id=channel_id):
                await ari.ring_stop(channel_id)
            case m.StartMoh(channel_id=channel_id):
                await ari.start_moh(channel_id)
            case m.StopMoh(channel_id=channel_id):
                await ari.stop_moh(channel_id)
            case m.DialAgent(
                channel_id=channel_id, endpoint=endpoint, caller_channel_id=caller,
                timeout=timeout,
            ):
                self._own(call, self._by_channel, channel_id)
                self._in_stasis[channel_id] = asyncio.get_running_loop().create_future()
                self._dialling.add(channel_id)
                try:
                    made = await self._addressed(
                        call, caller,
                        lambda originator: ari.originate(
                            endpoint, channel_id=channel_id,
                            app_args=f"{AGENT_ARGS_PREFIX}{call.id}",
                            originator=originator, timeout=timeout,
                        ),
                    )
                    call.names[channel_id] = made.name
                finally:
                    self._dialling.discard(channel_id)
            case m.HangupChannel(channel_id=channel_id, reason=reason):
                task = asyncio.create_task(self._hangup_command(call, channel_id, reason))
                call.hangups.add(task)
                task.add_done_callback(call.hangups.discard)
            case m.CreateBridge(bridge_id=bridge_id):
                try:
                    await ari.create_bridge(bridge_id)
                except AriConflict:
                    # "already exists": the id is the call's own, so an earlier create of
                    # it that Asterisk did not answer in time was done after all
                    log.info("bridge made by an earlier, unanswered request", bridge_id=bridge_id)
            case m.AddToBridge(bridge_id=bridge_id, channel_id=channel_id):
                # an agent's answer may be heard (its Dial event) before its channel is in
                # our application
                await self._until_in_stasis(channel_id)
                await ari.add_channel(bridge_id, channel_id)
                if channel_id == call.state.winner:
                    self._waited(self.agent_join, call.state.answered_at, SLOW_JOIN_S,
                                 "agent waited long to be connected")
            case m.DestroyBridge(bridge_id=bridge_id):
                await ari.destroy_bridge(bridge_id)
            case m.SnoopChannel(channel_id=channel_id, snoop_id=snoop_id):
                self._own(call, self._by_channel, snoop_id)
                snoop = await self._addressed(
                    call, channel_id,
                    lambda spied: ari.snoop(
                        spied, snoop_id=snoop_id, app_args=f"{SNOOP_ARGS_PREFIX}{call.id}"
                    ),
                )
                call.names[snoop_id] = snoop.name
            case m.RecordChannel(channel_id=channel_id, name=name):
                self._own(call, self._by_recording, name)
                await ari.record_channel(channel_id, name, format="wav", if_exists="fail")
            case m.StopRecording(name=name):
                await ari.stop_recording(name)
            case m.ArchiveRecording(name=name, started_at=started_at):
                ok = await self._archive(call.id, name, started_at or self._clock())
                call.queue.put_nowait(m.RecordingArchived(self._clock(), name, ok))
            case m.StartTimer(name=name, seconds=seconds):
                self._start_timer(call, name, seconds)
            case m.CancelTimer(name=name):
                timer = call.timers.pop(name, None)
                if timer is not None:
                    timer.cancel()
            case m.MarkAgent(agent_id=agent_id, busy=busy, at=at):
                if busy:
                    self.tracker.busy(agent_id, at)
                else:
                    self.tracker.free(agent_id, at)
            case m.Log():
                pass  # logged with the transition
            case _:
                log.error("unknown command", command=type(cmd).__name__)

    def _waited(
        self, histogram: Histogram, since: datetime | None, slow: float, message: str
    ) -> None:
        if since is None:
            return
        seconds = (self._clock() - since).total_seconds()
        histogram.observe(seconds)
        if seconds > slow:
            log.warning(message, seconds=round(seconds, 3))

    def _no_longer_awaited(self, channel_id: str) -> None:
        """An agent leg entered our application, or ended: a bridge add waiting goes on."""
        ready = self._in_stasis.pop(channel_id, None)
        if ready is not None and not ready.done():
            ready.set_result(None)

    async def _until_in_stasis(self, channel_id: str) -> None:
        ready = self._in_stasis.get(channel_id)
        if ready is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(ready), STASIS_START_WAIT)
        except TimeoutError:
            log.warning("no StasisStart for an answered agent channel: going on anyway",
                        channel_id=channel_id)
        finally:
            self._in_stasis.pop(channel_id, None)

    async def _persist(self, call: _Call, *, durable: bool = True, **fields: Any) -> None:
        """Write columns of the call's row. The call's first write is waited for (its
        commit, not the disk flush unless `durable`): its row exists before anything else
        happens. Every later one goes to the call's writer and is not waited for: under load
        a commit can take seconds, and the flow (hanging up the other party, say) must not
        wait on it. Columns written while an earlier write is still under way are merged
        and written once (durable if any of them asked to be): under load the database gets
        fewer writes, not a growing queue of them. `durable=False` commits without waiting
        for the WAL flush."""
        if not call.row_started:
            call.row_started = True
            await self._write_row(call.id, durable=durable, urgent=True, fields=fields)
            return
        call.pending.update(fields)
        call.pending_durable = call.pending_durable or durable
        if call.writes is None or call.writes.done():
            call.writes = asyncio.create_task(self._write_pending(call))
            self._writes.add(call.writes)
            call.writes.add_done_callback(self._writes.discard)

    async def _addressed(
        self, call: _Call, channel_id: str, request: Callable[[str], Awaitable[_T]]
    ) -> _T:
        """`request` for one of the call's channels, addressed by its name where known.

        Where Asterisk looks a channel up by its id (the originate's `originator`, a snoop's
        channel, a hang-up) it scans every channel, locking each, while holding the channel
        list's one lock (Debian's build): in a 20 calls/s step such a scan took up to 1.4 s,
        and every channel being made, ended or looked up meanwhile waited. By name it is one
        hash lookup. A name Asterisk does not know (a channel renamed, or gone) gets the
        request again by id, which answers as before.
        """
        name = call.names.get(channel_id)
        if name is not None and name != channel_id:
            try:
                return await request(name)
            except (AriNotFound, AriBadRequest):
                pass  # the originate answers 400 for an originator it cannot find
        return await request(channel_id)

    async def _write_pending(self, call: _Call) -> None:
        while call.pending:
            fields, durable = call.pending, call.pending_durable
            call.pending, call.pending_durable = {}, False
            await self._write_row(call.id, durable=durable, fields=fields)

    async def _hangup_command(self, call: _Call, channel_id: str, reason: str) -> None:
        try:
            await self._addressed(call, channel_id, lambda c: self._ari.hangup(c, reason))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._command_failed(call, m.HangupChannel(channel_id, reason), exc)

    async def _write_row(
        self, call_id: uuid.UUID, *, durable: bool, fields: dict[str, Any], urgent: bool = False
    ) -> None:
        try:
            await self._store.record_call(call_id, durable=durable, urgent=urgent, **fields)
        except asyncio.CancelledError:
            raise
        except Exception:
            # the store journals a dead database itself; anything else is a bug to see
            log.exception("call row not written", columns=sorted(fields))

    async def _archive(self, call_id: uuid.UUID, name: str, started_at: datetime) -> bool:
        try:
            result = await self._archiver.archive(self._ari, call_id, name, started_at)
        except asyncio.CancelledError:
            raise
        except CallPurged:
            return False  # the archive discarded it and said so
        except Exception:
            log.exception("recording not archived", recording=name)
            return False
        if result is None:
            log.warning("Asterisk has no such recording", recording=name)
            return False
        return True

    def _start_timer(self, call: _Call, name: str, seconds: float) -> None:
        old = call.timers.pop(name, None)
        if old is not None:
            old.cancel()
        call.timers[name] = asyncio.get_running_loop().call_later(
            seconds, self._timer_fired, call, name)

    def _timer_fired(self, call: _Call, name: str) -> None:
        call.timers.pop(name, None)
        call.queue.put_nowait(m.TimerFired(self._clock(), name))

    async def _hangup_quietly(self, channel_id: str, reason: str) -> None:
        try:
            await self._ari.hangup(channel_id, reason)
        except AriNotFound:
            pass
        except AriError as exc:
            log.warning("hangup failed", channel_id=channel_id, error=str(exc))

    async def _destroy_bridge_quietly(self, bridge_id: str) -> None:
        try:
            await self._ari.destroy_bridge(bridge_id)
        except AriNotFound:
            pass
        except AriError as exc:
            log.warning("bridge not destroyed", bridge_id=bridge_id, error=str(exc))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self._closed:
            coro.close()
            return
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- handing calls back to the dialplan -------------------------------------------------

    async def _hand_back_waiting(self, state: m.CallState) -> None:
        with structlog.contextvars.bound_contextvars(call_id=str(state.call_id)):
            # the row first: Asterisk may not answer the requests below before close() gives
            # up on them; the last write carries the whole row, as the machine's own end does
            end = {"ended_at": self._clock(), "end_reason": "interrupted", "state": "done"}
            await self._write_row(state.call_id, durable=True, fields={**state.row, **end})
            legs = [leg.channel_id for leg in state.legs if leg.live]
            if state.snoop_channel is not None:
                legs.append(state.snoop_channel)  # the unrecorded snoop waiting for an answer
            try:
                if not (state.caller_gone or state.caller_hung_up):
                    await self._hand_back(state.caller_channel, legs)
                if state.bridge_id is not None:  # made while ringing
                    await self._destroy_bridge_quietly(state.bridge_id)
            except Exception:  # the ARI client closing under it, say: the row is written
                log.exception("hand-back to the dialplan not finished")

    async def _hand_back(self, caller: str, channels: Iterable[str]) -> None:
        """Hang up our agent legs (and snoop) and send the caller on in the dialplan (the agents
        rung directly, unrecorded); a caller the dialplan cannot take is hung up."""
        for channel_id in channels:
            await self._hangup_quietly(channel_id, "normal")
        try:
            await self._ari.continue_in_dialplan(caller, label=HANDBACK_LABEL)
        except AriNotFound:
            return
        except AriError as exc:
            log.warning("call not handed back to the dialplan: hung up", error=str(exc))
            await self._hangup_quietly(caller, "normal")
            return
        log.info("call handed back to the dialplan", label=HANDBACK_LABEL)

    # -- reconciliation -------------------------------------------------------------------

    async def _reconcile(self) -> None:
        await self._read_agent_history()
        started = await self._ari.asterisk_started_at()
        restarted = self._asterisk_started is not None and started > self._asterisk_started
        self._asterisk_started = started
        # Channels of our application, as of before the list is asked for: an agent leg whose
        # dial is under way (or starts meanwhile) may be missing from the list without being
        # gone; once dialled it is listed, ringing or not.
        made = self._by_channel.keys() - self._dialling
        app = await self._ari.get_application()
        live = set(app.channel_ids)
        now = self._clock()
        # Calls of this run: tell them what happened to their channels while events were lost.
        # After a restart of Asterisk they were cut when its events stopped, by nobody.
        gone_at = now
        if restarted:
            log.warning("Asterisk restarted: calls still open were cut",
                        asterisk_started=started.isoformat())
            gone_at = min(self._lost_contact_at or now, now)
        for call in list(self._calls.values()):
            for channel_id in list(m.live_channels(call.state)):
                if channel_id not in made:
                    continue  # the create's own outcome tells the call
                if channel_id not in live:
                    self._channel_gone(channel_id, None, gone_at, cut=restarted)
                    continue
                leg = call.state.leg(channel_id)
                if leg is not None and leg.status is m.LegStatus.DIALLING:
                    await self._check_answered(call, channel_id, now)
            if restarted and call.state.recording_name:
                # the Asterisk that recorded it is gone, its file final: nobody will report
                # the end (the call would wait out its finish guard for nothing)
                call.queue.put_nowait(m.RecordingFinished(gone_at, call.state.recording_name))
        # Calls of an earlier run.
        try:
            rows = await self._store.open_calls()
        except Exception:
            log.exception("open calls not readable: reconciliation of earlier calls skipped")
            rows = []
        for row in rows:
            try:
                await self._adopt(row, live, set(app.bridge_ids), now, started)
            except AriError:
                raise
            except Exception:
                log.exception("open call not reconciled", row_id=str(row.get("id")))
        claimed = set(self._by_channel)
        for channel_id in live - claimed:
            self._spawn(self._orphan_channel(channel_id, now))
        await self._sweep_recordings({uuid.UUID(str(r["id"])): r for r in rows})

    async def _read_agent_history(self) -> None:
        """Once per run: who answered and who went idle before this run, from the archive
        (tried again at the next reconciliation while the database is away)."""
        if self._history_read:
            return
        try:
            rows = await self._store.agent_history(self._born - AGENT_HISTORY)
        except Exception as exc:
            log.warning("agent history not readable: the turns start afresh for now",
                        error=repr(exc))
            return
        for row in rows:
            answered, ended = row.get("last_answered"), row.get("last_ended")
            self.tracker.remember(
                str(row["agent_id"]),
                answered=answered if isinstance(answered, datetime) else None,
                idle_since=ended if isinstance(ended, datetime) else None,
            )
        self._history_read = True
        log.info("agent history read", agents=len(rows))

    async def _check_answered(self, call: _Call, channel_id: str, now: datetime) -> None:
        try:
            channel = await self._ari.get_channel(channel_id)
        except AriNotFound:
            self._channel_gone(channel_id, None, now)
            return
        if channel.state == "Up":
            call.queue.put_nowait(m.AgentAnswered(now, channel_id))

    async def _adopt(
        self, row: CallRow, live: set[str], bridges: set[str], now: datetime,
        asterisk_started: datetime,
    ) -> None:
        call_id = uuid.UUID(str(row["id"]))
        started_at = row.get("started_at")
        if call_id in self._calls or not isinstance(started_at, datetime):
            return
        if started_at >= self._born:
            return  # one of ours that has just ended; its row is being closed
        caller = row.get("caller_channel_id") or ""
        agent_channel = row.get("agent_channel_id") or ""
        phase = row.get("state")
        bound = structlog.contextvars.bound_contextvars(call_id=str(call_id))
        with bound:
            if phase in ("conversation", "connecting") and caller and agent_channel:
                self._resume(row, call_id, started_at, caller, agent_channel, live, bridges, now,
                             cut=asterisk_started > started_at)
                return
            legs = [c for c in self._leg_ids(call_id, caller, agent_channel) if c in live]
            if phase in _WAITING_STATES and caller in live:
                await self._hand_back(caller, [c for c in legs if c != caller])
                legs = []
            for channel_id in legs:
                await self._hangup_quietly(channel_id, "normal")
            bridge = row.get("bridge_id")  # made while ringing; nobody will use it now
            if bridge and bridge in bridges:
                await self._destroy_bridge_quietly(str(bridge))
            reason = row.get("end_reason") or "interrupted"
            await self._store.record_call(call_id, ended_at=now, end_reason=reason, state="done")
            log.info("call of an earlier run closed", previous_state=phase, end_reason=reason)

    def _leg_ids(self, call_id: uuid.UUID, caller: str, agent_channel: str) -> Iterable[str]:
        if caller:
            yield caller
        if agent_channel:
            yield agent_channel
        yield m.snoop_id_for(call_id)
        for attempt in range(1, MAX_LEGS_SEARCHED + 1):
            yield m.agent_channel_id(call_id, attempt)

    def _resume(
        self,
        row: CallRow,
        call_id: uuid.UUID,
        started_at: datetime,
        caller: str,
        agent_channel: str,
        live: set[str],
        bridges: set[str],
        now: datetime,
        *,
        cut: bool,
    ) -> None:
        """`cut`: Asterisk started after this call did, so whatever of it is gone was cut."""
        agent = m.AgentTarget(
            str(row.get("agent_id") or ""),
            str(row.get("agent_endpoint") or ""),
            str(row.get("agent_name") or ""),
        )
        recording = row.get("recording_name") or None
        bridge_id = row.get("bridge_id") or None
        state = m.resumed_conversation(
            call_id=call_id,
            caller_channel=caller,
            agent=agent,
            agent_channel=agent_channel,
            bridge_id=bridge_id,
            recording_name=recording,
            started_at=started_at,
            answered_at=row.get("answered_at"),
        )
        call = self._add_call(state, str(row.get("service_number") or ""))
        self._own(call, self._by_channel, agent_channel)
        if state.snoop_channel is not None:
            self._own(call, self._by_channel, state.snoop_channel)
        if recording:
            self._own(call, self._by_recording, recording)
        if agent.id:
            # the agent is in this call (the tracker of this run never saw it start); the
            # call's end frees the agent again
            answered = row.get("answered_at")
            self.tracker.busy(agent.id, answered if isinstance(answered, datetime) else now)
        caller_live, agent_live = caller in live, agent_channel in live
        if row.get("state") == "connecting":
            # the agent was never added: this conversation did not start
            call.queue.put_nowait(m.EndCall(now, "interrupted"))
        elif caller_live and agent_live and bridge_id in bridges:
            log.info("call of an earlier run resumed in conversation")
        else:
            call.queue.put_nowait(m.EndCall(now, "interrupted" if cut else "completed"))
        if recording and not caller_live:
            # the recorded snoop hangs on the caller's channel: with the caller gone it has
            # stopped already
            call.queue.put_nowait(m.RecordingFinished(now, recording))
        self._start(call)

    async def _orphan_channel(self, channel_id: str, now: datetime) -> None:
        try:
            channel = await self._ari.get_channel(channel_id)
        except AriError:
            return
        if channel_id in self._by_channel:
            return
        created = channel.creationtime
        if created is not None and now - created < ORPHAN_MIN_AGE:
            return
        log.warning(
            "channel in our application belongs to no call: hung up",
            channel_id=channel_id,
            channel_name=channel.name,
        )
        await self._hangup_quietly(channel_id, "normal")

    async def _sweep_recordings(self, open_rows: dict[uuid.UUID, CallRow]) -> None:
        """Archive recordings left in Asterisk's spool by calls no task of ours is running."""
        for stored in await self._ari.list_stored_recordings():
            call_id = m.call_id_from_recording(stored.name)
            if call_id is None:
                continue  # not ours
            if call_id in self._calls:
                continue  # its call archives it
            row = open_rows.get(call_id) or await self._find_row(call_id)
            if row is None and await self._purged(call_id):
                # deleted by retention or an erasure before its recording was archived: the
                # archive discards it, Asterisk's copy too
                row = {"started_at": self._clock()}
            if row is None:
                log.warning("recording of an unknown call left in Asterisk", recording=stored.name)
                continue
            started_at = row.get("started_at")
            when = started_at if isinstance(started_at, datetime) else self._clock()
            self._spawn(self._archive_orphan(call_id, stored.name, when))

    async def _archive_orphan(self, call_id: uuid.UUID, name: str, started_at: datetime) -> None:
        with structlog.contextvars.bound_contextvars(call_id=str(call_id)):
            if await self._archive(call_id, name, started_at):
                log.info("recording of an earlier run archived", recording=name)

    async def _purged(self, call_id: uuid.UUID) -> bool:
        try:
            return await self._store.was_purged(call_id)
        except Exception:
            log.exception("purges not readable", row_id=str(call_id))
            return False

    async def _find_row(self, call_id: uuid.UUID) -> CallRow | None:
        try:
            return await self._store.get_call(call_id)
        except Exception:
            log.exception("call row not readable", row_id=str(call_id))
            return None


async def _finish_or_cancel(tasks: list[asyncio.Task[Any]], within: float) -> None:
    """Wait up to `within` seconds for the tasks, then cancel those left and await them all: none
    may outlive the close (the ARI client and the store close next)."""
    _, pending = await asyncio.wait(tasks, timeout=within)
    for task in pending:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            log.error("shutdown work failed", error=repr(result))


def _last_before_barriers(things: list[frozenset[str] | None]) -> set[int]:
    """Indexes of the requests (commands touching something) that are the last before the
    end or a barrier (None): nothing can start alongside them."""
    found: set[int] = set()
    latest: int | None = None
    for i, touched in enumerate([*things, None]):
        if touched is None:
            if latest is not None:
                found.add(latest)
            latest = None
        elif touched:
            latest = i
    return found
