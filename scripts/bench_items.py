#!/usr/bin/env python3
# bench_items.py -- supervisor memory against the number of items (issue "Scale",
# goal: peak RSS <= 64 MiB for 1M and for 10M items). For N in ITEMS (default
# 1,000,000 and 10,000,000): items.jsonl of N items {"id": "item-NNNNNNNN",
# "prompt": ~60 chars} (~100 bytes each: 100 MB and 1 GB), a job with
# items_per_agent = N/1000 (1,000 agents), the demo backend at latency 0ms and
# max_parallel 8. `nightshift run job.toml -q` is started; its VmHWM is polled
# every 10 ms. Figures per run:
#   setup_s        process start -> first "launched" event (the input read twice:
#                  checked, then written out as task files and plan.json)
#   peak_to_launch VmHWM at the first launch (setup's peak)
#   peak           VmHWM over the whole run (N = 1M: the run goes to its end,
#                  merges included; N > 1M: the run is stopped by SIGINT once
#                  FULL_RUN_S seconds have passed after the first launch -- a
#                  whole 10M run takes minutes and GBs of disk -- and the peak is
#                  the one until then, merges of the segments done by then included)
#   wall_s, exit   the run's wall time and exit code (0 = finished, 3 = interrupted)
#
# Run:  scripts/bench_items.py [--json FILE]      (from any folder)
# Env:  ITEMS="1000000 10000000", RUNS=3, FULL_RUN_S=20, TMPDIR (put it on tmpfs,
#       e.g. /dev/shm: the 10M run writes ~3 GB), NIGHTSHIFT_ROOT. Builds with
#       `cargo build --release` first. Python 3.9+, standard library only.
import argparse, json, os, signal, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import NIGHTSHIFT, RUNS, build, emit_json, filesystem, spawn, stats, vm_hwm, workdir

JOB = """name = "bench_items"
[input]
path = "items.jsonl"
[layout]
items_per_agent = {per_agent}
[agent]
backend = "demo"
[agent.demo]
latency = "0ms"
[limits]
max_parallel = 8
"""


def write_items(path, n):
    with open(path, "w") as f:
        chunk = []
        for i in range(n):
            chunk.append('{"id": "item-%08d", "prompt": "write a short line about the number %d"}\n' % (i, i))
            if len(chunk) == 100_000:
                f.write("".join(chunk))
                chunk = []
        f.write("".join(chunk))


def first_launch(events):
    try:
        with open(events) as f:
            return any('"event":"launched"' in line for line in f)
    except OSError:
        return False


def one_run(work, n, full_run_s):
    run = work / f"run-{time.monotonic_ns()}"
    start = time.perf_counter()
    proc = spawn([str(NIGHTSHIFT), "run", "job.toml", "--run-dir", str(run), "-q"], cwd=work,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak, launched_at, peak_to_launch, stopped = 0, None, None, False
    while proc.poll() is None:
        peak = max(peak, vm_hwm(proc.pid))
        now = time.perf_counter()
        if launched_at is None and first_launch(run / "events.jsonl"):
            launched_at, peak_to_launch = now, peak
        if launched_at is not None and n > 1_000_000 and not stopped and now - launched_at > full_run_s:
            proc.send_signal(signal.SIGINT)
            stopped = True
        time.sleep(0.01)
    wall = time.perf_counter() - start
    subprocess.run(["rm", "-rf", str(run)])
    return {"setup_s": (launched_at or wall) - start, "peak_to_launch_mib": (peak_to_launch or peak) / 2**20,
            "peak_mib": peak / 2**20, "wall_s": wall, "exit": proc.returncode}


def main():
    parser = argparse.ArgumentParser(description="supervisor memory against the number of items")
    parser.add_argument("--json", help="write the JSON summary here")
    args = parser.parse_args()
    sizes = [int(x) for x in os.environ.get("ITEMS", "1000000 10000000").split()]
    full_run_s = float(os.environ.get("FULL_RUN_S", "20"))
    build()
    summary = {}
    with workdir("bench_items.") as work:
        print(f"filesystem: {filesystem(work)}")
        for n in sizes:
            write_items(work / "items.jsonl", n)
            (work / "job.toml").write_text(JOB.format(per_agent=max(1, n // 1000)))
            runs = [one_run(work, n, full_run_s) for _ in range(RUNS)]
            for r in runs:
                print(f"  N={n:>10,}: setup {r['setup_s']:.2f} s, peak to first launch "
                      f"{r['peak_to_launch_mib']:.1f} MiB, peak {r['peak_mib']:.1f} MiB, "
                      f"wall {r['wall_s']:.1f} s, exit {r['exit']}")
            summary[str(n)] = {k: stats([r[k] for r in runs]) for k in
                               ("setup_s", "peak_to_launch_mib", "peak_mib", "wall_s")}
            summary[str(n)]["exits"] = [r["exit"] for r in runs]
            m = summary[str(n)]
            print(f"N={n:,}: median setup {m['setup_s']['median']:.2f} s, median peak "
                  f"{m['peak_mib']['median']:.1f} MiB (to first launch {m['peak_to_launch_mib']['median']:.1f})")
    emit_json(summary, args.json)


if __name__ == "__main__":
    main()
