#!/usr/bin/env python3
# bench_slurm.py -- the local executor against the Slurm executor on this machine:
# the same 200-agent demo job (200 items, one each; demo backend, latency 100ms;
# 2 segments x 4 orchestrators x 25 agents; max_parallel 16 = the single node's
# CPUs), runs interleaved local/slurm. Reports median wall seconds of each, the
# per-agent overhead of each (wall * max_parallel / agents - the item's latency:
# what one slot spends per agent beyond the work), their difference and ratio,
# and, measured in the same run, Slurm's own submission-to-start latency: SUBMITS
# `sbatch --wrap` jobs one after another, each writing its start time the moment
# it runs, minus the time just before its sbatch began. Every nightshift run must
# exit 0 with 200 records in final.json, identical between the executors.
#
# Needs a running Slurm (sudo scripts/slurm_up.sh). Poll interval: POLL (200ms).
# Run:  scripts/bench_slurm.py [--json FILE]      (from any folder)
# Env:  RUNS=5 runs per executor, SUBMITS=20, POLL=200ms, TMPDIR.
import argparse, json, os, subprocess, sys, time
from statistics import median

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
from benchlib import NIGHTSHIFT, RUNS, build, emit_json, filesystem, stats, timed, workdir

AGENTS = 200
PARALLEL = 16
LATENCY_S = 0.1
SUBMITS = int(os.environ.get("SUBMITS", "20"))
POLL = os.environ.get("POLL", "200ms")
JOB = f"""name = "bench_slurm"
[input]
path = "items.jsonl"
[layout]
segments = 2
orchestrators = 4
agents = 25
[agent]
backend = "demo"
[agent.demo]
latency = "{int(LATENCY_S * 1000)}ms"
[limits]
max_parallel = {PARALLEL}
"""
SLURM = f'[executor]\nkind = "slurm"\npoll_interval = "{POLL}"\n'


def submission_latency(tmp):
    """Seconds from just before `sbatch` to the job's first instruction, per job."""
    latencies = []
    for i in range(SUBMITS):
        stamp = tmp / f"started_{i}"
        before = time.time()
        subprocess.run(["sbatch", "--quiet", f"--output={tmp}/sbatch_{i}.out",
                        "--wrap", f"date +%s.%N > {stamp}"], check=True)
        deadline = before + 120
        while not (stamp.exists() and stamp.read_text().strip()):
            if time.time() > deadline:
                sys.exit(f"job {i} never started: is the node up (sinfo)?")
            time.sleep(0.005)
        latencies.append(float(stamp.read_text()) - before)
    return latencies


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    args = parser.parse_args()
    if subprocess.run(["sinfo", "--noheader"], capture_output=True).returncode != 0:
        sys.exit("no Slurm here: start one with `sudo scripts/slurm_up.sh`")
    build()
    with workdir("nightshift-bench-slurm-") as tmp:
        print(f"temp dir: {tmp} ({filesystem(tmp)})")
        (tmp / "items.jsonl").write_text(
            "".join(json.dumps({"id": f"item-{i:04d}", "prompt": f"p{i}"}) + "\n" for i in range(AGENTS)))
        (tmp / "local.toml").write_text(JOB)
        (tmp / "slurm.toml").write_text(JOB + SLURM)
        walls = {"local": [], "slurm": []}
        finals = {}
        for run in range(RUNS + 1):  # run 0 warms caches and is not counted
            for kind in ("local", "slurm"):
                run_dir = tmp / f"run_{kind}_{run}"
                seconds, code, _, _ = timed([str(NIGHTSHIFT), "run", "-q", f"{kind}.toml", "--run-dir", str(run_dir)],
                                            cwd=tmp, stdout=subprocess.DEVNULL)
                if code != 0:
                    sys.exit(f"{kind} run {run} exited {code}; see {run_dir}")
                final = (run_dir / "final.json").read_bytes()
                if len(json.loads(final)) != AGENTS:
                    sys.exit(f"{kind} run {run}: final.json does not hold {AGENTS} records")
                finals.setdefault(kind, final)
                if run > 0:
                    walls[kind].append(seconds)
                    print(f"  {kind:5} run {run}: {seconds:.2f} s")
        if finals["local"] != finals["slurm"]:
            sys.exit("final.json differs between the executors")
        latencies = submission_latency(tmp)

    def overhead(wall):
        return wall * PARALLEL / AGENTS - LATENCY_S

    local, slurm = median(walls["local"]), median(walls["slurm"])
    summary = {
        "agents": AGENTS, "max_parallel": PARALLEL, "latency_s": LATENCY_S, "poll": POLL, "runs": RUNS,
        "local_wall_s": stats(walls["local"]), "slurm_wall_s": stats(walls["slurm"]),
        "slurm_over_local": slurm / local,
        "local_overhead_per_agent_s": overhead(local),
        "slurm_overhead_per_agent_s": overhead(slurm),
        "extra_per_agent_s": overhead(slurm) - overhead(local),
        "sbatch_to_start_s": stats(latencies),
    }
    print(f"local executor: {local:.2f} s median wall, {overhead(local) * 1000:.0f} ms overhead per agent")
    print(f"slurm executor: {slurm:.2f} s median wall, {overhead(slurm) * 1000:.0f} ms overhead per agent"
          f" ({slurm / local:.2f}x local)")
    print(f"slurm submission to start: {median(latencies) * 1000:.0f} ms median"
          f" (min {min(latencies) * 1000:.0f}, max {max(latencies) * 1000:.0f}) over {SUBMITS} jobs")
    emit_json(summary, args.json)


if __name__ == "__main__":
    main()
