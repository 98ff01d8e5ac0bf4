#!/usr/bin/env python3
# bench_scale.py -- how the supervisor scales with the number of agents alive:
# time until N agents of 20 s are all running, for N = 100, 500, 1000, against
# GNU parallel (`parallel -j N`) and xargs (`xargs -P N`) starting the same
# command, runs interleaved. Each started process is `sleep 20.<tag>` (a tag
# unique to the run, so the script finds exactly its own processes in /proc);
# the ramp is the latest start time of those N processes minus the launcher's
# own start time, both from /proc/PID/stat (clock ticks, 10 ms). Once all N
# run, the launcher's RSS and thread count are read from /proc, then its whole
# tree is ended (nightshift: SIGTERM, which ends its agents; the others: their
# process group). Reports per N and side: median ramp seconds, per-launch ms
# (ramp / N), and for nightshift its RSS and threads with N alive; then the goals:
# per-launch cost at 1,000 within 1.5x of that at 100; all 1,000 running sooner
# than GNU parallel and within 3x of xargs.
#
# The nightshift job: N items, one agent per item (1 segment, 1 orchestrator, N
# agents), max_parallel = N, agent.program = ["/bin/sleep", "20.<tag>"] (a custom
# agent that saves nothing: the run is ended before it could finish).
#
# nightshift creates files as it ramps up (a task file and a log per agent): on an
# ext4 without a journal after many deletes, each creation scans recently freed inodes
# (see benchlib.filesystem), which is the filesystem's cost, not the launch's --
# TMPDIR=/dev/shm measures the launch alone.
#
# Run:  scripts/bench_scale.py [--json FILE]      (from any folder)
# Env:  RUNS=3 timed runs per side and N, SIZES=100,500,1000, TMPDIR.
# Needs GNU parallel (Debian: apt-get install parallel); without it that column
# is skipped. Builds with `cargo build --release` at the workspace root first.
# Python 3.9+, standard library only. JSON summary: one line at the end of
# stdout, or FILE.
import argparse, os, random, shutil, signal, subprocess, sys, time
from statistics import median

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
from benchlib import NIGHTSHIFT, build, emit_json, spawn, stats, workdir

RUNS = int(os.environ.get("RUNS", "3"))
SIZES = [int(n) for n in os.environ.get("SIZES", "100,500,1000").split(",")]
TICK = os.sysconf("SC_CLK_TCK")
MiB = 1024 * 1024
JOB = """name = "bench_scale"
[input]
path = "items.jsonl"
id = "id"
[layout]
segments = 1
orchestrators = 1
agents = {n}
[agent]
program = ["/bin/sleep", "{duration}"]
[limits]
max_parallel = {n}
"""


def start_ticks(pid):
    """A process's start time (clock ticks since boot), field 22 of /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def sleepers(duration):
    """Start ticks of every live `sleep DURATION` process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if len(argv) >= 2 and argv[0].endswith(b"sleep") and argv[1] == duration.encode():
                found.append(start_ticks(entry))
        except (OSError, IndexError, ValueError):
            continue
    return found


def status_field(pid, name):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith(name + ":"))
    except (OSError, StopIteration, ValueError):
        return 0


def measure(argv, n, duration, cwd, own_group):
    """Starts argv; waits until n sleepers run; (ramp s, RSS bytes, threads, peak RSS bytes)."""
    proc = spawn(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL, start_new_session=own_group)
    began = start_ticks(proc.pid)
    deadline = time.monotonic() + 120
    found = []
    while time.monotonic() < deadline:
        time.sleep(0.1)
        found = sleepers(duration)
        if len(found) >= n or proc.poll() is not None:
            break
    rss = status_field(proc.pid, "VmRSS") * 1024
    threads = status_field(proc.pid, "Threads")
    hwm = status_field(proc.pid, "VmHWM") * 1024
    if own_group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    # Whatever is left of the tree (none should be): ended by tag.
    for _ in range(50):
        if not sleepers(duration):
            break
        time.sleep(0.1)
    if len(found) < n:
        sys.exit(f"{argv[0]}: only {len(found)} of {n} running after 120 s")
    return (max(found) - began) / TICK, rss, threads, hwm


def main():
    parser = argparse.ArgumentParser(description="time until N agents all run, against GNU parallel and xargs")
    parser.add_argument("--json")
    args = parser.parse_args()
    build()
    have_parallel = shutil.which("parallel") is not None
    sides = ["nightshift", "xargs"] + (["parallel"] if have_parallel else [])
    results = {n: {side: [] for side in sides} for n in SIZES}
    memory = {n: [] for n in SIZES}
    with workdir("bench_scale-") as work:
        for n in SIZES:
            folder = work / f"n{n}"
            folder.mkdir()
            with open(folder / "items.jsonl", "w") as f:
                f.writelines('{"id": %d}\n' % i for i in range(n))
            for run in range(RUNS + 1):  # the first round warms up, untimed
                order = sides[:]
                random.shuffle(order)
                for side in order:
                    duration = f"20.{os.getpid()}{run}{n}{sides.index(side)}"
                    if side == "nightshift":
                        (folder / "job.toml").write_text(JOB.format(n=n, duration=duration))
                        shutil.rmtree(folder / "run", ignore_errors=True)
                        argv = [str(NIGHTSHIFT), "run", "job.toml", "--run-dir", "run", "-q"]
                        own_group = False
                    elif side == "xargs":
                        argv = ["sh", "-c", f"seq {n} | xargs -P {n} -I{{}} sleep {duration}"]
                        own_group = True
                    else:
                        argv = ["parallel", "--will-cite", "-j", str(n), "sleep", duration, ":::"] + [str(i) for i in range(n)]
                        own_group = True
                    ramp, rss, threads, hwm = measure(argv, n, duration, folder, own_group)
                    if run == 0:
                        continue
                    results[n][side].append(ramp)
                    if side == "nightshift":
                        memory[n].append((rss, threads, hwm))
                    print(f"  N={n:5} {side:10} run {run}: all running after {ramp:6.2f} s"
                          + (f"  RSS {rss / MiB:.1f} MiB, {threads} threads" if side == "nightshift" else ""),
                          flush=True)
    summary = {"runs": RUNS, "sizes": SIZES, "per_n": {}}
    print(f"\nmedians of {RUNS} runs (per launch = ramp / N):")
    for n in SIZES:
        row = {}
        for side in sides:
            ramp = median(results[n][side])
            row[side] = {"ramp_s": stats(results[n][side]), "per_launch_ms": ramp / n * 1000}
        rss = median(m[0] for m in memory[n])
        threads = max(m[1] for m in memory[n])
        hwm = max(m[2] for m in memory[n])
        row["nightshift"].update({"rss_mib": rss / MiB, "threads_max": threads, "peak_rss_mib": hwm / MiB})
        summary["per_n"][n] = row
        cells = "  ".join(f"{side} {row[side]['ramp_s']['median']:6.2f} s ({row[side]['per_launch_ms']:.2f} ms)" for side in sides)
        print(f"  N={n:5}: {cells}  | nightshift RSS {rss / MiB:.1f} MiB, {threads} threads")
    if 100 in SIZES and 1000 in SIZES:
        per = lambda n, side: summary["per_n"][n][side]["per_launch_ms"]
        ratio = per(1000, "nightshift") / per(100, "nightshift")
        vs_xargs = summary["per_n"][1000]["nightshift"]["ramp_s"]["median"] / summary["per_n"][1000]["xargs"]["ramp_s"]["median"]
        summary["goals"] = {"per_launch_1000_over_100": ratio, "ramp_1000_vs_xargs": vs_xargs}
        print(f"per-launch cost at 1000 / at 100: {ratio:.2f} (goal <= 1.5)")
        print(f"all 1000 running, nightshift / xargs: {vs_xargs:.2f} (goal <= 3)")
        if have_parallel:
            vs_parallel = summary["per_n"][1000]["nightshift"]["ramp_s"]["median"] / summary["per_n"][1000]["parallel"]["ramp_s"]["median"]
            summary["goals"]["ramp_1000_vs_parallel"] = vs_parallel
            print(f"all 1000 running, nightshift / GNU parallel: {vs_parallel:.2f} (goal < 1)")
    emit_json(summary, args.json)


if __name__ == "__main__":
    main()
