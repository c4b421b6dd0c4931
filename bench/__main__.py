"""`python -m bench`: every benchmark, a table, and bench/results/latest.json."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from bench import capacity as cap
from bench import cpu, profile, report, steps, taskqueue
from bench.archive import ArchiveShape
from bench.archive import run as run_archive
from bench.baseline import baseline_instance
from bench.stacks import RTP_PORTS, notice_file, rtp_block, running_stack
from callrec.loop_lag import LAG_BUCKETS
from devstack.proc import read_pid


def say(text: str) -> None:
    print(text, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--calls", type=int, default=5_000_000,
                   help="synthetic calls in the archive benchmark (default 5,000,000)")
    p.add_argument("--purge", type=int, default=20_000,
                   help="calls past retention, with real files, purged (default 20,000)")
    p.add_argument("--rates", default="4,8,12,16,20,24",
                   help="call rates (calls/s) of the capacity steps (default 4,8,12,16,20,24)")
    p.add_argument("--max-rate", type=float, default=40.0,
                   help="past --rates, a target that passes every step goes on up by the last "
                        "increment to this rate (default 40; the stacks have RTP "
                        "ports for about 1,000 calls)")
    p.add_argument("--refine", type=int, default=2,
                   help="steps after a target's first failure that halve the gap to its best "
                        "pass (default 2)")
    p.add_argument("--window", type=float, default=25.0,
                   help="seconds new calls arrive in each capacity step (default 25)")
    p.add_argument("--conversation", type=float, default=20.0,
                   help="seconds of conversation per call (default 20)")
    p.add_argument("--pause", type=float, default=60.0,
                   help="seconds of quiet before each capacity step but the first, so that a "
                        "step does not run into the last one's aftermath (default 60)")
    p.add_argument("--latency-at", default="10,100",
                   help="concurrent calls of the latency runs (default 10,100)")
    p.add_argument("--skip-calls", action="store_true", help="archive benchmark only")
    p.add_argument("--skip-archive", action="store_true", help="call benchmarks only")
    p.add_argument("--out", default="latest.json", help="file name under bench/results/")
    return p.parse_args(argv)


def run_calls(args: argparse.Namespace, results: dict[str, Any]) -> None:
    plan = steps.Plan([float(r) for r in args.rates.split(",")], max_rate=args.max_rate,
                      refine=args.refine)
    shape = cap.LoadShape(conversation=args.conversation, window=args.window, pause=args.pause)
    with running_stack() as stack:
        start = rtp_block()
        base = baseline_instance(stack.root, stack.pg, stack.cfg.dir / "baseline",
                                 notice_file(stack), start, start + RTP_PORTS - 1)
        base.start()
        agents = []
        try:
            agents.append(cap.start_agent(stack.agent_ports["agent1"]))
            agents.append(cap.start_agent(int(base.values["AGENT1_PORT"])))
            ast_pid, app_pid = cap.pids(stack)
            numbers = 900_000
            latency: dict[str, Any] = {}
            sizes = [int(x) for x in args.latency_at.split(",")]
            for n in sizes:
                say(f"latency: {n} concurrent calls to callrec")
                latency[str(n)] = asyncio.run(cap.measure_latency(stack, n, 5.0, numbers))
                numbers += n
                say(f"  {latency[str(n)]}")
            results["latency"] = latency
            high = latency[max(latency, key=int)]
            results["notice_p99_ms"] = (high["notice_ms"] or {}).get("p99")
            results["join_p99_ms"] = (high["join_ms"] or {}).get("p99")
            # the profile in a run of its own: a sampler on the service takes CPU from it,
            # which the latencies above must not pay
            pid = app_pid()
            if pid is not None:
                import threading

                say(f"profile: {max(sizes)} concurrent calls, py-spy on the service")
                prof_out = stack.cfg.dir / "profile.txt"
                spy = threading.Thread(target=profile.record, args=(pid, 25, prof_out))
                spy.start()
                asyncio.run(cap.measure_latency(stack, max(sizes), 5.0, numbers))
                numbers += max(sizes)
                spy.join()
                if prof_out.exists():
                    results["profile"] = profile.summary(prof_out.read_text())

            say(f"capacity: rates {list(plan.rates)} calls/s (then up to {plan.max_rate:g} and "
                f"{plan.refine} refining steps), {args.conversation:g} s conversations")
            targets = [
                cap.Target("baseline", int(base.values["SIP_PORT"]),
                           lambda: read_pid(base.pidfile), lambda: None,
                           cap.baseline_archived(base, stack), agents=[agents[1]]),
                cap.Target("callrec", stack.sip_port, ast_pid, app_pid,
                           cap.callrec_archived(stack), loop_lag=cap.callrec_loop_lag(stack),
                           event_queue=taskqueue.AppQueue(stack.asterisk.cli, "callrec"),
                           agents=[agents[0]]),
            ]
            found = cap.interleaved_search(targets, plan, shape, say)
            app, app_runs = found["callrec"]
            baseline, base_runs = found["baseline"]
            results["capacity"] = {
                name: {"best_rate": s.best_rate, "best_concurrent": s.best_concurrent,
                       "ceiling_above_tried": steps.hit_ceiling(s),
                       "steps": [vars(x) | {"ok": x.ok} for x in s.steps],
                       "void_steps": [vars(x) for x in s.void]}
                for name, s in (("callrec", app), ("baseline", baseline))}
            results["capacity_ratio"] = steps.ratio(app, baseline)
            share = cap.cpu_share(app_runs)
            base_share = cap.cpu_share(base_runs)
            same = cpu.matched(cap.passing_steps(app_runs), cap.passing_steps(base_runs))
            if same is not None:
                results["extra"]["asterisk_cpu_vs_baseline_same_rates"] = round(same.ratio, 3)
            if share is not None:
                results["cpu_share"] = share.share
                if same is not None:
                    # the share counts callrec's process only; what callrec's events
                    # and requests cost Asterisk beyond the baseline's work is callrec's too
                    results["extra"]["callrec_and_its_asterisk_work_vs_baseline"] = round(
                        (share.app_per_call + same.callrec_per_call - same.baseline_per_call)
                        / same.baseline_per_call, 3)
                results["cpu"] = {
                    "calls": share.calls, "callrec_s_per_call": share.app_per_call,
                    "asterisk_s_per_call": share.asterisk_per_call,
                    # over each target's own passing steps: not comparable (`cpu.matched`)
                    "baseline_asterisk_s_per_call":
                        base_share.asterisk_per_call if base_share else None,
                    "same_rates": None if same is None else {
                        "rates": list(same.rates),
                        "asterisk_s_per_call": same.callrec_per_call,
                        "baseline_asterisk_s_per_call": same.baseline_per_call},
                    "per_step": [{"rate": r.result.rate, "calls": r.result.archived,
                                  "callrec_s": round(r.app_cpu, 2),
                                  "asterisk_s": round(r.asterisk_cpu, 2),
                                  "loop_lag_p99_s": _finite(r.loop_lag_p99_s),
                                  "event_queue_max_depth": r.event_queue_max_depth,
                                  "event_queue_per_call": r.event_queue_per_call,
                                  "sipp_stood_still_s": round(r.stood_still_s, 2)}
                                 for r in app_runs],
                    "baseline_per_step": [{"rate": r.result.rate, "calls": r.result.archived,
                                           "asterisk_s": round(r.asterisk_cpu, 2),
                                           "sipp_stood_still_s": round(r.stood_still_s, 2)}
                                          for r in base_runs]}
        finally:
            for agent in agents:
                agent.stop()
            base.destroy()


def _finite(x: float | None) -> float | str | None:
    """JSON has no infinity: beyond the last bucket is written as text (">2.5")."""
    return x if x is None or x != float("inf") else f">{LAG_BUCKETS[-1]:g}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "args": vars(args), "extra": {}}
    # every figure's key is in the file, None where it was not measured (a skipped part, or
    # a target that passed no step)
    results.update(dict.fromkeys(report.GOALS))
    t0 = time.monotonic()
    if not args.skip_calls:
        run_calls(args, results)
    if not args.skip_archive:
        say(f"archive: {args.calls:,} synthetic calls")
        archive = asyncio.run(run_archive(ArchiveShape(calls=args.calls, purge=args.purge), say))
        results["archive"] = archive
        results["lookup_p99_ms"] = archive["lookup_ms"]["p99"]
        results["purge_per_s"] = archive["purge"]["per_s"]
        results["extra"].update({
            "day_search_p99_ms": round(archive["day_search_ms"]["p99"], 2),
            "copy_rows_per_s": archive["loaded"]["rows_per_s"]})
    results["seconds"] = round(time.monotonic() - t0)
    path = report.write(results, args.out)
    say("")
    say(report.table(results))
    say(f"\nwritten to {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}"
        f" in {results['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
