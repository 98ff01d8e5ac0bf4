#!/usr/bin/env python3
# bench_resume.py -- resume start-up on a big run directory: 10,000 agent files
# holding 1,000,000 records of ~200 bytes (100 segments x 10 orchestrators x 10
# agents of 100 items), where exactly one agent -- the last of the last segment --
# is unfinished (50 of its 100 records). Measures, from launching
# `nightshift resume DIR -q`, the time until its first new "launched" event in
# DIR/events.jsonl (goal: under 1 s), the total wall time of the resume, and the
# supervisor's peak RSS (VmHWM of the process, polled every 10 ms until it exits).
# The resume exits 1: agent.program is /bin/true, which writes nothing, so 50 items
# stay missing -- and the state is the same for the next repetition (checked).
#
# Setup (untimed): items.jsonl of 1,000,000 items {"id": "item-0000001", "prompt":
# ...}; job: [layout] segments 100, orchestrators 10, agents 10; agent.program
# /bin/true, retries 0; `nightshift run job.toml --run-dir DIR -q` once (exit 1:
# everything missing; it writes plan.json, every task file and the events); then
# every agent file is written by this script from plan.json, the last agent's with
# its first 50 records only; then `nightshift merge DIR -q` once (exit 1, items
# missing) so that segments 1-99 are merged and up to date.
# Timed: events.jsonl is polled every ~5 ms from its size before the start; the
# phases come from the resume's own events (ts, ms): process start -> "resumed"
# (lock, frozen job, task files, leftovers, reading every agent file) ->
# "run-started" (events.jsonl read for attempt numbers, supervisor set up) ->
# "launched" (segments 1-99 found up to date).
#
# Run:  scripts/bench_resume.py [--json FILE]      (from any folder)
# Env:  RUNS=3 timed resumes, SEGMENTS=100 (of 100 agent files each: a smaller
#       run for a quick try), NIGHTSHIFT_ROOT (checkout to build and measure;
#       default: this one), TMPDIR. Disk: about 1 GB under TMPDIR (input, task
#       files, agent files and 3 merge levels); the setup takes a few minutes.
#       Builds with `cargo build --release` first. Python 3.9+, standard library
#       only. JSON summary: one line at the end of stdout, or FILE.
import argparse, json, os, subprocess, sys, threading, time
from statistics import median

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
from benchlib import NIGHTSHIFT, ROOT, build, emit_json, event_time, filesystem, spawn, stats, vm_hwm, workdir

RUNS = int(os.environ.get("RUNS", "3"))
SEGMENTS = int(os.environ.get("SEGMENTS", "100"))
ORCHS, AGENTS, PER_AGENT = 10, 10, 100
ITEMS = SEGMENTS * ORCHS * AGENTS * PER_AGENT
KEEP = PER_AGENT // 2  # records left in the last agent's file
RECORD_BYTES = 200  # per line, newline included
GOAL_S = 1.0  # issue "Scale": the first launch of a 1M-record resume under 1 s
MiB = 1024 * 1024
WORDS = "amber basil cedar delta ember fjord garnet harbor indigo juniper kelp lumen".split()
JOB = f"""name = "bench_resume"
[input]
path = "items.jsonl"
id = "id"
[layout]
segments = {SEGMENTS}
orchestrators = {ORCHS}
agents = {AGENTS}
[agent]
program = ["/bin/true"]
retries = 0
"""


def record(item_id, n):
    head = '{"id": "%s", "output": "' % item_id
    text = " ".join(WORDS[(n * 7 + k) % len(WORDS)] for k in range(30))
    return head + text[: RECORD_BYTES - len(head) - 3] + '"}\n'


def agent_file(run, a):
    return run / f"segment_{a['segment']:02}/orch_{a['orchestrator']:02}/agent_{a['agent']:02}.jsonl"


def setup(work):
    """The run directory, its agent files, and the last agent: (run dir, last agent's
    file, its first KEEP records, bytes of all agent files, setup-run seconds)."""
    with open(work / "items.jsonl", "w") as f:
        f.writelines('{"id": "item-%07d", "prompt": "Write a two-line poem about the number %d."}\n' % (n, n)
                     for n in range(1, ITEMS + 1))
    (work / "job.toml").write_text(JOB)
    run = work / "run"
    t0 = time.perf_counter()
    r = subprocess.run([str(NIGHTSHIFT), "run", "job.toml", "--run-dir", str(run), "-q"],
                       cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run_s = time.perf_counter() - t0
    if r.returncode != 1 or not (run / "plan.json").exists():
        sys.exit(f"setup run: expected exit 1 (all missing), got {r.returncode}:\n{r.stderr.decode()[-3000:]}")
    agents = [a for seg in json.loads((run / "plan.json").read_text())["segments"]
              for orch in seg["orchestrators"] for a in orch["agents"]]
    if len(agents) != SEGMENTS * ORCHS * AGENTS:
        sys.exit(f"plan.json has {len(agents)} agents, expected {SEGMENTS * ORCHS * AGENTS}")
    total, n = 0, 0
    for i, a in enumerate(agents):
        ids = a["ids"] if i < len(agents) - 1 else a["ids"][:KEEP]
        data = "".join(record(item_id, n + k) for k, item_id in enumerate(ids)).encode()
        n += len(a["ids"])
        agent_file(run, a).write_bytes(data)
        total += len(data)
    last = agent_file(run, agents[-1])
    return run, last, last.read_bytes(), total, run_s


def new_events(path, offset, partial):
    """Events appended to path since offset: (events, new offset, unfinished line)."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    lines = (partial + data).split(b"\n")
    events = []
    for line in lines[:-1]:
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    return events, offset + len(data), lines[-1]


def one_resume(work, run, n):
    events_path = run / "events.jsonl"
    before = events_path.read_bytes()
    offset = len(before)
    launched_before = sum(1 for l in before.splitlines() if b'"event":"launched"' in l)
    log = work / f"resume{n}.out"
    seen, partial, first_launch, hwm_at_launch = [], b"", None, 0
    with open(log, "wb") as out:
        t_wall = time.time()
        start = time.perf_counter()
        proc = spawn([str(NIGHTSHIFT), "resume", str(run), "-q"], stdout=out, stderr=subprocess.STDOUT)
        peak, done = [0], threading.Event()

        def poll():  # VmHWM only grows: the last value read is the peak but for the last < 10 ms
            while not done.is_set():
                peak[0] = max(peak[0], vm_hwm(proc.pid))
                done.wait(0.01)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        while first_launch is None and proc.poll() is None:
            events, offset, partial = new_events(events_path, offset, partial)
            seen += events
            if any(e.get("event") == "launched" for e in events):
                first_launch = time.perf_counter() - start
                hwm_at_launch = max(peak[0], vm_hwm(proc.pid))
                break
            time.sleep(0.005)
        code = proc.wait()
        total = time.perf_counter() - start
        done.set()
        poller.join()
    events, offset, partial = new_events(events_path, offset, partial)
    seen += events
    if first_launch is None:
        sys.exit(f"resume {n}: exited {code} without a launch:\n{log.read_text()[-3000:]}")
    if code != 1:
        sys.exit(f"resume {n}: exited {code}, expected 1 (50 items missing):\n{log.read_text()[-3000:]}")
    launched = [e for e in seen if e.get("event") == "launched"]
    if len(launched) != 1:
        sys.exit(f"resume {n}: {len(launched)} launches, expected exactly 1 (events before: {launched_before})")
    ts = {}
    for e in seen:
        ts.setdefault(e["event"], event_time(e["ts"]))
    phases = {"start_to_resumed_s": ts["resumed"] - t_wall,
              "resumed_to_run_started_s": ts["run-started"] - ts["resumed"],
              "run_started_to_launched_s": ts["launched"] - ts["run-started"],
              "launched_to_exit_s": t_wall + total - ts["launched"]}
    return {"first_launch_s": first_launch, "total_s": total, "peak_rss": peak[0],
            "rss_at_launch": hwm_at_launch, "phases": phases, "agent": launched[0].get("agent"),
            "attempt": launched[0].get("attempt"), "events": [e["event"] for e in seen]}


def main():
    parser = argparse.ArgumentParser(description="nightshift resume start-up benchmark")
    parser.add_argument("--json", metavar="FILE", help="write the JSON summary to FILE instead of stdout")
    args = parser.parse_args()
    build()
    results = []
    with workdir("bench_resume.") as work:
        fs = filesystem(work)
        t0 = time.perf_counter()
        run, last, kept, in_bytes, run_s = setup(work)
        t1 = time.perf_counter()
        r = subprocess.run([str(NIGHTSHIFT), "merge", str(run), "-q"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        if r.returncode != 1:
            sys.exit(f"setup merge: expected exit 1 (items missing), got {r.returncode}:\n{r.stderr.decode()[-3000:]}")
        merge_s = time.perf_counter() - t1
        du = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
        print(f"setup: {SEGMENTS * ORCHS * AGENTS} agent files, {in_bytes / 1e6:.0f} MB of records, run dir "
              f"{du / 1e6:.0f} MB; setup run {run_s:.1f}s, merge {merge_s:.1f}s, total "
              f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
        for n in range(1, RUNS + 1):
            if last.read_bytes() != kept:  # /bin/true writes nothing, so this should never happen
                print(f"resume {n}: the last agent's file had changed; restored to its {KEEP} records",
                      file=sys.stderr)
                last.write_bytes(kept)
            r = one_resume(work, run, n)
            results.append(r)
            p = r["phases"]
            print(f"resume {n}/{RUNS}: first launch {r['first_launch_s']:.3f}s, total {r['total_s']:.3f}s, "
                  f"peak RSS {r['peak_rss'] / MiB:.1f} MiB ({r['rss_at_launch'] / MiB:.1f} at the launch); "
                  f"start->resumed {p['start_to_resumed_s']:.3f}s, ->run-started {p['resumed_to_run_started_s']:.3f}s,"
                  f" ->launched {p['run_started_to_launched_s']:.3f}s, launched->exit {p['launched_to_exit_s']:.3f}s"
                  f" ({r['agent']}, attempt {r['attempt']})", file=sys.stderr)
        final_ok = (run / "final.json").exists()

    first = [r["first_launch_s"] for r in results]
    total = [r["total_s"] for r in results]
    peak = [r["peak_rss"] / MiB for r in results]
    at_launch = [r["rss_at_launch"] / MiB for r in results]
    m = median(first)
    phases = {k: stats([r["phases"][k] for r in results]) for k in results[0]["phases"]}
    summary = {"benchmark": "resume", "records": ITEMS - KEEP, "agent_files": SEGMENTS * ORCHS * AGENTS,
               "record_bytes": in_bytes, "layout": [SEGMENTS, ORCHS, AGENTS], "agents_to_launch": 1,
               "runs": RUNS, "page_cache": "warm, not dropped", "tmp_filesystem": fs, "nightshift_root": str(ROOT),
               "first_launch_s": stats(first), "total_s": stats(total), "goal_first_launch_max_s": GOAL_S,
               "goal_met": m < GOAL_S, "supervisor_peak_rss_mib": {"median": median(peak), "max": max(peak)},
               "supervisor_rss_at_first_launch_mib": {"median": median(at_launch), "max": max(at_launch)},
               "phases_s": phases, "final_json_written": final_ok}
    print(f"\nresume: {SEGMENTS * ORCHS * AGENTS} agent files, {ITEMS - KEEP} records ({in_bytes / 1e6:.0f} MB), "
          f"1 agent left to run; {RUNS} runs, medians; page cache warm; temp dir on {fs}")
    print(f"  {'':30}{'median s':>9}{'min s':>9}{'max s':>9}")
    for label, vals in (("start -> first new launch", first), ("total wall (resume exits 1)", total)):
        print(f"  {label:30}{median(vals):9.3f}{min(vals):9.3f}{max(vals):9.3f}")
    for key, label in (("start_to_resumed_s", "  start -> 'resumed' event"),
                       ("resumed_to_run_started_s", "  -> 'run-started'"),
                       ("run_started_to_launched_s", "  -> 'launched'"),
                       ("launched_to_exit_s", "  launched -> exit")):
        print(f"  {label:30}{phases[key]['median']:9.3f}{phases[key]['min']:9.3f}{phases[key]['max']:9.3f}")
    print(f"  goal first launch < {GOAL_S:g} s: {'met' if m < GOAL_S else 'MISSED'}")
    print(f"  supervisor peak RSS  {max(peak):.1f} MiB (VmHWM, max of runs; {max(at_launch):.1f} MiB at the first launch)")
    emit_json(summary, args.json)


if __name__ == "__main__":
    main()
