#!/usr/bin/env python3
# bench_merge.py -- merge throughput: `nightshift merge RUN -q` over 1,000,000
# records of ~200 bytes in 1,000 agent files (10 segments x 10 orchestrators x
# 10 agents of 1,000 items), i.e. agent -> orch -> segment files -> final.json,
# against `cat` of the same 1,000 files into one file, runs interleaved.
# Reports median seconds, MB/s (agent-file bytes / second) and the throughput
# ratio (goal: nightshift >= 1/3 of cat). Page cache is not dropped: both warm.
#
# Setup (untimed): `nightshift run` of a job whose agent.program is /bin/true
# creates the run directory (plan.json, job.toml, folders; the run exits 1,
# everything missing); the script then writes the agent files itself from
# plan.json. One untimed warm-up of each side. final.json is checked once with json.load (untimed).
#
# Run from anywhere:   scripts/bench_merge.py [--json FILE]
# Env: RUNS=5 (timed runs per side), ITEMS=1000000 (multiple of 1,000), TMPDIR.
# Disk: about 5 x 200 MB under TMPDIR. Builds with `cargo build --release` at the
# workspace root first. Python 3.9+, standard library only. The JSON summary goes
# to FILE, else to the end of stdout.
import argparse, json, os, signal, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NIGHTSHIFT = ROOT / "target/release/nightshift"
RUNS = int(os.environ.get("RUNS", "5"))
ITEMS = int(os.environ.get("ITEMS", "1000000"))
RECORD_BYTES = 200  # per line, newline included
WORDS = "amber basil cedar delta ember fjord garnet harbor indigo juniper kelp lumen".split()

JOB = """name = "bench_merge"
[input]
path = "items.jsonl"
id = "id"
[layout]
segments = 10
orchestrators = 10
agents = 10
[agent]
program = ["/bin/true"]
[limits]
max_parallel = 8
"""


def record(n):
    head = '{"id": %d, "output": "' % n
    text = " ".join(WORDS[(n * 7 + k) % len(WORDS)] for k in range(30))
    return head + text[: RECORD_BYTES - len(head) - 3] + '"}\n'


def setup(work):
    """The run directory and its 1,000 agent files; returns (run dir, agent files, bytes)."""
    with open(work / "items.jsonl", "w") as f:
        f.writelines('{"id": %d, "prompt": "p%d"}\n' % (n, n) for n in range(1, ITEMS + 1))
    (work / "job.toml").write_text(JOB)
    run = work / "run"
    r = subprocess.run([str(NIGHTSHIFT), "run", "job.toml", "--run-dir", str(run), "-q"],
                       cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 1 or not (run / "plan.json").exists():
        sys.exit(f"setup run: expected exit 1 (all items missing), got {r.returncode}: {r.stderr.decode()[-2000:]}")
    plan = json.loads((run / "plan.json").read_text())
    files, total = [], 0
    for seg in plan["segments"]:
        for orch in seg["orchestrators"]:
            for a in orch["agents"]:
                path = run / f"segment_{a['segment']:02}/orch_{a['orchestrator']:02}/agent_{a['agent']:02}.jsonl"
                data = "".join(record(i) for i in a["ids"]).encode()
                path.write_bytes(data)
                files.append(str(path))
                total += len(data)
    return run, files, total


def timed(argv, **kw):
    start = time.perf_counter()
    r = subprocess.run(argv, **kw)
    return time.perf_counter() - start, r


def rounded(v):
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    return [rounded(x) for x in v] if isinstance(v, list) else v


def main():
    parser = argparse.ArgumentParser(description="nightshift merge-throughput benchmark")
    parser.add_argument("--json", metavar="FILE", help="write the JSON summary here instead of stdout")
    args = parser.parse_args()
    if ITEMS % 1000:
        sys.exit("ITEMS must be a multiple of 1,000 (1,000 agents)")
    subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the temp dir is removed
    with tempfile.TemporaryDirectory(prefix="bench_merge.", dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        run, files, in_bytes = setup(work)
        print(f"setup: {len(files)} agent files, {in_bytes / 1e6:.1f} MB in {time.perf_counter() - t0:.1f}s",
              file=sys.stderr)
        merge_argv = [str(NIGHTSHIFT), "merge", str(run), "-q"]
        ns, cat = [], []
        for i in range(-1, RUNS):  # run -1: untimed warm-up; then interleaved, alternating order
            for which in (["cat", "ns"] if i % 2 else ["ns", "cat"]):
                if which == "cat":
                    with open(work / "cat.out", "wb") as out:
                        sec, _ = timed(["cat", *files], stdout=out, check=True)
                    cat.append(sec)
                else:
                    sec, r = timed(merge_argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                    if r.returncode != 0:
                        sys.exit(f"nightshift merge exited {r.returncode}: {r.stdout.decode()[-2000:]}")
                    ns.append(sec)
            print(f"{'warm-up' if i < 0 else f'run {i + 1}/{RUNS}'}: nightshift merge {ns[-1]:.3f}s  cat {cat[-1]:.3f}s", file=sys.stderr)
            if i < 0:
                ns.clear(), cat.clear()
        with open(run / "final.json") as f:
            records = len(json.load(f))
        if records != ITEMS:
            sys.exit(f"final.json has {records} records, expected {ITEMS}")
        out_bytes = (run / "final.json").stat().st_size
    med = statistics.median
    mbs = lambda s: in_bytes / 1e6 / s
    summary = {
        "benchmark": "merge", "records": ITEMS, "agent_files": len(files), "input_bytes": in_bytes,
        "final_json_bytes": out_bytes, "runs": RUNS, "page_cache": "warm (not dropped)",
        "nightshift_merge_s": {"median": med(ns), "min": min(ns), "max": max(ns), "all": ns},
        "cat_s": {"median": med(cat), "min": min(cat), "max": max(cat), "all": cat},
        "nightshift_mb_per_s": mbs(med(ns)), "cat_mb_per_s": mbs(med(cat)),
        "throughput_ratio_nightshift_over_cat": med(cat) / med(ns),
        "ratio_paired_median": med([c / n for n, c in zip(ns, cat)]),
        "ratio_goal": 1 / 3, "final_json_valid": True,
    }
    print(f"\nmerge benchmark: {ITEMS} records, {len(files)} agent files, {in_bytes / 1e6:.1f} MB in, "
          f"{RUNS} runs (medians); page cache warm, nothing dropped")
    print(f"  {'':20}{'seconds':>9}{'MB/s':>9}{'min s':>9}{'max s':>9}")
    for name, vals in (("nightshift merge", ns), ("cat > one file", cat)):
        print(f"  {name:20}{med(vals):9.3f}{mbs(med(vals)):9.1f}{min(vals):9.3f}{max(vals):9.3f}")
    ratio = summary["throughput_ratio_nightshift_over_cat"]
    print(f"  throughput nightshift/cat: {ratio:.2f} (goal >= 0.33: {'met' if ratio >= 1 / 3 else 'MISSED'}); "
          f"median of per-run ratios {summary['ratio_paired_median']:.2f}")
    print(f"  nightshift writes 3 levels (orch, segment, final.json: {out_bytes / 1e6:.1f} MB), each fsynced; "
          f"cat writes one file, no fsync. final.json: valid JSON, {records} records")
    text = json.dumps(rounded(summary))
    if args.json:
        Path(args.json).write_text(text + "\n")
        print(f"  JSON summary: {args.json}")
    else:
        print(text)


if __name__ == "__main__":
    main()
