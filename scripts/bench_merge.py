#!/usr/bin/env python3
# bench_merge.py -- merge throughput: `nightshift merge RUN -q` over 1,000,000
# records of 200 bytes in 1,000 agent files (10 segments x 10 orchestrators x 10
# agents of 1,000 items): agent files -> orch files -> segment files -> final.json,
# against `cat` of the same 1,000 files into one file, runs interleaved (after
# one untimed warm-up of each). Reports median seconds, MB/s (agent-file bytes /
# second, 1 MB = 10^6 bytes) and the throughput ratio (goal: nightshift >= 1/3 of
# cat). The page cache is not dropped: both sides read warm files.
#
# Setup (untimed): `nightshift run` of the job with agent.program = /bin/true
# creates the run directory (plan.json, frozen job.toml, folders) and exits 1
# (everything missing); the script then writes the agent files itself from
# plan.json. final.json is checked once with json.load, outside the timing.
#
# Run:  scripts/bench_merge.py [--json FILE]      (from any folder)
# Env:  RUNS=5 timed runs per side, ITEMS=1000000 (a multiple of 1,000), TMPDIR.
# Disk: about 1 GB under TMPDIR (input, 3 merge levels, cat's copy); the setup run
# alone takes about a minute. Builds with `cargo build --release` at the workspace
# root first. Python 3.9+, standard library only. JSON summary: one line at the
# end of stdout, or FILE.
import argparse, json, os, subprocess, sys, time
from statistics import median

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
from benchlib import NIGHTSHIFT, RUNS, build, emit_json, filesystem, stats, timed, workdir

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
    """The run directory and its agent files: (run dir, agent file paths, their bytes)."""
    with open(work / "items.jsonl", "w") as f:
        f.writelines('{"id": %d, "prompt": "p%d"}\n' % (n, n) for n in range(1, ITEMS + 1))
    (work / "job.toml").write_text(JOB)
    run = work / "run"
    r = subprocess.run([str(NIGHTSHIFT), "run", "job.toml", "--run-dir", str(run), "-q"],
                       cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 1 or not (run / "plan.json").exists():
        sys.exit(f"setup run: expected exit 1 (all missing), got {r.returncode}:\n{r.stderr.decode()[-3000:]}")
    files, total = [], 0
    for seg in json.loads((run / "plan.json").read_text())["segments"]:
        for orch in seg["orchestrators"]:
            for a in orch["agents"]:
                path = run / f"segment_{a['segment']:02}/orch_{a['orchestrator']:02}/agent_{a['agent']:02}.jsonl"
                data = "".join(record(i) for i in a["ids"]).encode()
                path.write_bytes(data)
                files.append(str(path))
                total += len(data)
    return run, files, total


def main():
    parser = argparse.ArgumentParser(description="nightshift merge-throughput benchmark")
    parser.add_argument("--json", metavar="FILE", help="write the JSON summary to FILE instead of stdout")
    args = parser.parse_args()
    if ITEMS % 1000:
        sys.exit("ITEMS must be a multiple of 1,000 (1,000 agents)")
    build()
    with workdir("bench_merge.") as work:
        fs = filesystem(work)
        t0 = time.perf_counter()
        run, files, in_bytes = setup(work)
        print(f"setup: {len(files)} agent files, {in_bytes / 1e6:.1f} MB, {time.perf_counter() - t0:.1f}s",
              file=sys.stderr)
        ns, cat, catsync, user, sys_ = [], [], [], [], []
        for i in range(-1, RUNS):  # i = -1: untimed warm-up; then interleaved, alternating order
            for side in ("cat", "catsync", "ns") if i % 2 else ("ns", "catsync", "cat"):
                if side == "cat":
                    with open(work / "cat.out", "wb") as out:
                        sec, code, _, _ = timed(["cat", *files], stdout=out)
                    cat.append(sec)
                elif side == "catsync":
                    # The same copy made durable, as every merged file is (fsync).
                    sec, code, _, _ = timed(["sh", "-c", 'cat "$@" > cat.out && sync cat.out', "sh", *files],
                                            cwd=work)
                    catsync.append(sec)
                else:
                    with open(work / "merge.out", "wb") as out:
                        sec, code, u, s = timed([str(NIGHTSHIFT), "merge", str(run), "-q"],
                                                stdout=out, stderr=subprocess.STDOUT)
                    for values, v in ((ns, sec), (user, u), (sys_, s)):
                        values.append(v)
                if code != 0:
                    log = (work / "merge.out").read_text()[-3000:] if side == "ns" else ""
                    sys.exit(f"{side} exited {code}\n{log}")
            label = "warm-up" if i < 0 else f"run {i + 1}/{RUNS}"
            print(f"{label}: nightshift merge {ns[-1]:.3f}s (cpu user {user[-1]:.2f}s sys {sys_[-1]:.2f}s)"
                  f"  cat {cat[-1]:.3f}s  cat+fsync {catsync[-1]:.3f}s", file=sys.stderr)
            if i < 0:
                for values in (ns, cat, catsync, user, sys_):
                    values.clear()
        with open(run / "final.json") as f:
            records = len(json.load(f))
        if records != ITEMS:
            sys.exit(f"final.json has {records} records, expected {ITEMS}")
        out_bytes = (run / "final.json").stat().st_size

    n, c = median(ns), median(cat)
    ratio = c / n
    summary = {
        "benchmark": "merge", "records": ITEMS, "agent_files": len(files), "input_bytes": in_bytes,
        "final_json_bytes": out_bytes, "final_json_valid": True, "runs": RUNS,
        "page_cache": "warm, not dropped", "tmp_filesystem": fs,
        "nightshift_merge_s": stats(ns), "cat_s": stats(cat), "cat_fsync_s": stats(catsync),
        "throughput_ratio_nightshift_over_cat_fsync": median(catsync) / n,
        "nightshift_mb_per_s": in_bytes / 1e6 / n, "cat_mb_per_s": in_bytes / 1e6 / c,
        "nightshift_cpu_s": {"user": stats(user), "sys": stats(sys_)},
        "throughput_ratio_nightshift_over_cat": ratio,
        "ratio_median_of_paired_runs": median([b / a for a, b in zip(ns, cat)]),
        "ratio_goal_min": 1 / 3,
    }
    print(f"\nmerge: {ITEMS} records of {RECORD_BYTES} bytes in {len(files)} agent files "
          f"({in_bytes / 1e6:.0f} MB), {RUNS} runs, medians; page cache warm (nothing dropped); "
          f"temp dir on {fs}")
    print(f"  {'':20}{'seconds':>9}{'MB/s':>9}{'min s':>9}{'max s':>9}")
    for name, vals in (("nightshift merge -q", ns), ("cat > one file", cat), ("cat, then fsync", catsync)):
        m = median(vals)
        print(f"  {name:20}{m:9.3f}{in_bytes / 1e6 / m:9.1f}{min(vals):9.3f}{max(vals):9.3f}")
    print(f"  throughput nightshift/cat  {ratio:.3f}   goal >= 0.333: {'met' if ratio >= 1 / 3 else 'MISSED'} "
          f"(median of per-run ratios {summary['ratio_median_of_paired_runs']:.3f})")
    print(f"  throughput nightshift/(cat+fsync)  {median(catsync) / n:.3f}")
    print(f"  nightshift CPU             user {median(user):.2f}s  sys {median(sys_):.2f}s")
    print(f"  note: nightshift reads, checks and writes 3 levels (orch, segment, final.json {out_bytes / 1e6:.0f} MB),"
          f" fsyncing each file; cat writes one file without fsync (coreutils >= 9 copies in the kernel"
          f" with copy_file_range). final.json: valid JSON, {records} records.")
    emit_json(summary, args.json)


if __name__ == "__main__":
    main()
