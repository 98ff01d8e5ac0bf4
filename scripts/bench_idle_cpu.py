#!/usr/bin/env python3
# bench_idle_cpu.py -- what supervising costs when nothing happens: the CPU time of
# the supervisor process (all its threads; its agents not included) while 100
# agents sleep, over DURATION seconds. Job: 100 items, [layout] items_per_agent = 1
# with orchestrators = 10 and agents = 10 (one segment of 100 agents: the default 3
# orchestrators x 10 agents would make segments of 25 that run one after the
# other), agent.program = ./sleeper.sh (sh running `sleep DURATION+30`: 2 processes
# per agent, outliving the window), limits.max_parallel 100, sample_interval left
# at its default (500ms). Goal: under 1% of one core.
#
# How: start `nightshift run job.toml --run-dir DIR -q`; once events.jsonl holds 100
# "launched" events, read utime+stime of the supervisor (fields 14 and 15 of
# /proc/PID/stat, clock ticks) at t0 and again DURATION seconds later; then SIGINT
# and wait for it (exit 130 expected: interrupted, every agent tree ended). Also
# reads each thread's CPU and context switches (/proc/PID/task/*/{stat,status}) at
# both ends, to show which thread spends the time and how often the process wakes.
#
# Run:  scripts/bench_idle_cpu.py [--json FILE]      (from any folder)
# Env:  RUNS=1 (default 1 here: each run takes DURATION + about 15 s), DURATION=60,
#       AGENTS=100, MEMORY_LIMIT (e.g. 1GiB: sets agent.memory_limit, which with the
#       default memory_enforcement "auto" gives every agent a memory cgroup where the
#       machine allows one; default: not set), MEMORY_ENFORCEMENT (auto | sampling |
#       cgroup: sets limits.memory_enforcement; default: not set), NIGHTSHIFT_ROOT
#       (checkout to build and measure; default: this one), TMPDIR. Builds with `cargo build --release` first. Python 3.9+,
#       standard library only. JSON summary: one line at the end of stdout, or FILE.
import argparse, json, os, signal, subprocess, sys, time
from collections import defaultdict
from statistics import median

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
from benchlib import NIGHTSHIFT, ROOT, build, emit_json, filesystem, spawn, stats, workdir

RUNS = int(os.environ.get("RUNS", "1"))
DURATION = float(os.environ.get("DURATION", "60"))
AGENTS = int(os.environ.get("AGENTS", "100"))
MEMORY_LIMIT = os.environ.get("MEMORY_LIMIT") or None
MEMORY_ENFORCEMENT = os.environ.get("MEMORY_ENFORCEMENT") or None
TICK = os.sysconf("SC_CLK_TCK")
GOAL_PERCENT = 1.0
JOB = """name = "bench_idle_cpu"
[input]
path = "items.jsonl"
id = "id"
[layout]
items_per_agent = 1
orchestrators = 10
agents = {agents_per_orch}
[agent]
program = ["./sleeper.sh"]
[limits]
max_parallel = {agents}
"""


def cpu_ticks(pid):
    """utime + stime of the whole process (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def threads(pid):
    """{tid: (thread name, cpu ticks, voluntary context switches = wakeups)} of every thread of pid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
            fields = rest.split()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                switches = sum(int(l.split()[1]) for l in f if l.startswith("voluntary_ctxt_switches:"))
            out[tid] = (head.split("(", 1)[1], int(fields[11]) + int(fields[12]), switches)
        except (OSError, IndexError, ValueError):
            pass
    return out


def per_thread(th0, th1, wall):
    """CPU and wake-ups between two threads() snapshots, summed per thread name."""
    per_name = defaultdict(lambda: [0, 0, 0])  # thread name -> [threads, ticks, switches]
    for tid, (name, ticks, switches) in th1.items():
        _, ticks0, switches0 = th0.get(tid, (name, 0, 0))
        entry = per_name[name]
        entry[0] += 1
        entry[1] += ticks - ticks0
        entry[2] += switches - switches0
    return {k: {"count": v[0], "cpu_s": v[1] / TICK, "wakeups_per_s": v[2] / wall}
            for k, v in sorted(per_name.items())}


def launched(run_dir):
    try:
        text = (run_dir / "events.jsonl").read_text()
    except OSError:
        return 0
    return sum(1 for l in text.splitlines() if '"event":"launched"' in l.replace(" ", ""))


def one_run(work, n):
    run_dir = work / f"run{n}"
    log = work / f"run{n}.out"
    with open(log, "wb") as out:
        proc = spawn([str(NIGHTSHIFT), "run", "job.toml", "--run-dir", str(run_dir), "-q"],
                     cwd=work, stdout=out, stderr=subprocess.STDOUT)
        start, limit = time.monotonic(), time.monotonic() + 120
        while launched(run_dir) < AGENTS:
            if proc.poll() is not None or time.monotonic() > limit:
                sys.exit(f"run {n}: {launched(run_dir)} of {AGENTS} agents launched "
                         f"(nightshift exit code {proc.returncode}):\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        launch_s = time.monotonic() - start
        t0, c0, th0 = time.monotonic(), cpu_ticks(proc.pid), threads(proc.pid)
        time.sleep(DURATION)
        t1, c1, th1 = time.monotonic(), cpu_ticks(proc.pid), threads(proc.pid)
        if launched(run_dir) != AGENTS or proc.poll() is not None:
            sys.exit(f"run {n}: the agents did not keep sleeping through the window")
        proc.send_signal(signal.SIGINT)
        code = proc.wait()
    if code != 130:
        sys.exit(f"run {n}: nightshift exited {code} after SIGINT, expected 130:\n{log.read_text()[-3000:]}")
    wall = t1 - t0
    cpu = (c1 - c0) / TICK
    started = json.loads((run_dir / "events.jsonl").read_text().splitlines()[0])
    return {"wall_s": wall, "cpu_s": cpu, "percent_of_core": 100 * cpu / wall, "launch_s": launch_s,
            "memory_mode": started.get("memory_mode"),
            "threads": per_thread(th0, th1, wall)}


def prepare(work):
    """The job folder: AGENTS items, job.toml, sleeper.sh."""
    with open(work / "items.jsonl", "w") as f:
        f.writelines(json.dumps({"id": f"item-{i:03}", "prompt": "p"}) + "\n" for i in range(1, AGENTS + 1))
    job = JOB.format(agents_per_orch=AGENTS // 10, agents=AGENTS)
    if MEMORY_LIMIT:
        job = job.replace("[limits]\n", f'memory_limit = "{MEMORY_LIMIT}"\n[limits]\n')
    if MEMORY_ENFORCEMENT:
        job += f'memory_enforcement = "{MEMORY_ENFORCEMENT}"\n'
    (work / "job.toml").write_text(job)
    sleeper = work / "sleeper.sh"
    sleeper.write_text(f"#!/bin/sh\nsleep {int(DURATION) + 30}\n")
    sleeper.chmod(0o755)


def main():
    parser = argparse.ArgumentParser(description="nightshift idle supervisor CPU benchmark")
    parser.add_argument("--json", metavar="FILE", help="write the JSON summary to FILE instead of stdout")
    args = parser.parse_args()
    if AGENTS % 10:
        sys.exit("AGENTS must be a multiple of 10 (10 orchestrators)")
    build()
    results = []
    with workdir("bench_idle_cpu.") as work:
        fs = filesystem(work)
        prepare(work)
        for n in range(1, RUNS + 1):
            r = one_run(work, n)
            results.append(r)
            print(f"run {n}/{RUNS}: {r['cpu_s']:.3f} CPU s in {r['wall_s']:.1f} s = {r['percent_of_core']:.3f}% "
                  f"of one core ({AGENTS} agents launched in {r['launch_s']:.2f}s)", file=sys.stderr)

    cpu = [r["cpu_s"] for r in results]
    pct = [r["percent_of_core"] for r in results]
    m = median(pct)
    summary = {"benchmark": "idle_cpu", "agents": AGENTS, "duration_s": DURATION, "runs": RUNS,
               "memory_limit": MEMORY_LIMIT, "memory_enforcement": MEMORY_ENFORCEMENT,
               "memory_mode_last_run": results[-1]["memory_mode"],
               "sample_interval": "500ms (default)", "clock_ticks_per_s": TICK, "tmp_filesystem": fs,
               "nightshift_root": str(ROOT), "supervisor_cpu_s": stats(cpu), "percent_of_one_core": stats(pct),
               "goal_max_percent": GOAL_PERCENT, "goal_met": m < GOAL_PERCENT,
               "threads_last_run": results[-1]["threads"]}
    print(f"\nidle CPU: supervisor of {AGENTS} sleeping agents (sh + sleep each), sample_interval 500ms, "
          f"window {DURATION:g}s, {RUNS} run(s){' (RUNS defaults to 1: each run is long)' if RUNS == 1 else ', medians'}; "
          f"CPU = utime + stime of the supervisor's threads, {TICK} ticks/s")
    if MEMORY_LIMIT or MEMORY_ENFORCEMENT:
        print(f"  memory_limit {MEMORY_LIMIT}, memory_enforcement {MEMORY_ENFORCEMENT or '(default)'}: "
              f"{results[-1]['memory_mode']}")
    print(f"  {'':22}{'CPU s':>9}{'% of core':>11}{'min %':>9}{'max %':>9}")
    print(f"  {'nightshift run':22}{median(cpu):9.3f}{m:11.3f}{min(pct):9.3f}{max(pct):9.3f}")
    print(f"  goal < {GOAL_PERCENT:g}% of one core: {'met' if m < GOAL_PERCENT else 'MISSED'}")
    print(f"  by thread (last run):  {'threads':>8}{'CPU s':>9}{'wakeups/s':>11}")
    for name, t in results[-1]["threads"].items():
        print(f"    {name:20}{t['count']:8}{t['cpu_s']:9.3f}{t['wakeups_per_s']:11.1f}")
    emit_json(summary, args.json)


if __name__ == "__main__":
    main()
