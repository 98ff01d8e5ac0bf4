#!/usr/bin/env python3
# bench_batch.py -- the memory of one nightshift-agent holding a provider batch of
# 50,000 requests in flight (issue "Half price overnight", goal: streamed, peak RSS
# under 64 MiB). The server is the tests' fault_server (its OpenAI-shaped batch
# endpoints: POST /files, POST /batches, GET /batches/ID, GET /files/ID/content);
# the job: ITEMS items (~300-byte prompts) in ONE agent, backend openai, mode
# "batch", batch_poll 200ms, max_tokens 20. The agent renders every request,
# uploads them as one JSONL file, polls, downloads the output file and saves every
# record. Its VmHWM is read every 10 ms from /proc/PID/status until it exits (the
# pid from events.jsonl's "launched"). Also: the wall time of the run and the
# records in final.json (all ITEMS expected).
#
# Run:  scripts/bench_batch.py [--json FILE]      (from any folder)
# Env:  ITEMS=50000, RUNS=3, NIGHTSHIFT_ROOT, TMPDIR. Builds with
#       `cargo build --release` first (fault_server included). Python 3.9+,
#       standard library only.
import argparse, json, os, subprocess, sys, time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
from benchlib import NIGHTSHIFT, ROOT, RUNS, build, emit_json, filesystem, spawn, stats, vm_hwm, workdir

ITEMS = int(os.environ.get("ITEMS", "50000"))
KEY_VAR = "BENCH_BATCH_KEY"
JOB = """name = "bench_batch"
[input]
path = "items.jsonl"
[layout]
segments = 1
orchestrators = 1
agents = 1
[agent]
backend = "openai"
timeout = "30m"
[agent.llm]
base_url = "{base_url}"
model = "fault-model"
api_key_env = "{key_var}"
mode = "batch"
batch_poll = "200ms"
prompt = "{{{{prompt}}}}"
max_tokens = 20
"""


def launched_pid(events):
    try:
        with open(events) as f:
            for line in f:
                if '"event":"launched"' in line:
                    return json.loads(line).get("pid")
    except OSError:
        pass
    return None


def one_run(work, base_url):
    run = work / f"run-{time.monotonic_ns()}"
    env = dict(os.environ, **{KEY_VAR: "sk-bench-batch"})
    start = time.perf_counter()
    proc = spawn([str(NIGHTSHIFT), "run", "job.toml", "--run-dir", str(run), "-q"], cwd=work, env=env,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid, peak = None, 0
    while proc.poll() is None:
        pid = pid or launched_pid(run / "events.jsonl")
        if pid:
            peak = max(peak, vm_hwm(pid))
        time.sleep(0.01)
    wall = time.perf_counter() - start
    records = len(json.loads((run / "final.json").read_text())) if (run / "final.json").exists() else 0
    subprocess.run(["rm", "-rf", str(run)])
    return {"agent_peak_mib": peak / 2**20, "wall_s": wall, "records": records, "exit": proc.returncode}


def main():
    parser = argparse.ArgumentParser(description="agent memory with a 50,000-request batch in flight")
    parser.add_argument("--json", help="write the JSON summary here")
    args = parser.parse_args()
    build()
    with workdir("bench_batch.") as work:
        print(f"filesystem: {filesystem(work)}")
        filler = "x" * 260
        with open(work / "items.jsonl", "w") as f:
            for i in range(ITEMS):
                f.write(json.dumps({"id": f"item-{i:06d}", "prompt": f"{i} {filler}"}) + "\n")
        server = spawn([str(ROOT / "target/release/fault_server"), "--log", str(work / "requests.jsonl"),
                        "--lifetime", "3600s", "--batch-polls", "2"], stdout=subprocess.PIPE)
        port = int(server.stdout.readline())
        (work / "job.toml").write_text(JOB.format(base_url=f"http://127.0.0.1:{port}/v1", key_var=KEY_VAR))
        runs = []
        for n in range(RUNS):
            r = one_run(work, port)
            runs.append(r)
            print(f"run {n + 1}/{RUNS}: agent peak RSS {r['agent_peak_mib']:.1f} MiB, wall {r['wall_s']:.1f} s, "
                  f"{r['records']} records, exit {r['exit']}")
        server.terminate()
        peak = stats([r["agent_peak_mib"] for r in runs])
        print(f"\n{ITEMS} requests in one batch, {RUNS} runs: agent peak RSS median {peak['median']:.1f} MiB "
              f"(max {peak['max']:.1f}); goal < 64 MiB: {'met' if peak['max'] < 64 else 'MISSED'}")
        emit_json({"benchmark": "batch_memory", "items": ITEMS, "agent_peak_mib": peak,
                   "wall_s": stats([r["wall_s"] for r in runs]), "records": [r["records"] for r in runs],
                   "exits": [r["exit"] for r in runs]}, args.json)


if __name__ == "__main__":
    main()
