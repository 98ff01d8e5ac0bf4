#!/usr/bin/env python3
# bench_launch.py -- launch overhead of the supervisor: 1,000 agents of one demo
# item each (demo backend, latency 0 ms, max_parallel 8, layout 10 segments x 10
# orchestrators x 10 agents), against `seq 1000 | xargs -P 8 -n 1 true`, runs
# interleaved. Reports wall seconds, per-agent overhead (wall_ms * max_parallel /
# agents), the nightshift/xargs ratio (goal <= 3x) and the supervisor's own peak
# RSS (VmHWM of the nightshift process, polled every 10 ms; goal < 30 MiB).
# Every run must exit 0 with 1,000 records in final.json (checked untimed).
#
# Run from anywhere:   scripts/bench_launch.py [--json FILE]
# One untimed warm-up run of each side first.
# Env: RUNS=5 (timed runs per side), AGENTS=1000, MAX_PARALLEL=8, TMPDIR.
# Builds with `cargo build --release` at the workspace root first. Python 3.9+,
# standard library only. The JSON summary goes to FILE, else to the end of stdout.
from datetime import datetime
import argparse, json, os, signal, statistics, subprocess, sys, tempfile, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NIGHTSHIFT = ROOT / "target/release/nightshift"
RUNS = int(os.environ.get("RUNS", "5"))
AGENTS = int(os.environ.get("AGENTS", "1000"))
PARALLEL = int(os.environ.get("MAX_PARALLEL", "8"))
MiB = 1024 * 1024

JOB = """name = "bench_launch"
[input]
path = "items.jsonl"
id = "id"
[layout]
segments = {s}
orchestrators = {o}
agents = {a}
[agent]
backend = "demo"
[agent.demo]
latency = "0ms"
[limits]
max_parallel = {p}
"""


def build():
    subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)


def layout(agents):
    """segments x orchestrators x agents; 10 x 10 x 10 for 1,000 agents."""
    if agents % 100 == 0:
        return agents // 100, 10, 10
    return 1, 1, agents


def vm_hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        pass
    return None


def run_nightshift(work, i):
    """One timed run: (seconds, supervisor VmHWM bytes, (user, sys) CPU s incl. agents, run dir)."""
    run_dir = work / f"run{i}"
    with open(work / f"run{i}.out", "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen([str(NIGHTSHIFT), "run", "job.toml", "--run-dir", str(run_dir), "-q"],
                                cwd=work, stdout=out, stderr=subprocess.STDOUT)
        peak, done = [0], threading.Event()

        def poll():  # VmHWM only grows: the last value read is the peak (minus the final < 10 ms)
            while not done.is_set():
                v = vm_hwm(proc.pid)
                if v:
                    peak[0] = max(peak[0], v)
                done.wait(0.01)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        poller.join()
    if proc.returncode != 0:
        sys.exit(f"nightshift run {i} exited {proc.returncode}: {(work / f'run{i}.out').read_text()}")
    records = len(json.loads((run_dir / "final.json").read_text()))
    if records != AGENTS:
        sys.exit(f"run {i}: final.json has {records} records, expected {AGENTS}")
    # wait4's CPU times cover the supervisor and every agent it waited for. (Its ru_maxrss
    # is not used: it also counts this Python process, forked before the exec.)
    return seconds, peak[0], (usage.ru_utime, usage.ru_stime), run_dir


def run_xargs():
    start = time.perf_counter()
    subprocess.run(["bash", "-c", f"seq {AGENTS} | xargs -P {PARALLEL} -n 1 true"], check=True)
    return time.perf_counter() - start


def boundary_gaps(run_dir):
    """Seconds per segment boundary: last 'exited' of a segment -> first 'launched' of the next."""
    last_exit, first_launch = {}, {}
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        seg = e.get("agent", "").split("/")[0]
        ts = datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp()
        if e["event"] == "exited":
            last_exit[seg] = max(last_exit.get(seg, 0), ts)
        elif e["event"] == "launched":
            first_launch.setdefault(seg, ts)
    segs = sorted(first_launch)
    return [first_launch[b] - last_exit[a] for a, b in zip(segs, segs[1:])]


def filesystem(path):
    """Type of the filesystem holding path, from /proc/mounts; ext4 without a journal is flagged."""
    dev, mnt, fstype = "?", "", "?"
    for line in Path("/proc/mounts").read_text().splitlines():
        d, m, t = line.split()[:3]
        if (str(path) + "/").startswith(m.rstrip("/") + "/") and len(m) >= len(mnt):
            dev, mnt, fstype = d, m, t
    jbd2 = os.listdir("/proc/fs/jbd2") if os.path.isdir("/proc/fs/jbd2") else []
    if fstype == "ext4" and not any(j.startswith(os.path.basename(dev) + "-") for j in jbd2):
        fstype += " without journal"
    return f"{fstype} at {mnt}"


def rounded(v):
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    return [rounded(x) for x in v] if isinstance(v, list) else v


def main():
    parser = argparse.ArgumentParser(description="nightshift launch-overhead benchmark")
    parser.add_argument("--json", metavar="FILE", help="write the JSON summary here instead of stdout")
    args = parser.parse_args()
    build()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the temp dir is removed
    with tempfile.TemporaryDirectory(prefix="bench_launch.", dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
        work = Path(tmp)
        with open(work / "items.jsonl", "w") as f:
            for n in range(1, AGENTS + 1):
                f.write(json.dumps({"id": n, "prompt": f"Write a two-line poem about the number {n}."}) + "\n")
        s, o, a = layout(AGENTS)
        (work / "job.toml").write_text(JOB.format(s=s, o=o, a=a, p=PARALLEL))
        run_xargs(), run_nightshift(work, "warmup")  # untimed: page cache, binaries, dentries
        ns, xa, hwm, cpu, gaps = [], [], [], [], []
        for i in range(RUNS):  # interleaved, alternating which goes first
            order = ["x", "n"] if i % 2 else ["n", "x"]
            for which in order:
                if which == "x":
                    xa.append(run_xargs())
                else:
                    sec, peak, times, run_dir = run_nightshift(work, i)
                    ns.append(sec); hwm.append(peak); cpu.append(times)
                    gaps.append(sum(boundary_gaps(run_dir)))
            print(f"run {i + 1}/{RUNS}: nightshift {ns[-1]:.3f}s  xargs {xa[-1]:.3f}s  "
                  f"(cpu user {cpu[-1][0]:.2f}s sys {cpu[-1][1]:.2f}s)  supervisor VmHWM {hwm[-1] / MiB:.1f} MiB",
                  file=sys.stderr)
    med = statistics.median
    summary = {
        "benchmark": "launch", "agents": AGENTS, "max_parallel": PARALLEL, "layout": [s, o, a], "runs": RUNS,
        "nightshift_wall_s": {"median": med(ns), "min": min(ns), "max": max(ns), "all": ns},
        "xargs_wall_s": {"median": med(xa), "min": min(xa), "max": max(xa), "all": xa},
        "nightshift_per_agent_overhead_ms": med(ns) * 1000 * PARALLEL / AGENTS,
        "xargs_per_agent_overhead_ms": med(xa) * 1000 * PARALLEL / AGENTS,
        "ratio_nightshift_over_xargs": med(ns) / med(xa),
        "ratio_paired_median": med([n / x for n, x in zip(ns, xa)]),
        "ratio_goal": 3.0,
        "segment_boundary_s_per_run": {"median": med(gaps), "all": gaps},
        "supervisor_peak_rss_mib": {"median": med(hwm) / MiB, "max": max(hwm) / MiB},
        "rss_goal_mib": 30,
        "nightshift_cpu_s_incl_agents": {"user_median": med([u for u, _ in cpu]),
                                         "sys_median": med([s for _, s in cpu])},
        "tmp_filesystem": filesystem(work),
    }
    print(f"\nlaunch benchmark: {AGENTS} agents x 1 item, demo latency 0ms, max_parallel {PARALLEL}, "
          f"layout {s}x{o}x{a}, {RUNS} runs (medians)")
    rows = [("nightshift run", med(ns), summary["nightshift_per_agent_overhead_ms"]),
            ("xargs -P true", med(xa), summary["xargs_per_agent_overhead_ms"])]
    print(f"  {'':16}{'wall s':>10}{'ms/agent/slot':>15}{'min s':>9}{'max s':>9}")
    for (name, wall, per), vals in zip(rows, (ns, xa)):
        print(f"  {name:16}{wall:10.3f}{per:15.2f}{min(vals):9.3f}{max(vals):9.3f}")
    ratio = summary["ratio_nightshift_over_xargs"]
    print(f"  ratio nightshift/xargs: {ratio:.2f}x (goal <= 3x: {'met' if ratio <= 3 else 'MISSED'}); "
          f"median of per-run ratios {summary['ratio_paired_median']:.2f}x")
    print(f"  segment boundaries (last exit -> next launch, {s - 1} per run): {med(gaps):.3f}s per run")
    peak = max(hwm) / MiB
    print(f"  supervisor peak RSS (VmHWM): median {med(hwm) / MiB:.1f} MiB, max {peak:.1f} MiB "
          f"(goal < 30 MiB: {'met' if peak < 30 else 'MISSED'})")
    c = summary["nightshift_cpu_s_incl_agents"]
    print(f"  nightshift CPU incl. agents: user {c['user_median']:.2f}s, sys {c['sys_median']:.2f}s (medians); "
          f"temp dir on {summary['tmp_filesystem']}")
    text = json.dumps(rounded(summary))
    if args.json:
        Path(args.json).write_text(text + "\n")
        print(f"  JSON summary: {args.json}")
    else:
        print(text)


if __name__ == "__main__":
    main()
