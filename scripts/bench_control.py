#!/usr/bin/env python3
# bench_control.py -- `nightshift control` on a live run.
# (a) latency: a run of one-item agents that sleep, max_parallel 1; ROUNDS times,
#     `nightshift control RUN --max-parallel K+1` and the time from just before the
#     command starts to the `ts` of the launch it allows (events.jsonl, ms). Goal:
#     median under 100 ms.
# (b) paused idle CPU: AGENTS sleeping agents (sh + sleep, as bench_idle_cpu.py),
#     then `control --pause`, and the supervisor's own CPU (utime + stime from /proc)
#     over a WINDOW. Goal: under 1% of one core.
#
# Run:  scripts/bench_control.py [--json FILE]     (from any folder)
# Env:  ROUNDS=20, AGENTS=100, WINDOW=20 (seconds), TMPDIR.
# Builds with `cargo build --release` at the workspace root first. Python 3.9+,
# standard library only. JSON summary: one line at the end of stdout, or FILE.
import argparse, json, os, signal, subprocess, sys, time
from statistics import median

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
from benchlib import NIGHTSHIFT, build, emit_json, event_time, filesystem, p90, spawn, stats, workdir

ROUNDS = int(os.environ.get("ROUNDS", "20"))
AGENTS = int(os.environ.get("AGENTS", "100"))
WINDOW = float(os.environ.get("WINDOW", "20"))
TICK = os.sysconf("SC_CLK_TCK")
JOB = """name = "bench_control"
[input]
path = "items.jsonl"
[layout]
segments = 1
items_per_agent = 1
[agent]
backend = "exec"
command = ["sh", "-c", "sleep 600; cat"]
kill_grace = "1s"
[limits]
max_parallel = {max_parallel}
"""


def launches(run_dir):
    """The `ts` (Unix seconds) of every launched event so far."""
    try:
        lines = (run_dir / "events.jsonl").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line being written
        if event.get("event") == "launched":
            out.append(event_time(event["ts"]))
    return out


def wait_for(condition, what, limit=60):
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.002)


def control(run_dir, *args):
    done = subprocess.run([str(NIGHTSHIFT), "control", str(run_dir), *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"nightshift control {' '.join(args)} failed: {done.stderr}")


def start_run(work, name, agents, max_parallel, program=False):
    job = JOB.format(max_parallel=max_parallel)
    if program:
        job = job.replace('backend = "exec"\ncommand = ["sh", "-c", "sleep 600; cat"]',
                          'program = ["sh", "-c", "sleep 600"]')
    (work / f"{name}.toml").write_text(job)
    with open(work / "items.jsonl", "w") as f:
        f.writelines(json.dumps({"id": f"item-{i:04}"}) + "\n" for i in range(agents))
    run_dir = work / name
    proc = spawn([str(NIGHTSHIFT), "run", f"{name}.toml", "--run-dir", str(run_dir), "-q"],
                 cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, run_dir


def stop(proc):
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)


def latency(work):
    proc, run_dir = start_run(work, "latency", ROUNDS + 1, 1)
    wait_for(lambda: len(launches(run_dir)) >= 1, "the first launch")
    times = []
    for k in range(1, ROUNDS + 1):
        before = time.time()
        control(run_dir, "--max-parallel", str(k + 1))
        wait_for(lambda: len(launches(run_dir)) >= k + 1, f"launch {k + 1}")
        times.append((launches(run_dir)[k] - before) * 1000)
    stop(proc)
    return times


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def paused_cpu(work):
    # The agents of bench_idle_cpu.py (sh + sleep, no nightshift-agent), so the
    # two figures compare: what a pause adds to an idle supervisor.
    proc, run_dir = start_run(work, "paused", AGENTS, AGENTS, program=True)
    wait_for(lambda: len(launches(run_dir)) >= AGENTS, f"{AGENTS} launches", limit=120)
    control(run_dir, "--pause")
    t0, c0 = time.monotonic(), cpu_ticks(proc.pid)
    time.sleep(WINDOW)
    t1, c1 = time.monotonic(), cpu_ticks(proc.pid)
    stop(proc)
    return 100 * (c1 - c0) / TICK / (t1 - t0)


def main():
    parser = argparse.ArgumentParser(description="nightshift control benchmark")
    parser.add_argument("--json", metavar="FILE", help="write the JSON summary to FILE instead of stdout")
    args = parser.parse_args()
    build()
    with workdir("bench_control.") as work:
        fs = filesystem(work)
        times = latency(work)
        percent = paused_cpu(work)
    m = median(times)
    print(f"\ncontrol: {ROUNDS} rounds of --max-parallel K+1 on a live run; temp dir on {fs}")
    print(f"  control -> the launch it allows   median {m:.1f} ms  p90 {p90(times):.1f} ms  "
          f"min {min(times):.1f} ms  max {max(times):.1f} ms   goal < 100 ms: {'met' if m < 100 else 'MISSED'}")
    print(f"  supervisor CPU, {AGENTS} agents, paused, {WINDOW:g}s window: {percent:.3f}% of one core   "
          f"goal < 1%: {'met' if percent < 1 else 'MISSED'}")
    emit_json({"benchmark": "control", "rounds": ROUNDS, "latency_ms": stats(times), "p90_ms": p90(times),
               "paused_agents": AGENTS, "window_s": WINDOW, "paused_cpu_percent_of_core": percent,
               "tmp_filesystem": fs}, args.json)


if __name__ == "__main__":
    main()
