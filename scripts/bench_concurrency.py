#!/usr/bin/env python3
# bench_concurrency.py -- what agent.concurrency buys the exec backend: one agent
# (layout 1 x 1 x 1) runs N items of a 100 ms command (`sleep 0.1`, then the item
# echoed back as its record) with agent.concurrency = 8, against the same job at
# concurrency 1, runs interleaved (after one untimed warm-up of each). Reports the
# median wall seconds and items/s of each side and the speed-up (concurrency 1 wall
# / concurrency 8 wall; at most 8, the number of commands in flight). Every run must
# exit 0 with N records in final.json, and both sides' final.json must be the same
# bytes (records are saved in completion order, merged in input order).
#
# Run:  scripts/bench_concurrency.py [--json FILE]     (from any folder)
# Env:  RUNS=5 timed runs per side, ITEMS=1000, CONCURRENCY=8, TMPDIR.
# Builds with `cargo build --release` at the workspace root first. Python 3.9+,
# standard library only. JSON summary: one line at the end of stdout, or FILE.
import argparse, json, os, subprocess, sys
from statistics import median

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
from benchlib import NIGHTSHIFT, RUNS, build, emit_json, filesystem, stats, timed, workdir

ITEMS = int(os.environ.get("ITEMS", "1000"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "8"))
COMMAND_S = 0.1
JOB = """name = "bench_concurrency"
[input]
path = "items.jsonl"
[layout]
segments = 1
orchestrators = 1
agents = 1
[agent]
backend = "exec"
command = ["sh", "-c", "sleep {command_s}; cat"]
concurrency = {concurrency}
"""


def run(work, concurrency, name):
    """One run of the job at `concurrency`: (wall s, final.json bytes)."""
    run_dir, log = work / name, work / f"{name}.out"
    with open(log, "wb") as out:
        seconds, code, _, _ = timed(
            [str(NIGHTSHIFT), "run", f"job{concurrency}.toml", "--run-dir", str(run_dir), "-q"],
            cwd=work, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        sys.exit(f"nightshift run {name} exited {code}:\n{log.read_text()[-3000:]}")
    final = (run_dir / "final.json").read_bytes()
    records = len(json.loads(final))
    if records != ITEMS:
        sys.exit(f"run {name}: final.json has {records} records, expected {ITEMS}")
    return seconds, final


def main():
    parser = argparse.ArgumentParser(description="nightshift agent.concurrency benchmark (exec backend)")
    parser.add_argument("--json", metavar="FILE", help="write the JSON summary to FILE instead of stdout")
    args = parser.parse_args()
    build()
    with workdir("bench_concurrency.") as work:
        with open(work / "items.jsonl", "w") as f:
            for n in range(1, ITEMS + 1):
                f.write(json.dumps({"id": n, "prompt": f"Say something about {n}."}) + "\n")
        for concurrency in {1, CONCURRENCY}:
            (work / f"job{concurrency}.toml").write_text(
                JOB.format(command_s=COMMAND_S, concurrency=concurrency))
        fs = filesystem(work)
        _, reference = run(work, CONCURRENCY, "warmup_many")  # untimed warm-up of both sides
        run(work, 1, "warmup_one")
        many, one = [], []
        for i in range(RUNS):  # interleaved, alternating which side goes first
            for side in (1, CONCURRENCY) if i % 2 else (CONCURRENCY, 1):
                seconds, final = run(work, side, f"run{i + 1}_c{side}")
                if final != reference:
                    sys.exit(f"run {i + 1} at concurrency {side}: final.json differs from the warm-up's")
                (many if side == CONCURRENCY else one).append(seconds)
            print(f"run {i + 1}/{RUNS}: concurrency {CONCURRENCY} {many[-1]:.3f}s  "
                  f"concurrency 1 {one[-1]:.3f}s", file=sys.stderr)

    m, o = median(many), median(one)
    speedup = o / m
    summary = {
        "benchmark": "concurrency", "items": ITEMS, "command_s": COMMAND_S,
        "concurrency": CONCURRENCY, "runs": RUNS, "tmp_filesystem": fs,
        f"concurrency_{CONCURRENCY}_wall_s": stats(many), "concurrency_1_wall_s": stats(one),
        f"concurrency_{CONCURRENCY}_items_per_s": ITEMS / m, "concurrency_1_items_per_s": ITEMS / o,
        "speedup": speedup, "speedup_median_of_paired_runs": median([b / a for a, b in zip(many, one)]),
        "speedup_ideal": float(CONCURRENCY), "final_json_identical": True,
    }
    print(f"\nconcurrency: 1 agent, {ITEMS} exec items of {COMMAND_S * 1000:.0f} ms, {RUNS} runs, "
          f"medians; temp dir on {fs}")
    print(f"  {'':16}{'wall s':>9}{'items/s':>10}{'min s':>9}{'max s':>9}")
    for name, vals in ((f"concurrency {CONCURRENCY}", many), ("concurrency 1", one)):
        v = median(vals)
        print(f"  {name:16}{v:9.3f}{ITEMS / v:10.1f}{min(vals):9.3f}{max(vals):9.3f}")
    print(f"  speed-up 1 -> {CONCURRENCY}   {speedup:.2f}x (ideal {CONCURRENCY}x); "
          f"final.json identical at both")
    emit_json(summary, args.json)


if __name__ == "__main__":
    main()
