"""The capacity step search and the latency pairing of ARI events (pure logic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import steps
from bench.observer import latencies, parse_ts


def step(rate: float, offered: int, completed: int, archived: int) -> steps.StepResult:
    return steps.StepResult(rate, offered, completed, archived, peak_concurrent=offered)


def test_a_step_passes_only_when_every_call_completed_and_was_archived() -> None:
    assert step(1, 10, 10, 10).ok
    assert not step(1, 10, 9, 9).ok  # a call failed
    assert not step(1, 10, 10, 9).ok  # a call was lost
    assert not step(1, 0, 0, 0).ok  # nothing ran


class Load:
    """A machine that carries every rate up to `ceiling`; remembers the rates tried."""

    def __init__(self, ceiling: float) -> None:
        self.ceiling = ceiling
        self.tried: list[float] = []

    def __call__(self, rate: float) -> steps.StepResult:
        self.tried.append(rate)
        good = rate <= self.ceiling
        return step(rate, 10, 10 if good else 8, 10 if good else 9)


def test_search_narrows_the_gap_after_the_first_failure() -> None:
    load = Load(7)
    result = steps.search(steps.Plan([2, 4, 6, 8, 10], max_rate=10, refine=2), load)
    assert load.tried == [2, 4, 6, 8, 7]  # 7 passes; the gap to 8 is then no wider than 1
    assert result.best_rate == 7
    assert result.best_concurrent == 10
    assert not steps.hit_ceiling(result)


def test_refining_stops_after_its_steps() -> None:
    load = Load(4.5)
    result = steps.search(steps.Plan([8, 16], max_rate=16, refine=1), load)
    assert load.tried == [8, 4]  # 8 failed at once; the one refining step found 4
    assert result.best_rate == 4
    more = steps.search(steps.Plan([8, 16], max_rate=16, refine=3), load)
    assert more.best_rate == 4  # 6 fails, 5 fails: 4 stays the best
    assert load.tried[2:] == [8, 4, 6, 5]


def test_search_goes_past_the_rates_until_a_step_fails() -> None:
    load = Load(11)
    result = steps.search(steps.Plan([2, 4], max_rate=20, refine=0), load)
    assert load.tried == [2, 4, 6, 8, 10, 12]
    assert result.best_rate == 10


def test_search_that_never_fails_says_the_ceiling_is_higher() -> None:
    result = steps.search(steps.Plan([1, 2], max_rate=3), lambda r: step(r, 5, 5, 5))
    assert result.best_rate == 3
    assert steps.hit_ceiling(result)


def test_plan_wants_increasing_rates_and_room_above_them() -> None:
    with pytest.raises(ValueError, match="increasing"):
        steps.Plan([2, 1], max_rate=4)
    with pytest.raises(ValueError, match="increasing"):
        steps.Plan([], max_rate=4)
    with pytest.raises(ValueError, match="max_rate"):
        steps.Plan([2, 4], max_rate=3)


def test_best_ignores_a_pass_above_a_failure() -> None:
    s = steps.Search([step(1, 5, 5, 5), step(3, 5, 4, 4), step(2, 5, 5, 5), step(4, 5, 5, 5)])
    assert s.best_rate == 2
    assert s.first_failure == 3


def test_ratio() -> None:
    app = steps.Search([step(2, 5, 5, 5), step(4, 5, 5, 5)])
    base = steps.Search([step(2, 5, 5, 5), step(4, 5, 5, 5), step(6, 5, 5, 5)])
    assert steps.ratio(app, base) == pytest.approx(4 / 6)
    assert steps.ratio(app, steps.Search([step(2, 5, 4, 4)])) is None


def ev(kind: str, ts: str, **fields: object) -> dict[str, object]:
    return {"type": kind, "timestamp": f"2026-11-28T10:00:{ts}+0000", **fields}


def test_latencies_pair_each_channel_with_its_own_events() -> None:
    events = [
        ev("ChannelDialplan", "00.000", channel={"id": "c1"}, dialplan_app="Stasis",
           dialplan_app_data="callrec,0103808000"),
        ev("ChannelStateChange", "00.005", channel={"id": "c1", "state": "Up"}),
        ev("ChannelDialplan", "00.010", channel={"id": "c2"}, dialplan_app="Stasis",
           dialplan_app_data="callrec,0103808000"),
        ev("PlaybackStarted", "00.030", playback={"target_uri": "channel:c2"}),
        ev("PlaybackStarted", "00.012", playback={"target_uri": "channel:c1"}),
        ev("PlaybackStarted", "00.500", playback={"target_uri": "channel:c1"}),  # 2nd prompt
        ev("ChannelDialplan", "04.000", channel={"id": "a1"}, dialplan_app="Stasis",
           dialplan_app_data="callrec,agent:5fa9e500"),
        ev("ChannelStateChange", "05.000", channel={"id": "a1", "state": "Up"}),
        ev("ChannelEnteredBridge", "05.001", channel={"id": "c1"}),  # the caller: not a join
        ev("ChannelEnteredBridge", "05.007", channel={"id": "a1"}),
        ev("ChannelDialplan", "06.000", channel={"id": "x"}, dialplan_app="Stasis",
           dialplan_app_data="otherapp,1"),
        ev("PlaybackStarted", "06.100", playback={"target_uri": "channel:x"}),
    ]
    lat = latencies(events)
    assert lat.notice_ms == [pytest.approx(20.0), pytest.approx(12.0)]
    assert lat.join_ms == [pytest.approx(7.0)]


def test_parse_ts_is_aware() -> None:
    assert parse_ts("2026-11-28T19:44:11.538+0000").utcoffset() is not None


def test_load_shape() -> None:
    from bench.capacity import LoadShape

    shape = LoadShape(conversation=20, window=25)
    assert shape.calls(4) == 100
    assert shape.calls(0.01) == 1  # never an empty step
    assert shape.caller_talk > shape.conversation  # the caller also hears notice and ringing


def test_cdr_count_takes_only_digits() -> None:
    from pathlib import Path

    from bench.baseline import cdr_count, shortest_conversation
    from devstack.postgres import Postgres

    pg = Postgres(Path("/nonexistent"), 1, "x" * 8, "y" * 8)
    with pytest.raises(ValueError, match="digits"):
        cdr_count(pg, "0409' OR 1=1 --", "0409000009", 10)
    with pytest.raises(ValueError, match="digits"):
        shortest_conversation(pg, "0409000000", "0409' OR 1=1 --")


def test_the_baselines_record_carries_the_conversation_not_the_callers_answer() -> None:
    # billsec (and Dial's ANSWEREDTIME) run from the caller's Answer() before the notice: a
    # caller kept waiting for the agent passed the floor callrec's calls are held to
    from bench.baseline import OVERLAY

    dialplan = (OVERLAY / "extensions.conf").read_text()
    assert "U(agent-answered)" in dialplan
    assert "Set(MASTER_CHANNEL(AGENT_UP)=" in dialplan
    assert "exten => h,1,Set(CDR(userfield)=" in dialplan
    modules = (OVERLAY / "modules.extra").read_text()
    for module in ("app_stack.so", "func_cdr.so", "func_math.so"):
        assert f"load => {module}" in modules


def test_each_capacity_step_but_the_first_starts_after_a_quiet_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a step right after the other target's heavier one ran into its aftermath
    from bench import capacity as cap

    ran: list[tuple[str, float]] = []
    events: list[str] = []

    def run_step(target: cap.Target, rate: float, shape: cap.LoadShape) -> cap.StepRun:
        ran.append((target.name, rate))
        events.append(f"{target.name} {rate:g}")
        n = int(rate * 10)
        return cap.StepRun(steps.StepResult(rate, n, n, n if rate < 8 else 0, n), 0.0, 0.0, 1.0)

    monkeypatch.setattr(cap, "run_step", run_step)
    targets = [cap.Target(name, 5060, lambda: None, lambda: None, lambda *a: (0, ""))
               for name in ("baseline", "callrec")]
    shape = cap.LoadShape(pause=60.0)
    cap.interleaved_search(targets, steps.Plan([4, 8], max_rate=8, refine=0), shape,
                           say=lambda text: None,
                           pause=lambda seconds: events.append(f"pause {seconds:g}"))
    assert ran == [("baseline", 4), ("callrec", 4), ("baseline", 8), ("callrec", 8)]
    assert events == ["baseline 4", "pause 60", "callrec 4", "pause 60", "baseline 8",
                      "pause 60", "callrec 8"]


def test_a_sipp_standing_still_is_the_longest_gap_between_its_statistics_rows(
    tmp_path: Path,
) -> None:
    from bench.load import LoadAgent, longest_gap

    assert longest_gap([], 0) == 0
    assert longest_gap([10.0], 0) == 0
    assert longest_gap([10.0, 11.0, 18.5, 19.4], 0) == 7.5
    assert longest_gap([10.0, 17.0, 18.0, 19.0], 17.5) == 1.0  # the stall came before
    assert longest_gap([10.0, 17.0, 18.0], 16.0) == 7.0  # a row written since ends a gap
    # SIPp's own format: CurrentTime is "date<TAB>time<TAB>epoch"; a row cut short is skipped
    head = "StartTime;LastResetTime;CurrentTime;ElapsedTime(P)\n"
    rows = "".join(f"x;x;2026-12-01\t01:31:{s:02d}.0\t{1796088600 + s}.25;00:00:01\n"
                   for s in (0, 1, 2, 8, 9))
    agent = LoadAgent(workdir=tmp_path)
    agent.stats_path.write_text(head + rows + "x;x;2026-12-01\t01:31")
    assert agent.stood_still(1796088600) == 6.0
    assert agent.stood_still(1796088609) == 1.0
    assert LoadAgent(workdir=tmp_path / "none").stood_still(0) == 0  # no statistics yet


def test_a_step_failed_while_its_sipp_stood_still_is_run_again_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bench import capacity as cap

    stalls = {("callrec", 8): [7.0, 7.0], ("baseline", 8): [7.0, 0.0], ("callrec", 4): [9.0]}
    ran: list[tuple[str, float]] = []

    def run_step(target: cap.Target, rate: float, shape: cap.LoadShape) -> cap.StepRun:
        ran.append((target.name, rate))
        stall = stalls.get((target.name, rate), [0.0]).pop(0)
        n = int(rate * 10)
        good = rate < 8 or (target.name == "baseline" and stall == 0)
        return cap.StepRun(steps.StepResult(rate, n, n, n if good else n - 1, n), 0.0, 0.0,
                           1.0, stood_still_s=stall)

    monkeypatch.setattr(cap, "run_step", run_step)
    targets = [cap.Target(name, 5060, lambda: None, lambda: None, lambda *a: (0, ""))
               for name in ("baseline", "callrec")]
    said: list[str] = []
    found = cap.interleaved_search(targets, steps.Plan([4, 8], max_rate=8, refine=0),
                                   cap.LoadShape(pause=0), say=said.append)
    # callrec's 4 stood still but passed: kept. The baseline's 8 failed standing still, and
    # passed when run again; callrec's 8 failed both times: the second counts
    assert ran == [("baseline", 4), ("callrec", 4), ("baseline", 8), ("baseline", 8),
                   ("callrec", 8), ("callrec", 8)]
    base, app = found["baseline"][0], found["callrec"][0]
    assert [s.ok for s in base.steps] == [True, True] and base.best_rate == 8
    assert [s.rate for s in base.void] == [8]
    assert [s.ok for s in app.steps] == [True, False] and app.best_rate == 4
    assert [s.rate for s in app.void] == [8]
    assert len(found["callrec"][1]) == 2  # the void run's CPU is not counted either
    assert sum("void (SIPp stood still 7.0 s)" in line for line in said) == 2
