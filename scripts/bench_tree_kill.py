#!/usr/bin/env python3
# bench_tree_kill.py -- how fast a timed-out agent's whole process tree is gone:
# from the agent's timeout deadline to the moment the last of its 50 processes has
# been reaped (its /proc/PID directory has disappeared). The agent is tree.sh
# (agent.program), a shell that starts 49 background `sleep 1000` and `wait`s:
# sh + 49 sleeps = 50 processes in the agent's process group. Job: 1 item,
# agent.timeout 1s, kill_grace 2s, retries 0, limits.sample_interval 500ms; the run
# exits 1 (the item is missing), as expected. Two variants:
#   (a) term: the processes die on SIGTERM       goal: gone <= deadline + 50 ms
#   (b) trap: tree.sh starts with `trap '' TERM` (the sleeps inherit the ignored
#       signal), so only the KILL after kill_grace ends them
#                                                goal: gone <= deadline + 2 s + 50 ms
# How: `nightshift run job.toml --run-dir DIR -q` in the background; poll /proc every
# ~1 ms until 50 processes whose environ holds NIGHTSHIFT_RUN_DIR=DIR exist (pid and
# start time recorded); then poll those pids every ~1 ms until all are gone and note
# time.time(). deadline = ts of the "launched" event + timeout (the supervisor sets
# the deadline just before it writes that event); the "killed" event's ts is when
# TERM went out. Event ts are truncated to the millisecond, so differences to them
# carry +0..1 ms. Reports median and p90 of gone - deadline and gone - killed, and
# killed - deadline (how late the timer fired), per variant.
#
# Run:  scripts/bench_tree_kill.py [--json FILE]     (from any folder)
# Env:  RUNS_KILL=20 timed runs per variant (interleaved, after one untimed warm-up
#       of each), NIGHTSHIFT_ROOT (checkout to build and measure; default: this
#       one), TMPDIR. Builds with `cargo build --release` first. Python 3.9+,
#       standard library only. JSON summary: one line at the end of stdout, or FILE.
import argparse, json, os, subprocess, sys, time
from statistics import median

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
from benchlib import NIGHTSHIFT, ROOT, build, emit_json, event_time, filesystem, p90, spawn, stats, workdir

RUNS_KILL = int(os.environ.get("RUNS_KILL", "20"))
PROCESSES = 50
TIMEOUT_S, GRACE_S = 1.0, 2.0
GOAL_MS = 50
JOB = """name = "bench_tree_kill"
[input]
path = "items.jsonl"
id = "id"
[agent]
program = ["./tree.sh"]
timeout = "1s"
kill_grace = "2s"
retries = 0
[limits]
sample_interval = "500ms"
"""
TREE_SH = """#!/bin/sh
{trap}i=0
while [ $i -lt {sleeps} ]; do
  sleep 1000 &
  i=$((i + 1))
done
wait
"""
VARIANTS = {
    "term": ("(a) dies on TERM", ""),
    "trap": ("(b) ignores TERM", "trap '' TERM\n"),
}


def start_ticks(pid):
    """Start time of a process (field 22 of /proc/PID/stat), None when it is gone (reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def find_tree(marker, proc, limit):
    """Polls /proc until PROCESSES processes carry marker in their environment:
    {pid: start ticks}. A pid whose environment lacks it is skipped for 50 ms only:
    the agent, between the supervisor's fork and exec, still has the supervisor's."""
    found, skip, skip_until = {}, set(), 0.0
    while len(found) < PROCESSES:
        now = time.monotonic()
        if now > limit or proc.poll() is not None:
            sys.exit(f"found {len(found)} of {PROCESSES} agent processes "
                     f"(nightshift exit code {proc.returncode})")
        if now > skip_until:
            skip, skip_until = set(), now + 0.05
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) in found or name in skip:
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    env = f.read()
            except OSError:
                continue
            if marker in env.split(b"\0"):
                ticks = start_ticks(int(name))
                if ticks is not None:
                    found[int(name)] = ticks
            else:
                skip.add(name)
        time.sleep(0.001)
    if len(found) > PROCESSES:
        sys.exit(f"found {len(found)} processes with the run's environment, expected {PROCESSES}")
    return found


def wait_gone(tree, limit):
    """Polls every ~1 ms until no process of tree is left (a pid now naming another
    process counts as gone); returns time.time() at that moment."""
    left = sorted(tree.items())
    while left:
        while left and start_ticks(left[-1][0]) != left[-1][1]:
            left.pop()  # gone; the next one is checked at once
        if not left:
            break
        if time.monotonic() > limit:
            sys.exit(f"{len(left)} of {PROCESSES} processes still there long after the deadline")
        time.sleep(0.001)
    return time.time()


def one_run(work, variant, n):
    job_dir = work / variant
    run_dir = job_dir / f"run{n}"
    marker = b"NIGHTSHIFT_RUN_DIR=" + os.fsencode(run_dir)
    log = job_dir / f"run{n}.out"
    with open(log, "wb") as out:
        proc = spawn([str(NIGHTSHIFT), "run", "job.toml", "--run-dir", str(run_dir), "-q"],
                     cwd=job_dir, stdout=out, stderr=subprocess.STDOUT)
        tree = find_tree(marker, proc, time.monotonic() + 10)
        gone = wait_gone(tree, time.monotonic() + TIMEOUT_S + GRACE_S + 10)
        code = proc.wait()
    if code != 1:
        sys.exit(f"{variant} run {n}: nightshift exited {code}, expected 1:\n{log.read_text()[-3000:]}")
    events = [json.loads(l) for l in (run_dir / "events.jsonl").read_text().splitlines()]
    launched = next(e for e in events if e["event"] == "launched")
    killed = next((e for e in events if e["event"] == "killed" and e.get("reason") == "timeout"), None)
    if killed is None:
        sys.exit(f"{variant} run {n}: no killed/timeout event in {run_dir / 'events.jsonl'}")
    deadline = event_time(launched["ts"]) + TIMEOUT_S
    t_killed = event_time(killed["ts"])
    return {
        "gone_after_deadline_ms": (gone - deadline) * 1000,
        "gone_after_killed_ms": (gone - t_killed) * 1000,
        "killed_after_deadline_ms": (t_killed - deadline) * 1000,
        "processes_signalled": killed.get("processes"),
    }


def main():
    parser = argparse.ArgumentParser(description="nightshift process-tree kill latency benchmark")
    parser.add_argument("--json", metavar="FILE", help="write the JSON summary to FILE instead of stdout")
    args = parser.parse_args()
    build()
    results = {v: [] for v in VARIANTS}
    with workdir("bench_tree_kill.") as work:
        fs = filesystem(work)
        for variant, (_, trap) in VARIANTS.items():
            job_dir = work / variant
            job_dir.mkdir()
            (job_dir / "job.toml").write_text(JOB)
            (job_dir / "items.jsonl").write_text('{"id": "item-1", "prompt": "p"}\n')
            script = job_dir / "tree.sh"
            script.write_text(TREE_SH.format(trap=trap, sleeps=PROCESSES - 1))
            script.chmod(0o755)
        for n in range(RUNS_KILL + 1):  # n = 0: untimed warm-up; variants interleaved, alternating
            for variant in ("trap", "term") if n % 2 else ("term", "trap"):
                r = one_run(work, variant, n)
                if n:
                    results[variant].append(r)
                label = "warm-up" if n == 0 else f"run {n}/{RUNS_KILL}"
                print(f"{label} {variant}: gone {r['gone_after_deadline_ms']:8.1f} ms after the deadline, "
                      f"{r['gone_after_killed_ms']:8.1f} ms after the killed event "
                      f"(timer {r['killed_after_deadline_ms']:+.0f} ms, {r['processes_signalled']} processes signalled)",
                      file=sys.stderr)

    summary = {"benchmark": "tree_kill", "processes": PROCESSES, "timeout_s": TIMEOUT_S, "kill_grace_s": GRACE_S,
               "sample_interval": "500ms", "runs_per_variant": RUNS_KILL, "tmp_filesystem": fs,
               "nightshift_root": str(ROOT), "event_ts_resolution_ms": 1}
    print(f"\ntree kill: agent tree of {PROCESSES} processes (sh + {PROCESSES - 1} sleep), timeout {TIMEOUT_S:g}s, "
          f"kill_grace {GRACE_S:g}s, {RUNS_KILL} runs per variant (interleaved); gone = every /proc/PID reaped; "
          f"temp dir on {fs}")
    print(f"  {'':34}{'median ms':>10}{'p90 ms':>9}{'min ms':>9}{'max ms':>9}")
    for variant, (title, _) in VARIANTS.items():
        rs = results[variant]
        allowed = GOAL_MS + (GRACE_S * 1000 if variant == "trap" else 0)
        out = {"processes_signalled": sorted({r["processes_signalled"] for r in rs}, key=str)}
        print(f"  {title}")
        for key, label in (("gone_after_deadline_ms", "gone - deadline"),
                           ("gone_after_killed_ms", "gone - killed event (TERM sent)"),
                           ("killed_after_deadline_ms", "killed event - deadline")):
            vals = [r[key] for r in rs]
            out[key] = {**stats(vals), "p90": p90(vals)}
            print(f"    {label:32}{median(vals):10.1f}{p90(vals):9.1f}{min(vals):9.1f}{max(vals):9.1f}")
        if variant == "trap":
            vals = [r["gone_after_deadline_ms"] - GRACE_S * 1000 for r in rs]
            out["gone_after_deadline_plus_grace_ms"] = {**stats(vals), "p90": p90(vals)}
            print(f"    {'gone - (deadline + grace)':32}{median(vals):10.1f}{p90(vals):9.1f}"
                  f"{min(vals):9.1f}{max(vals):9.1f}")
        m, p = out["gone_after_deadline_ms"]["median"], out["gone_after_deadline_ms"]["p90"]
        out["goal_max_ms"], out["goal_met_median"], out["goal_met_p90"] = allowed, m < allowed, p < allowed
        print(f"    goal gone - deadline < {allowed:g} ms: median {'met' if m < allowed else 'MISSED'}, "
              f"p90 {'met' if p < allowed else 'MISSED'}   (processes signalled at TERM: "
              f"{', '.join(map(str, out['processes_signalled']))})")
        summary[variant] = out
    emit_json(summary, args.json)


if __name__ == "__main__":
    main()
