#!/usr/bin/env python3
# bench_progress.py -- what counting saved records costs the supervisor: how soon an
# agent's append is counted, and its CPU while many agents append.
#   (a) latency: one agent (appender.py, agent.program) with RECORDS items appends one
#       record line {"id": ...} per item to $NIGHTSHIFT_OUTPUT (write + flush, no
#       fsync), notes time.time() just after the write in a side file ($SIDE_LOG),
#       sleeps 50 ms. The supervisor runs with NIGHTSHIFT_RUN_LOG=debug, so that
#       RUN/supervisor.log gets a line "<UTC ts> DEBUG counted AGENT k/RECORDS" each
#       time the agent's count changes; latency of record k = that line's ts - the
#       agent's ts for k (both wall clock; the log's ts is when the line was logged,
#       with microseconds; shown too: from just before the write, an upper bound).
#       A negative value: the supervisor logged the count before the agent, back from
#       write(), read its clock (by tens of us: Python's own overhead; by ms: the
#       agent was descheduled in between). A k without a line was counted together with the next
#       one (two appends in one look): reported, not in the medians. The run must
#       exit 0.                                   goal: median < 50 ms
#   (b) CPU: AGENTS agents ([layout] segments 1, orchestrators 10, agents AGENTS/10,
#       limits.max_parallel AGENTS), each appending a record every 100 ms (paced on
#       its own clock: 10 records/s, AGENTS x 10 a second in all) with enough items
#       to go on appending past the window (10 x (DURATION + 40) each: 100 items,
#       10 s, would end inside a 30 s window); NIGHTSHIFT_RUN_LOG not set (the
#       default: info). Once events.jsonl holds AGENTS "launched" events and SETTLE
#       seconds have passed, utime+stime of the supervisor (fields 14 and 15 of
#       /proc/PID/stat) at t0 and DURATION seconds later, per thread too (as in
#       bench_idle_cpu.py); the records actually appended in the window (lines of
#       every agent file at both ends) and the machine's busy share (/proc/stat) are
#       reported alongside. Then SIGINT (exit 130 expected).
#                                                 goal: < 5% of one core
#   Both runs have stdout in a file, not a terminal: the run prints plain lines.
#
# Run:  scripts/bench_progress.py [--json FILE]    (from any folder)
# Env:  RECORDS=100 (a), AGENTS=100, DURATION=30, SETTLE=3, RUNS_CPU=3 (runs, median) (b),
#       NIGHTSHIFT_ROOT (checkout to build and measure; default: this one), TMPDIR.
#       Builds with `cargo build --release` first. Python 3.9+, standard library
#       only. JSON summary: one line at the end of stdout, or FILE.
import argparse, json, os, re, signal, subprocess, sys, time
from datetime import datetime
from statistics import median

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
from benchlib import (NIGHTSHIFT, ROOT, build, busy_jiffies, busy_percent, emit_json, filesystem, p90, spawn,
                      stats, workdir)
from bench_idle_cpu import TICK, cpu_ticks, launched, per_thread, threads

RECORDS = int(os.environ.get("RECORDS", "100"))
AGENTS = int(os.environ.get("AGENTS", "100"))
DURATION = float(os.environ.get("DURATION", "30"))
SETTLE = float(os.environ.get("SETTLE", "3"))
RUNS_CPU = int(os.environ.get("RUNS_CPU", "3"))
RATE = 10  # records per second per agent in (b)
GOAL_LATENCY_MS = 50
GOAL_CPU_PERCENT = 5.0
JOB = """name = "bench_progress_{part}"
[input]
path = "items.jsonl"
id = "id"
[layout]
segments = 1
orchestrators = {orchestrators}
agents = {agents}
[agent]
program = ["./appender.py"]
env = {{ INTERVAL = "{interval}", PACED = "{paced}" }}
retries = 0
[limits]
max_parallel = {parallel}
"""
# Appends one record per item of its task; with PACED=1 on a fixed schedule (k x
# INTERVAL from its start), else sleeping INTERVAL after each. With SIDE_LOG set,
# notes "k time.time()-just-after-the-k-th-write time.time()-just-before-it".
APPENDER_PY = """#!/usr/bin/env python3
import json, os, time
task = json.load(open(os.environ["NIGHTSHIFT_TASK"]))
id_field = task["id_field"]
interval, paced = float(os.environ["INTERVAL"]), os.environ["PACED"] == "1"
side = open(os.environ["SIDE_LOG"], "a") if os.environ.get("SIDE_LOG") else None
out = open(os.environ["NIGHTSHIFT_OUTPUT"], "a")
start = time.monotonic()
for k, item in enumerate(task["items"], 1):
    line = json.dumps({id_field: item[id_field], "output": "x"}) + "\\n"
    before = time.time()
    out.write(line)
    out.flush()
    if side:
        side.write(f"{k} {time.time()} {before}\\n")
        side.flush()
    if paced:
        time.sleep(max(0.0, start + k * interval - time.monotonic()))
    else:
        time.sleep(interval)
"""
COUNTED_RE = re.compile(r"^(\S+)\s+DEBUG\s+counted\s+(\S+)\s+(\d+)/(\d+)\s*$")


def log_time(ts):
    """A tracing timestamp (2026-11-21T23:20:08.861972Z, UTC) as Unix seconds."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def prepare(work, part, items_per_agent, agents, interval, paced):
    job_dir = work / part
    job_dir.mkdir()
    with open(job_dir / "items.jsonl", "w") as f:
        f.writelines(json.dumps({"id": f"item-{i:06}", "prompt": "p"}) + "\n"
                     for i in range(1, items_per_agent * agents + 1))
    orchestrators = 1 if agents == 1 else 10
    (job_dir / "job.toml").write_text(JOB.format(part=part, orchestrators=orchestrators,
                                                 agents=agents // orchestrators, interval=interval,
                                                 paced=int(paced), parallel=agents))
    script = job_dir / "appender.py"
    script.write_text(APPENDER_PY)
    script.chmod(0o755)
    return job_dir


def latency(work):
    job_dir = prepare(work, "latency", RECORDS, 1, 0.05, False)
    run_dir, side, log = job_dir / "run", job_dir / "side.log", job_dir / "run.out"
    env = dict(os.environ, NIGHTSHIFT_RUN_LOG="debug", SIDE_LOG=str(side))
    with open(log, "wb") as out:
        m0 = busy_jiffies()
        proc = spawn([str(NIGHTSHIFT), "run", "job.toml", "--run-dir", str(run_dir)],
                     cwd=job_dir, stdout=out, stderr=subprocess.STDOUT, env=env)
        code = proc.wait()
        busy = busy_percent(m0, busy_jiffies())
    if code != 0:
        sys.exit(f"latency run: nightshift exited {code}, expected 0:\n{log.read_text()[-3000:]}")
    appended, before = {}, {}
    for line in side.read_text().splitlines():
        k, t, t_before = line.split()
        appended[int(k)], before[int(k)] = float(t), float(t_before)
    counted, agent_name = {}, None
    for line in (run_dir / "supervisor.log").read_text().splitlines():
        m = COUNTED_RE.match(line)
        if m:
            agent_name = m.group(2)
            counted.setdefault(int(m.group(3)), log_time(m.group(1)))
    if len(appended) != RECORDS:
        sys.exit(f"latency run: the agent noted {len(appended)} appends, expected {RECORDS}")
    if not counted:
        sys.exit(f"no 'counted' lines in {run_dir / 'supervisor.log'}: is NIGHTSHIFT_RUN_LOG=debug supported?")
    lat = {k: (counted[k] - t) * 1000 for k, t in appended.items() if k in counted}
    from_before = {k: (counted[k] - t) * 1000 for k, t in before.items() if k in counted}
    missing = sorted(set(appended) - set(counted))
    return {"agent": agent_name, "latencies_ms": [lat[k] for k in sorted(lat)], "machine_busy_percent": busy,
            "from_before_write_ms": [from_before[k] for k in sorted(from_before)],
            "write_ms": [(appended[k] - before[k]) * 1000 for k in sorted(appended)], "not_counted_alone": missing}


def agent_lines(run_dir):
    total = 0
    for path in run_dir.glob("segment_*/orch_*/agent_*.jsonl"):
        if not path.name.endswith(".failures.jsonl"):
            with open(path, "rb") as f:
                total += f.read().count(b"\n")
    return total


def cpu_under_appends(work, n):
    items = int(RATE * (DURATION + SETTLE + 40))
    job_dir = work / "cpu" if n > 1 else prepare(work, "cpu", items, AGENTS, 1 / RATE, True)
    run_dir, log = job_dir / f"run{n}", job_dir / f"run{n}.out"
    env = {k: v for k, v in os.environ.items() if k not in ("NIGHTSHIFT_RUN_LOG", "SIDE_LOG")}
    with open(log, "wb") as out:
        proc = spawn([str(NIGHTSHIFT), "run", "job.toml", "--run-dir", str(run_dir)],
                     cwd=job_dir, stdout=out, stderr=subprocess.STDOUT, env=env)
        start, limit = time.monotonic(), time.monotonic() + 120
        while launched(run_dir) < AGENTS:
            if proc.poll() is not None or time.monotonic() > limit:
                sys.exit(f"{launched(run_dir)} of {AGENTS} agents launched "
                         f"(nightshift exit code {proc.returncode}):\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        launch_s = time.monotonic() - start
        time.sleep(SETTLE)
        t0, c0, th0, n0, m0 = time.monotonic(), cpu_ticks(proc.pid), threads(proc.pid), agent_lines(run_dir), busy_jiffies()
        time.sleep(DURATION)
        t1, c1, th1, n1, m1 = time.monotonic(), cpu_ticks(proc.pid), threads(proc.pid), agent_lines(run_dir), busy_jiffies()
        if proc.poll() is not None:
            sys.exit(f"nightshift ended inside the window:\n{log.read_text()[-3000:]}")
        proc.send_signal(signal.SIGINT)
        code = proc.wait()
    if code != 130:
        sys.exit(f"nightshift exited {code} after SIGINT, expected 130:\n{log.read_text()[-3000:]}")
    wall = t1 - t0
    cpu = (c1 - c0) / TICK
    return {"wall_s": wall, "cpu_s": cpu, "percent_of_core": 100 * cpu / wall, "launch_s": launch_s,
            "items_per_agent": items, "appends_per_s": (n1 - n0) / wall,
            "machine_busy_percent": busy_percent(m0, m1), "cpus": os.cpu_count(),
            "threads": per_thread(th0, th1, wall)}


def main():
    parser = argparse.ArgumentParser(description="nightshift progress counting benchmark")
    parser.add_argument("--json", metavar="FILE", help="write the JSON summary to FILE instead of stdout")
    args = parser.parse_args()
    if AGENTS % 10:
        sys.exit("AGENTS must be a multiple of 10 (10 orchestrators)")
    build()
    with workdir("bench_progress.") as work:
        fs = filesystem(work)
        a = latency(work)
        lat = a["latencies_ms"]
        print(f"(a) {len(lat)} of {RECORDS} appends counted one by one: median {median(lat):.2f} ms, "
              f"p90 {p90(lat):.2f} ms, max {max(lat):.2f} ms", file=sys.stderr)
        runs = []
        for n in range(1, RUNS_CPU + 1):
            b = cpu_under_appends(work, n)
            runs.append(b)
            print(f"(b) run {n}/{RUNS_CPU}: {b['cpu_s']:.3f} CPU s in {b['wall_s']:.1f} s = {b['percent_of_core']:.2f}% "
                  f"of one core at {b['appends_per_s']:.0f} appends/s ({AGENTS} agents launched in "
                  f"{b['launch_s']:.2f}s; machine {b['machine_busy_percent']:.0f}% busy)", file=sys.stderr)
        pct = [r["percent_of_core"] for r in runs]
        b = sorted(runs, key=lambda r: r["percent_of_core"])[(len(runs) - 1) // 2]  # the median run

    m = median(lat)
    summary = {"benchmark": "progress", "tmp_filesystem": fs, "nightshift_root": str(ROOT), "clock_ticks_per_s": TICK,
               "latency": {"records": RECORDS, "agent_sleep_ms": 50, "counted": len(lat),
                           "not_counted_alone": a["not_counted_alone"], "ms": {**stats(lat), "p90": p90(lat)},
                           "from_before_write_ms": {**stats(a["from_before_write_ms"]), "p90": p90(a["from_before_write_ms"])},
                           "negative": sum(1 for v in lat if v < 0), "machine_busy_percent": a["machine_busy_percent"],
                           "goal_max_median_ms": GOAL_LATENCY_MS, "goal_met": m < GOAL_LATENCY_MS},
               "cpu": {"agents": AGENTS, "records_per_s_per_agent": RATE, "duration_s": DURATION, "settle_s": SETTLE,
                       "runs": RUNS_CPU, "percent_of_one_core": stats(pct),
                       "supervisor_cpu_s": stats([r["cpu_s"] for r in runs]),
                       "appends_per_s": stats([r["appends_per_s"] for r in runs]),
                       "machine_busy_percent": stats([r["machine_busy_percent"] for r in runs]),
                       "items_per_agent": b["items_per_agent"], "launch_s": stats([r["launch_s"] for r in runs]),
                       "goal_max_percent": GOAL_CPU_PERCENT, "goal_met": median(pct) < GOAL_CPU_PERCENT,
                       "threads_median_run": b["threads"]}}
    print(f"\nprogress counting: temp dir on {fs}")
    print(f"  (a) append -> counted (supervisor.log DEBUG line), 1 agent, {RECORDS} records 50 ms apart, "
          f"NIGHTSHIFT_RUN_LOG=debug; machine {a['machine_busy_percent']:.0f}% busy ({os.cpu_count()} CPUs)")
    print(f"    {'':30}{'median':>9}{'p90':>9}{'min':>9}{'max':>9}")
    print(f"    {'latency ms':30}{m:9.2f}{p90(lat):9.2f}{min(lat):9.2f}{max(lat):9.2f}   "
          f"({len(lat)} of {RECORDS} counted one by one"
          f"{'; not alone: ' + ', '.join(map(str, a['not_counted_alone'])) if a['not_counted_alone'] else ''})")
    fb, wr = a["from_before_write_ms"], a["write_ms"]
    print(f"    {'(from just before the write)':30}{median(fb):9.2f}{p90(fb):9.2f}{min(fb):9.2f}{max(fb):9.2f}")
    print(f"    {'(the write + flush itself)':30}{median(wr):9.2f}{p90(wr):9.2f}{min(wr):9.2f}{max(wr):9.2f}")
    negative = sum(1 for v in lat if v < 0)
    if negative:
        print(f"    {negative} negative: logged before the agent read its clock after the write returned (by tens "
              f"of us: the agent's own Python overhead; by ms: it was descheduled in between)")
    print(f"    goal median < {GOAL_LATENCY_MS} ms: {'met' if m < GOAL_LATENCY_MS else 'MISSED'}")
    print(f"  (b) supervisor CPU, {AGENTS} agents appending {RATE} records/s each "
          f"({median(r['appends_per_s'] for r in runs):.0f} appends/s measured), window {DURATION:g}s after all "
          f"launched + {SETTLE:g}s, {RUNS_CPU} run(s); machine {median(r['machine_busy_percent'] for r in runs):.0f}% "
          f"busy ({b['cpus']} CPUs, median)")
    print(f"    {'':30}{'CPU s':>9}{'% of core':>11}{'min %':>9}{'max %':>9}")
    print(f"    {'nightshift run':30}{median(r['cpu_s'] for r in runs):9.3f}{median(pct):11.2f}{min(pct):9.2f}"
          f"{max(pct):9.2f}")
    print(f"    goal < {GOAL_CPU_PERCENT:g}% of one core: {'met' if median(pct) < GOAL_CPU_PERCENT else 'MISSED'}")
    print(f"    by thread (median run):  {'threads':>13}{'CPU s':>9}{'wakeups/s':>11}")
    for name, t in b["threads"].items():
        print(f"      {name:30}{t['count']:8}{t['cpu_s']:9.3f}{t['wakeups_per_s']:11.1f}")
    emit_json(summary, args.json)


if __name__ == "__main__":
    main()
