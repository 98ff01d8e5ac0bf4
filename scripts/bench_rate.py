#!/usr/bin/env python3
# bench_rate.py -- the rate broker's throughput and round trip, with no [rate] limit:
#   1. permits per second the broker sustains for AGENTS (50) agents asking as fast as
#      they can: each agent is supervisor/examples/permit_load.rs (one connection,
#      PERMITS permits); throughput = all permits / (first launch .. last exit);
#   2. the round trip of one permit with a single agent asking (median of its PERMITS).
# Goals: over 20,000 permits/s; under 100 us per round trip. Medians of RUNS runs.
#
# Run:  scripts/bench_rate.py [--json FILE]   (env: RUNS=3, AGENTS=50, PERMITS=4000)
import argparse, json, os, subprocess, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import NIGHTSHIFT, ROOT, build, emit_json, event_time, stats, workdir  # noqa: E402

RUNS = int(os.environ.get("RUNS", "3"))
AGENTS = int(os.environ.get("AGENTS", "50"))
PERMITS = int(os.environ.get("PERMITS", "4000"))
LOAD = ROOT / "target/release/examples/permit_load"


def one_run(folder, agents, env=None, limits=""):
    """One `nightshift run` of `agents` permit_load agents (their environment `env`, default
    PERMITS only; `limits`: more lines for the job's [limits] and after): (permits per second
    from the first launch to the last exit, the agents' median round trip in us)."""
    env = env or {"PERMITS": str(PERMITS)}
    env_toml = ", ".join(f'{k} = "{v}"' for k, v in env.items())
    folder.mkdir()
    (folder / "items.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(agents)))
    (folder / "job.toml").write_text(f"""
[input]
path = "items.jsonl"
[layout]
segments = 1
orchestrators = 1
agents = {agents}
[agent]
program = ["{LOAD}"]
env = {{ {env_toml} }}
[limits]
max_parallel = {agents}
{limits}""")
    done = subprocess.run([str(NIGHTSHIFT), "run", "job.toml", "--run-dir", "run", "-q"], cwd=folder,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"run in {folder.name} failed ({done.returncode}): {done.stderr[-2000:]}")
    run = folder / "run"
    records = json.loads((run / "final.json").read_text())
    events = [json.loads(l) for l in (run / "events.jsonl").read_text().splitlines()]
    first = min(event_time(e["ts"]) for e in events if e["event"] == "launched")
    last = max(event_time(e["ts"]) for e in events if e["event"] == "exited")
    permits = sum(r["permits"] for r in records)
    medians = sorted(r["median_us"] for r in records)
    return permits / max(last - first, 1e-6), medians[len(medians) // 2]


def main():
    parser = argparse.ArgumentParser(description="nightshift rate broker benchmark")
    parser.add_argument("--json", metavar="FILE", help="write the JSON summary to FILE instead of stdout")
    args = parser.parse_args()
    build()
    if subprocess.run(["cargo", "build", "--release", "--example", "permit_load"], cwd=ROOT).returncode != 0:
        sys.exit("cargo build --release --example permit_load failed: nothing measured")
    throughput, latency = [], []
    with workdir("nightshift-bench-rate-") as tmp:
        for i in range(RUNS):
            per_s, _ = one_run(tmp / f"many{i}", AGENTS)
            _, round_trip = one_run(tmp / f"one{i}", 1)
            throughput.append(per_s)
            latency.append(round_trip)
            print(f"run {i + 1}/{RUNS}: {AGENTS} agents {per_s:,.0f} permits/s; one agent: median round trip {round_trip:.1f} us")
    t, l = stats(throughput), stats(latency)
    print()
    print(f"rate broker without a limit, {RUNS} runs, medians")
    print(f"  {AGENTS} agents x {PERMITS} permits  {t['median']:,.0f} permits/s   goal > 20,000: {'met' if t['median'] > 20000 else 'MISSED'}")
    print(f"  one permit round trip      {l['median']:.1f} us         goal < 100 us: {'met' if l['median'] < 100 else 'MISSED'}")
    emit_json({"benchmark": "rate", "agents": AGENTS, "permits_per_agent": PERMITS, "runs": RUNS,
               "permits_per_s": t, "round_trip_us": l,
               "goals": {"permits_per_s_min": 20000, "round_trip_us_max": 100}}, args.json)


if __name__ == "__main__":
    main()
