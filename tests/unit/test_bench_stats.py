"""Pure parts of the benchmarks: percentiles, CPU accounting from /proc, profile summaries."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import cpu, profile, report
from bench.stats import bucket_quantile, percentile, summarize


def test_percentile_nearest_rank_is_a_sample() -> None:
    samples = [float(i) for i in range(1, 101)]  # 1..100
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile(samples, 0) == 1.0


def test_percentile_small_sets_and_order() -> None:
    assert percentile([30.0, 10.0, 20.0], 50) == 20.0
    assert percentile([30.0, 10.0, 20.0], 99) == 30.0  # 3 samples: the p99 is the max
    assert percentile([5.0], 99) == 5.0


def test_percentile_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1),
       st.floats(min_value=0, max_value=100))
def test_percentile_properties(samples: list[float], p: float) -> None:
    value = percentile(samples, p)
    assert value in samples
    below = sum(1 for s in samples if s <= value)
    assert below / len(samples) >= p / 100  # at least p % of samples are at or below it


def test_summary_orders_its_figures() -> None:
    s = summarize([float(x) for x in range(200)])
    assert s.count == 200
    assert s.p50 <= s.p95 <= s.p99 <= s.max == 199.0


def test_parse_stat_counts_user_and_system_ticks() -> None:
    # a command name with spaces and a ')' must not shift the fields
    fields = ["S", "1", "1", "1", "0", "-1", "4194560", "10", "0", "0", "0", "250", "50"]
    text = f"1234 (odd) name) {' '.join(fields)} 0 0 20 0 4 0 100"
    assert cpu.parse_stat(text) == pytest.approx(300 / cpu.CLOCK_TICKS)


def test_parse_stat_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="not a /proc"):
        cpu.parse_stat("nothing here")


def test_cpu_seconds_of_this_process_grow_with_work() -> None:
    before = cpu.cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert cpu.cpu_seconds(os.getpid()) - before >= 0.2


def test_cpu_seconds_from_a_fake_proc(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text(
        "42 (python) S 1 1 1 0 -1 0 0 0 0 0 500 100 0 0 20 0 1 0 5\n")
    assert cpu.cpu_seconds(42, proc=tmp_path) == pytest.approx(600 / cpu.CLOCK_TICKS)


def test_share_per_call() -> None:
    s = cpu.share(100, app=(10.0, 11.0), asterisk=(50.0, 70.0))
    assert s.app_per_call == pytest.approx(0.01)
    assert s.asterisk_per_call == pytest.approx(0.2)
    assert s.share == pytest.approx(0.05)


def test_share_refuses_a_restarted_process_or_no_calls() -> None:
    with pytest.raises(ValueError, match="backwards"):
        cpu.share(10, app=(5.0, 1.0), asterisk=(0.0, 1.0))
    with pytest.raises(ValueError, match="no calls"):
        cpu.share(0, app=(0.0, 1.0), asterisk=(0.0, 1.0))
    with pytest.raises(ValueError, match="no measurable"):
        _ = cpu.share(1, app=(0.0, 1.0), asterisk=(1.0, 1.0)).share


def test_asterisk_cpu_is_compared_at_the_rates_both_targets_passed() -> None:
    # per call Asterisk's CPU falls as the rate rises: the baseline's 16 calls/s step must
    # not lower its side of the comparison when callrec passed only up to 8
    callrec = [cpu.Step(4, 100, 20.0), cpu.Step(8, 200, 30.0), cpu.Step(10, 250, 40.0)]
    baseline = [cpu.Step(4, 100, 19.0), cpu.Step(8, 200, 29.0), cpu.Step(16, 400, 40.0)]
    m = cpu.matched(callrec, baseline)
    assert m is not None
    assert m.rates == (4, 8)
    assert m.callrec_per_call == pytest.approx(50.0 / 300)
    assert m.baseline_per_call == pytest.approx(48.0 / 300)
    assert m.ratio == pytest.approx(50.0 / 48.0)  # over each one's own steps: 1.3


def test_no_common_rate_means_no_comparison() -> None:
    assert cpu.matched([cpu.Step(4, 100, 20.0)], [cpu.Step(8, 200, 30.0)]) is None
    assert cpu.matched([], [cpu.Step(8, 200, 30.0)]) is None
    with pytest.raises(ValueError, match="no calls"):
        cpu.matched([cpu.Step(4, 0, 1.0)], [cpu.Step(4, 0, 1.0)])


def test_profile_collapsed_totals() -> None:
    text = ("main (a.py:1);run (callrec/calls/manager.py:10);select (selectors.py:5) 70\n"
            "main (a.py:1);run (callrec/calls/manager.py:10);_apply (callrec/x.py:3) 30\n"
            "garbage line\n")
    total, own, inclusive = profile.collapsed_totals(text)
    assert total == 100
    assert own["select (selectors.py:5)"] == 70
    assert inclusive["run (callrec/calls/manager.py:10)"] == 100
    s = profile.summary(text)
    assert s["samples"] == 100
    assert s["idle_pct"] == 70.0
    assert ("run (callrec/calls/manager.py:10)", 100.0) in s["callrec_inclusive_pct"]


def test_report_verdicts_and_table() -> None:
    assert report.verdict("capacity_ratio", 0.96) == "met"
    assert report.verdict("capacity_ratio", 0.5) == "NOT met"
    assert report.verdict("join_p99_ms", 50.0) == "NOT met"  # strictly below the goal
    assert report.verdict("cpu_share", None) == "not measured"
    text = report.table({"capacity_ratio": 1.0, "purge_per_s": 2500.0})
    assert "capacity_ratio" in text and "met" in text and "2,500.0" in text


BOUNDS = (0.001, 0.01, 0.1, math.inf)


def readings(*counts: int) -> list[tuple[float, int]]:
    return list(zip(BOUNDS, counts, strict=True))


def test_bucket_quantile_of_the_counts_between_two_readings() -> None:
    before = readings(10, 10, 10, 10)
    # 100 observations in between: 90 under 1 ms, 9 under 10 ms, 1 under 100 ms
    after = readings(100, 109, 110, 110)
    assert bucket_quantile(before, after, 0.5) == 0.001
    assert bucket_quantile(before, after, 0.9) == 0.001
    assert bucket_quantile(before, after, 0.99) == 0.01
    assert bucket_quantile(before, after, 1.0) == 0.1
    # what was counted before the first reading does not count
    assert bucket_quantile(readings(0, 0, 0, 0), after, 0.99) == 0.01
    assert bucket_quantile(readings(0, 0, 0, 0), readings(0, 0, 0, 5), 0.5) == math.inf
    assert bucket_quantile(after, after, 0.99) is None


def test_bucket_quantile_refuses_what_is_not_one_histogram() -> None:
    with pytest.raises(ValueError, match="outside"):
        bucket_quantile(readings(0, 0, 0, 0), readings(1, 1, 1, 1), 0)
    with pytest.raises(ValueError, match="different buckets"):
        bucket_quantile(readings(0, 0, 0, 0), [(0.5, 1), (math.inf, 1)], 0.5)
    with pytest.raises(ValueError, match="restarted"):
        bucket_quantile(readings(5, 5, 5, 5), readings(1, 2, 2, 2), 0.5)


def test_main_thread_sched_from_a_fake_proc(tmp_path: Path) -> None:
    task = tmp_path / "42" / "task" / "42"
    task.mkdir(parents=True)
    (task / "schedstat").write_text("3260000000 11040000000 27601\n")
    assert cpu.main_thread_sched(42, proc=tmp_path) == (3.26, 11.04)
    (task / "schedstat").write_text("garbage\n")
    with pytest.raises(ValueError, match="schedstat"):
        cpu.main_thread_sched(42, proc=tmp_path)


def test_main_thread_sched_of_this_process_grows_with_work() -> None:
    ran0, _ = cpu.main_thread_sched(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    ran1, _ = cpu.main_thread_sched(os.getpid())
    assert ran1 - ran0 >= 0.04


def test_every_figure_has_its_key_in_the_results_even_unmeasured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A target that passed no step left `cpu_share` out of the file altogether."""
    import json

    from bench import __main__ as bench_main
    from bench import report

    monkeypatch.setattr(report, "RESULTS", tmp_path)
    assert bench_main.main(["--skip-calls", "--skip-archive", "--out", "t.json"]) == 0
    written = json.loads((tmp_path / "t.json").read_text())
    assert {k: written[k] for k in report.GOALS} == dict.fromkeys(report.GOALS)
    assert "not measured" in capsys.readouterr().out
