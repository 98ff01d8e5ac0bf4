#!/usr/bin/env python3
# bench_pipeline.py -- a 3-stage pipeline ([[stage]] prep -> draft -> check, each the
# demo backend at LATENCY per item) of ITEMS items in one `nightshift run`, against
# the same work as three separate runs chained by hand (run 1's final.json is run 2's
# input, and so on), at the same limits.max_parallel, runs interleaved after one
# untimed warm-up of each. Reports the median wall seconds of each side, the ratio
# (chain / pipeline: the goal for streaming stages is at least 1.5), and the
# supervisor's peak RSS (VmHWM) on each side. Every run must exit 0 with ITEMS
# records in its final.json, and both sides' final.json must be the same bytes.
#
# Run:  scripts/bench_pipeline.py [--json FILE]     (from any folder)
# Env:  RUNS=5 timed runs per side, ITEMS=10000, MAX_PARALLEL=8, LATENCY=2ms,
#       ITEMS_PER_AGENT=100 (each stage's layout; 2500 gives 4 agents a stage, fewer than
#       MAX_PARALLEL, as a stage of a few agents with many requests in flight would), TMPDIR.
# Builds with `cargo build --release` at the workspace root first. Python 3.9+,
# standard library only. JSON summary: one line at the end of stdout, or FILE.
import argparse, json, os, subprocess, sys, threading, time
from statistics import median

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
from benchlib import NIGHTSHIFT, RUNS, build, emit_json, filesystem, spawn, stats, vm_hwm, workdir

ITEMS = int(os.environ.get("ITEMS", "10000"))
MAX_PARALLEL = int(os.environ.get("MAX_PARALLEL", "8"))
LATENCY = os.environ.get("LATENCY", "2ms")
ITEMS_PER_AGENT = int(os.environ.get("ITEMS_PER_AGENT", "100"))
STAGES = ["prep", "draft", "check"]
HEAD = f"""[limits]
max_parallel = {MAX_PARALLEL}
"""
AGENT = f"""backend = "demo"
[{{table}}.demo]
latency = "{LATENCY}"
"""


def pipeline_job():
    text = f'name = "pipe"\n[input]\npath = "items.jsonl"\n{HEAD}'
    after = None
    for name in STAGES:
        text += f'\n[[stage]]\nname = "{name}"\n'
        if after:
            text += f'after = "{after}"\n'
        text += f"[stage.layout]\nitems_per_agent = {ITEMS_PER_AGENT}\n[stage.agent]\n"
        text += AGENT.format(table="stage.agent")
        after = name
    return text


def stage_job(name, input_path):
    return (f'name = "{name}"\n[input]\npath = "{input_path}"\n{HEAD}'
            f"[layout]\nitems_per_agent = {ITEMS_PER_AGENT}\n[agent]\n" + AGENT.format(table="agent"))


def supervised(argv, cwd):
    """Runs argv to the end, sampling the supervisor's peak RSS: (wall s, peak bytes)."""
    start = time.perf_counter()
    proc = spawn(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], vm_hwm(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, err = proc.communicate()
    sampler.join()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n{err.decode()[-3000:]}")
    return seconds, peak[0]


def check(final):
    records = len(json.loads(final))
    if records != ITEMS:
        sys.exit(f"final.json has {records} records, expected {ITEMS}")
    return final


def run_pipeline(work, name):
    seconds, peak = supervised([str(NIGHTSHIFT), "run", "pipe.toml", "--run-dir", name, "-q"], work)
    return seconds, peak, check((work / name / "final.json").read_bytes())


def run_chain(work, name):
    """The three stages as three runs, each started by hand on the last one's output."""
    total, peak, source = 0.0, 0, "items.jsonl"
    for stage in STAGES:
        job = work / f"{name}_{stage}.toml"
        job.write_text(stage_job(stage, source))
        run_dir = f"{name}_{stage}"
        seconds, stage_peak = supervised([str(NIGHTSHIFT), "run", job.name, "--run-dir", run_dir, "-q"], work)
        total, peak = total + seconds, max(peak, stage_peak)
        source = f"{run_dir}/final.json"
    return total, peak, check((work / source).read_bytes())


def main():
    parser = argparse.ArgumentParser(description="nightshift pipeline vs hand-chained runs")
    parser.add_argument("--json", metavar="FILE", help="write the JSON summary to FILE instead of stdout")
    args = parser.parse_args()
    build()
    with workdir("bench_pipeline.") as work:
        with open(work / "items.jsonl", "w") as f:
            for i in range(ITEMS):
                f.write(json.dumps({"id": f"item-{i:05}", "prompt": f"write about {i}"}) + "\n")
        (work / "pipe.toml").write_text(pipeline_job())
        print(f"{ITEMS} items, 3 demo stages at {LATENCY}/item, {ITEMS_PER_AGENT} items per agent, "
              f"max_parallel {MAX_PARALLEL}, "
              f"on {filesystem(work)}")
        _, _, reference = run_pipeline(work, "warm_pipe")
        _, _, chained = run_chain(work, "warm_chain")
        if reference != chained:
            sys.exit("the pipeline's final.json differs from the hand-chained runs' output")
        pipe, chain, pipe_rss, chain_rss = [], [], [], []
        for n in range(RUNS):
            seconds, peak, final = run_pipeline(work, f"pipe{n}")
            pipe.append(seconds); pipe_rss.append(peak)
            seconds, peak, final2 = run_chain(work, f"chain{n}")
            chain.append(seconds); chain_rss.append(peak)
            if final != reference or final2 != reference:
                sys.exit("a final.json differs from the warm-up's")
            print(f"  run {n + 1}/{RUNS}: pipeline {pipe[-1]:.2f} s, chain {chain[-1]:.2f} s")
        ratio = median(chain) / median(pipe)
        print(f"pipeline: {median(pipe):.2f} s (supervisor peak RSS {max(pipe_rss) / 2**20:.1f} MiB)")
        print(f"chain of 3 runs: {median(chain):.2f} s (largest supervisor peak RSS {max(chain_rss) / 2**20:.1f} MiB)")
        print(f"chain / pipeline: {ratio:.2f}x (goal for streaming stages: >= 1.5x)")
        emit_json({"bench": "pipeline", "items": ITEMS, "stages": len(STAGES), "latency": LATENCY,
                   "items_per_agent": ITEMS_PER_AGENT,
                   "max_parallel": MAX_PARALLEL, "pipeline_s": stats(pipe), "chain_s": stats(chain),
                   "ratio": ratio, "pipeline_rss_bytes": max(pipe_rss),
                   "chain_rss_bytes": max(chain_rss)}, args.json)


if __name__ == "__main__":
    main()
