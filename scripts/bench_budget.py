#!/usr/bin/env python3
# bench_budget.py -- the rate broker's budget and key-choice path against the plain
# permit path that scripts/bench_rate.py measures, in the same run, three ways:
#   landed   {"op":"permit","tokens":1}, no budget, no key (bench_rate's request);
#   settled  the same permit settled by a report with its cost, no budget, no key
#            (the report is quiet, as an LLM agent's: no reply, no second round trip);
#   money    limits.max_cost and [agent.price] on (the broker holds the budget),
#            each permit naming a pool of KEYS (3) keys for the broker to choose
#            from and its cost, then settled by a report with the key and the cost.
# For each: permits per second for AGENTS (50) agents x IN_FLIGHT (64) connections
# asking as fast as they can (supervisor/examples/permit_load.rs; all permits / first
# launch .. last exit), and the median round trip of one agent with one connection.
# And the broker's decisions alone, no socket (supervisor/examples/broker_path.rs): us
# per permit (with its report when settled) on each path.
# Goal: money no more than 20% slower than landed. Medians of RUNS runs.
#
# Run:  scripts/bench_budget.py [--json FILE]
#       (env: RUNS=3, AGENTS=50, IN_FLIGHT=64, PERMITS=6400 per agent, KEYS=3)
import argparse, json, os, subprocess, sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_rate  # noqa: E402 (the permit_load run both benchmarks make)
from benchlib import ROOT, build, emit_json, stats, workdir  # noqa: E402

RUNS = int(os.environ.get("RUNS", "3"))
AGENTS = int(os.environ.get("AGENTS", "50"))
IN_FLIGHT = int(os.environ.get("IN_FLIGHT", "64"))
PERMITS = int(os.environ.get("PERMITS", "6400"))
KEYS = int(os.environ.get("KEYS", "3"))
PATH_ALONE = ROOT / "target/release/examples/broker_path"
MODES = ("landed", "settled", "money")


def one_run(folder, mode, agents, in_flight, permits):
    """bench_rate's run of permit_load agents, asking the way `mode` says."""
    env = {"PERMITS": str(permits), "IN_FLIGHT": str(in_flight)}
    budget = ""
    if mode in ("settled", "money"):
        env["COST"] = "0.000001"
    if mode == "money":
        env["KEYS"] = str(KEYS)
        # Far above what the load spends: every permit is granted.
        budget = "max_cost = 1000000.0\n[agent.price]\ninput = 1.0\noutput = 1.0\n"
    return bench_rate.one_run(folder, agents, env, budget)


def main():
    parser = argparse.ArgumentParser(description="nightshift broker budget and key-choice benchmark")
    parser.add_argument("--json", metavar="FILE", help="write the JSON summary to FILE instead of stdout")
    args = parser.parse_args()
    build()
    for example in ("permit_load", "broker_path"):
        if subprocess.run(["cargo", "build", "--release", "--example", example], cwd=ROOT).returncode != 0:
            sys.exit(f"cargo build --release --example {example} failed: nothing measured")
    throughput = {mode: [] for mode in MODES}
    latency = {mode: [] for mode in MODES}
    alone = {mode: [] for mode in MODES}
    with workdir("nightshift-bench-budget-") as tmp:
        for i in range(RUNS):
            for mode in MODES:
                per_s, _ = one_run(tmp / f"{mode}-many{i}", mode, AGENTS, IN_FLIGHT, PERMITS)
                _, round_trip = one_run(tmp / f"{mode}-one{i}", mode, 1, 1, PERMITS)
                throughput[mode].append(per_s)
                latency[mode].append(round_trip)
                print(f"run {i + 1}/{RUNS} {mode:8}: {AGENTS}x{IN_FLIGHT} {per_s:,.0f} permits/s; "
                      f"one connection: median round trip {round_trip:.1f} us", flush=True)
            path = json.loads(subprocess.run([str(PATH_ALONE)], check=True, capture_output=True, text=True).stdout)
            for mode in MODES:
                alone[mode].append(path[mode])
            print(f"run {i + 1}/{RUNS} broker decisions alone: " +
                  ", ".join(f"{mode} {path[mode]:.2f} us" for mode in MODES), flush=True)
    t = {mode: stats(throughput[mode]) for mode in MODES}
    l = {mode: stats(latency[mode]) for mode in MODES}
    a = {mode: stats(alone[mode]) for mode in MODES}
    ratio = t["money"]["median"] / t["landed"]["median"]
    ratio_settled = t["money"]["median"] / t["settled"]["median"]
    print()
    print(f"rate broker, {AGENTS} agents x {IN_FLIGHT} in flight x {PERMITS // IN_FLIGHT} permits each, {RUNS} runs, medians")
    for mode in MODES:
        print(f"  {mode:8} {t[mode]['median']:>10,.0f} permits/s   round trip {l[mode]['median']:.1f} us"
              f"   broker decisions alone {a[mode]['median']:.2f} us")
    print(f"  money / landed  {ratio:.2f} of the throughput   goal >= 0.80: {'met' if ratio >= 0.8 else 'MISSED'}")
    print(f"  money / settled {ratio_settled:.2f} (the same one round trip: budget and key choice alone)")
    emit_json({"benchmark": "budget", "agents": AGENTS, "in_flight": IN_FLIGHT, "permits_per_agent": PERMITS,
               "keys": KEYS, "runs": RUNS, "permits_per_s": t, "round_trip_us": l, "decisions_alone_us": a,
               "money_over_landed": ratio, "money_over_settled": ratio_settled,
               "goals": {"money_over_landed_min": 0.8}}, args.json)


if __name__ == "__main__":
    main()
