#!/usr/bin/env python3
# bench_platform.py -- the two platform implementations side by side, in the same run
# (runs interleaved, so both see the same machine load): the supervisor's CPU per 100
# sleeping agents (bench_idle_cpu.py's measure: utime+stime of the supervisor over
# DURATION s while 100 sh+sleep agents sleep, sample_interval 500ms) and the reaction
# to a memory hog under memory_enforcement = "sampling" (bench_memory.py's measure:
# from the hog's RSS crossing memory_limit 300MiB to its pid gone). The implementation
# is selected with NIGHTSHIFT_PLATFORM (unset: linux; "portable": sysinfo + POSIX).
# Goals: portable CPU within 2x of linux's; reaction within 2 sample intervals (1 s).
#
# BASELINE_BIN=PATH adds a third column for idle CPU: another nightshift binary (e.g. a
# release build of main) run with the linux implementation, to show the seam did not
# make the linux path slower.
#
# Run:  scripts/bench_platform.py [--json FILE]     (from any folder)
# Env:  RUNS=3 idle-CPU runs per implementation (each DURATION + ~15 s), DURATION=30,
#       RUNS_MEM=5 memory runs per implementation, BASELINE_BIN, NIGHTSHIFT_ROOT, TMPDIR.
#       Builds with `cargo build --release` first. Python 3.9+, standard library only.
import argparse, os, sys
from pathlib import Path
from statistics import median

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
os.environ.setdefault("DURATION", "30")
import bench_idle_cpu as idle  # noqa: E402 (reads DURATION when imported)
import bench_memory as mem  # noqa: E402
from benchlib import ROOT, build, busy_jiffies, busy_percent, emit_json, stats, workdir  # noqa: E402

RUNS = int(os.environ.get("RUNS", "3"))
RUNS_MEM = int(os.environ.get("RUNS_MEM", "5"))
BASELINE_BIN = os.environ.get("BASELINE_BIN") or None
IMPLEMENTATIONS = ("linux", "portable")


def select(implementation):
    """Makes the next nightshift started use `implementation` (and, for "baseline", BASELINE_BIN)."""
    if implementation == "portable":
        os.environ["NIGHTSHIFT_PLATFORM"] = "portable"
    else:
        os.environ.pop("NIGHTSHIFT_PLATFORM", None)
    idle.NIGHTSHIFT = Path(BASELINE_BIN) if implementation == "baseline" else mem.NIGHTSHIFT


def main():
    parser = argparse.ArgumentParser(description="nightshift platform implementations side by side")
    parser.add_argument("--json", metavar="FILE", help="write the JSON summary to FILE instead of stdout")
    args = parser.parse_args()
    build()
    columns = IMPLEMENTATIONS + (("baseline",) if BASELINE_BIN else ())
    cpu = {c: [] for c in columns}
    reaction = {c: [] for c in IMPLEMENTATIONS}
    with workdir("bench_platform.") as work:
        (work / "idle").mkdir()
        idle.prepare(work / "idle")
        mem.prepare(work, {"sampling": "sampling"})
        m0 = busy_jiffies()
        for n in range(1, RUNS + 1):
            for c in columns if n % 2 else reversed(columns):
                select(c)
                r = idle.one_run(work / "idle", f"{c}{n}")
                cpu[c].append(r["percent_of_core"])
                print(f"idle run {n}/{RUNS} {c:9}: {r['percent_of_core']:.3f}% of one core", file=sys.stderr)
        for n in range(RUNS_MEM + 1):  # n = 0: untimed warm-up
            for c in IMPLEMENTATIONS if n % 2 else reversed(IMPLEMENTATIONS):
                select(c)
                r = mem.one_run(work, "sampling", f"{c}{n}")
                if n:
                    reaction[c].append(r["reaction_ms"])
                print(f"memory run {n}/{RUNS_MEM} {c:9}: killed by {r['by']}, gone {r['reaction_ms']:.0f} ms "
                      f"after RSS > limit", file=sys.stderr)
        busy = busy_percent(m0, busy_jiffies())
    select("linux")
    ratio = median(cpu["portable"]) / median(cpu["linux"]) if median(cpu["linux"]) > 0 else None
    summary = {"benchmark": "platform", "nightshift_root": str(ROOT), "machine_busy_percent": busy,
               "cpus": os.cpu_count(), "agents": idle.AGENTS, "duration_s": idle.DURATION, "runs": RUNS,
               "runs_mem": RUNS_MEM, "baseline_bin": BASELINE_BIN,
               "idle_percent_of_one_core": {c: stats(v) for c, v in cpu.items()},
               "reaction_ms": {c: stats(v) for c, v in reaction.items()},
               "portable_over_linux_cpu": ratio, "goal_cpu_ratio_max": 2.0,
               "goal_reaction_max_ms": mem.GOAL_MS}
    print(f"\nplatform implementations, same run, interleaved ({idle.AGENTS} sleeping agents for {idle.DURATION:g} s "
          f"x {RUNS}; memory hog x {RUNS_MEM}; machine {busy:.0f}% busy, {os.cpu_count()} CPUs), medians:")
    print(f"  {'':12}{'idle CPU % of core':>20}{'reaction ms':>14}")
    for c in columns:
        react = f"{median(reaction[c]):14.0f}" if reaction.get(c) else f"{'-':>14}"
        print(f"  {c:12}{median(cpu[c]):20.3f}{react}")
    if ratio is not None:
        print(f"  portable / linux CPU: {ratio:.2f}x (goal <= 2x: {'met' if ratio <= 2 else 'MISSED'})")
    for c in IMPLEMENTATIONS:
        worst = max(reaction[c])
        print(f"  {c} reaction: median {median(reaction[c]):.0f} ms, max {worst:.0f} ms "
              f"(goal < {mem.GOAL_MS} ms: {'met' if worst < mem.GOAL_MS else 'MISSED'})")
    emit_json(summary, args.json)


if __name__ == "__main__":
    main()
