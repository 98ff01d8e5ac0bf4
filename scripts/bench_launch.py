#!/usr/bin/env python3
# bench_launch.py -- launch overhead of the supervisor: 1,000 agents of one demo
# item each (demo backend, latency 0ms, max_parallel 8, layout 10 segments x 10
# orchestrators x 10 agents), against `seq 1000 | xargs -P 8 -n 1 true`, runs
# interleaved (after one untimed warm-up of each). Reports median wall seconds,
# per-agent overhead (wall_ms * max_parallel / agents: what one slot spends per
# agent), the nightshift/xargs ratio (goal <= 3x), the time spent at segment
# boundaries (from events.jsonl), and the supervisor's own peak RSS: VmHWM of the
# nightshift process, polled every 10 ms until it exits (goal < 30 MiB). Every
# run must exit 0 with 1,000 records in final.json (checked outside the timing).
#
# Run:  scripts/bench_launch.py [--json FILE]     (from any folder)
# Env:  RUNS=5 timed runs per side, AGENTS=1000, MAX_PARALLEL=8, TMPDIR.
# Builds with `cargo build --release` at the workspace root first. Python 3.9+,
# standard library only. JSON summary: one line at the end of stdout, or FILE.
import argparse, json, os, subprocess, sys, threading, time
from datetime import datetime
from statistics import median

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
from benchlib import NIGHTSHIFT, RUNS, build, emit_json, filesystem, spawn, stats, workdir

AGENTS = int(os.environ.get("AGENTS", "1000"))
PARALLEL = int(os.environ.get("MAX_PARALLEL", "8"))
MiB = 1024 * 1024
JOB = """name = "bench_launch"
[input]
path = "items.jsonl"
id = "id"
[layout]
segments = {}
orchestrators = {}
agents = {}
[agent]
backend = "demo"
[agent.demo]
latency = "0ms"
[limits]
max_parallel = {}
"""


def vm_hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):  # gone, or a zombie without memory
        return 0


def run_nightshift(work, name):
    """One run: (wall s, supervisor VmHWM bytes, user s, sys s, run dir). CPU times come
    from wait4 and include the agents; its ru_maxrss is not used (it would also count
    this Python process, which the child was forked from)."""
    run_dir, log = work / name, work / f"{name}.out"
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = spawn([str(NIGHTSHIFT), "run", "job.toml", "--run-dir", str(run_dir), "-q"],
                                cwd=work, stdout=out, stderr=subprocess.STDOUT)
        peak, done = [0], threading.Event()

        def poll():  # VmHWM only grows: the last value read is the peak but for the last < 10 ms
            while not done.is_set():
                peak[0] = max(peak[0], vm_hwm(proc.pid))
                done.wait(0.01)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        poller.join()
    if proc.returncode != 0:
        sys.exit(f"nightshift run {name} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
    records = len(json.loads((run_dir / "final.json").read_text()))
    if records != AGENTS:
        sys.exit(f"run {name}: final.json has {records} records, expected {AGENTS}")
    return seconds, peak[0], usage.ru_utime, usage.ru_stime, run_dir


def run_xargs():
    start = time.perf_counter()
    subprocess.run(["bash", "-c", f"seq {AGENTS} | xargs -P {PARALLEL} -n 1 true"], check=True)
    return time.perf_counter() - start


def boundary_seconds(run_dir):
    """Time between segments: last 'exited' of a segment -> first 'launched' of the next
    (the tail of the segment is not included), summed over the run."""
    last_exit, first_launch = {}, {}
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["event"] in ("exited", "launched"):
            seg = e["agent"].split("/")[0]
            ts = datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp()
            if e["event"] == "exited":
                last_exit[seg] = max(last_exit.get(seg, 0.0), ts)
            else:
                first_launch.setdefault(seg, ts)
    segs = sorted(first_launch)
    return sum(first_launch[b] - last_exit[a] for a, b in zip(segs, segs[1:]))


def main():
    parser = argparse.ArgumentParser(description="nightshift launch-overhead benchmark")
    parser.add_argument("--json", metavar="FILE", help="write the JSON summary to FILE instead of stdout")
    args = parser.parse_args()
    build()
    layout = (AGENTS // 100, 10, 10) if AGENTS % 100 == 0 else (1, 1, AGENTS)
    with workdir("bench_launch.") as work:
        with open(work / "items.jsonl", "w") as f:
            for n in range(1, AGENTS + 1):
                f.write(json.dumps({"id": n, "prompt": f"Write a two-line poem about the number {n}."}) + "\n")
        (work / "job.toml").write_text(JOB.format(*layout, PARALLEL))
        fs = filesystem(work)
        run_xargs()  # untimed warm-up of both sides: binaries, page cache, dentries
        run_nightshift(work, "warmup")
        ns, xa, hwm, user, sys_, gaps = [], [], [], [], [], []
        for i in range(RUNS):  # interleaved, alternating which side goes first
            for side in ("xargs", "ns") if i % 2 else ("ns", "xargs"):
                if side == "xargs":
                    xa.append(run_xargs())
                    continue
                sec, peak, u, s, run_dir = run_nightshift(work, f"run{i + 1}")
                for values, v in ((ns, sec), (hwm, peak), (user, u), (sys_, s)):
                    values.append(v)
                gaps.append(boundary_seconds(run_dir))
            print(f"run {i + 1}/{RUNS}: nightshift {ns[-1]:.3f}s (cpu user {user[-1]:.2f}s sys {sys_[-1]:.2f}s, "
                  f"boundaries {gaps[-1]:.3f}s)  xargs {xa[-1]:.3f}s  VmHWM {hwm[-1] / MiB:.1f} MiB", file=sys.stderr)

    n, x = median(ns), median(xa)
    ratio, peak = n / x, max(hwm) / MiB
    summary = {
        "benchmark": "launch", "agents": AGENTS, "max_parallel": PARALLEL, "layout": list(layout),
        "runs": RUNS, "tmp_filesystem": fs,
        "nightshift_wall_s": stats(ns), "xargs_wall_s": stats(xa),
        "nightshift_per_agent_overhead_ms": n * 1000 * PARALLEL / AGENTS,
        "xargs_per_agent_overhead_ms": x * 1000 * PARALLEL / AGENTS,
        "ratio_nightshift_over_xargs": ratio,
        "ratio_median_of_paired_runs": median([a / b for a, b in zip(ns, xa)]),
        "ratio_goal_max": 3.0,
        "segment_boundaries_s_per_run": stats(gaps),
        "nightshift_cpu_incl_agents_s": {"user": stats(user), "sys": stats(sys_)},
        "supervisor_peak_rss_mib": {"median": median(hwm) / MiB, "max": peak}, "rss_goal_max_mib": 30,
    }
    print(f"\nlaunch: {AGENTS} agents x 1 demo item (latency 0ms), max_parallel {PARALLEL}, "
          f"layout {'x'.join(map(str, layout))}, {RUNS} runs, medians; temp dir on {fs}")
    print(f"  {'':18}{'wall s':>9}{'ms/agent/slot':>15}{'min s':>9}{'max s':>9}")
    for name, vals in (("nightshift run -q", ns), ("xargs -P true", xa)):
        m = median(vals)
        print(f"  {name:18}{m:9.3f}{m * 1000 * PARALLEL / AGENTS:15.2f}{min(vals):9.3f}{max(vals):9.3f}")
    print(f"  ratio nightshift/xargs   {ratio:.2f}x   goal <= 3x: {'met' if ratio <= 3 else 'MISSED'} "
          f"(median of per-run ratios {summary['ratio_median_of_paired_runs']:.2f}x)")
    print(f"  segment boundaries       {median(gaps):.3f}s per run ({layout[0] - 1} boundaries, "
          f"last exit -> next launch)")
    print(f"  nightshift CPU           user {median(user):.2f}s  sys {median(sys_):.2f}s (incl. agents)")
    print(f"  supervisor peak RSS      {peak:.1f} MiB (VmHWM, max of runs)   goal < 30 MiB: "
          f"{'met' if peak < 30 else 'MISSED'}")
    emit_json(summary, args.json)


if __name__ == "__main__":
    main()
