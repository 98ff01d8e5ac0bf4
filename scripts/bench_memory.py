#!/usr/bin/env python3
# bench_memory.py -- how fast agent.memory_limit ends a tree that grows past it, and
# how far past the limit it got. The agent is hog.py (agent.program), one Python
# process that allocates 10 MiB every 50 ms (~200 MiB/s: a bytearray, every 4096th
# byte touched, every chunk kept). Job: 1 item, memory_limit 300MiB, retries 0,
# kill_grace 1s, sample_interval left at its default (500ms); the run exits 1 (the
# item is missing), as expected. Two modes, runs interleaved:
#   sampling  [limits] memory_enforcement = "sampling": the supervisor sums the tree's
#             RSS every sample_interval and TERMs it once it is over the limit
#             goal: dead within 2 sample intervals (1 s) of the crossing
#   auto      the default: a memory cgroup per agent with the limit (hard, by the
#             kernel) where the machine allows one, else sampling; the mode in force
#             is read from report.json's memory.mode (it is also printed at start)
#
# How: hog.py writes its pid, sleeps a random 0-500 ms (so the crossing falls at a
# random phase of the sampling clock), then per chunk appends
# "<time.time()> <bytes allocated so far> <its RSS>" to the file $HOG_LOG (flushed)
# just before the allocation and again just after it (then sleeps 50 ms). Growth
# happens only between such a pair, so the crossing is interpolated linearly inside
# the pair that goes over: "alloc" when allocated bytes exceed the limit (300 MiB =
# 30 chunks exactly, so that is the start of the 31st chunk), "rss" when the
# process's own RSS -- what the sampler compares with the limit; it includes the
# interpreter's ~14 MiB, so it crosses about one chunk earlier -- exceeds it. Death =
# the moment the hog's /proc/PID disappears (reaped by the supervisor), polled every
# ~1 ms; the first poll that sees it a zombie is noted too. In cgroup mode the
# kernel's OOM killer strikes when the cgroup's charge (anon memory, not the
# file-backed pages RSS also counts) reaches the limit: the hog never gets 300 MiB
# allocated. It stalls in reclaim (D state) for a while, then the OOM killer is
# invoked: the kill is found in /dev/kmsg ("Killed process PID", and the "invoked
# oom-killer" record of that report; kmsg's clock is put on time.time() with a
# marker line this script writes to /dev/kmsg at each run's start). For a kernel
# kill the crossing is taken as the hog's last line (the start of the chunk during
# which the charge hit the limit: an upper bound by the ~3-5 ms a chunk takes);
# gone - oom-killer invoked is shown too. In auto mode the sampler can still get
# there first (RSS counts ~6 MiB of file-backed pages the cgroup does not charge, and
# the task sits at the limit while the kernel reclaims): such a run is a sampling
# kill, timed from the RSS crossing. Without a readable /dev/kmsg the killed event's
# "by" decides who killed it (a run where the two disagree is listed). Overshoot, in MiB above the limit: sampling: the
# "killed" event's "rss" (the sample that triggered the kill) and "peak_rss";
# kernel: anon-rss + file-rss of the kernel's "Killed process" record; both: the
# hog's last allocated-bytes line. Event ts are truncated to the millisecond.
#
# (c) The sampler's CPU cost per 100 agents is bench_idle_cpu.py (100 sleeping
# agents, sample_interval 500ms, DURATION=60): run it separately, also with
# MEMORY_LIMIT=1GiB (a cgroup per agent in auto mode: the tick reads two cgroup files
# per agent more) and MEMORY_LIMIT=1GiB MEMORY_ENFORCEMENT=sampling.
#
# Run:  scripts/bench_memory.py [--json FILE]       (from any folder)
# Env:  RUNS_MEM=20 timed runs per mode (interleaved, after one untimed warm-up of
#       each), NIGHTSHIFT_ROOT (checkout to build and measure; default: this one),
#       TMPDIR. Builds with `cargo build --release` first. Python 3.9+, standard
#       library only. JSON summary: one line at the end of stdout, or FILE.
#       Memory: the hog stops growing at 2 x the limit (600 MiB) should nothing stop it.
import argparse, json, os, re, subprocess, sys, time
from statistics import median

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
from benchlib import (NIGHTSHIFT, ROOT, build, busy_jiffies, busy_percent, emit_json, event_time, filesystem, p90,
                      spawn, stats, workdir)

RUNS_MEM = int(os.environ.get("RUNS_MEM", "20"))
MiB = 1 << 20
LIMIT = 300 * MiB
CHUNK = 10 * MiB
SAMPLE_MS = 500
GOAL_MS = 2 * SAMPLE_MS
JOB = """name = "bench_memory"
[input]
path = "items.jsonl"
id = "id"
[agent]
program = ["./hog.py"]
memory_limit = "300MiB"
retries = 0
kill_grace = "1s"
[limits]
memory_enforcement = "{mode}"
"""
HOG_PY = """#!/usr/bin/env python3
import os, random, time
CHUNK, CAP = {chunk}, {cap}
page = os.sysconf("SC_PAGE_SIZE")
log = open(os.environ["HOG_LOG"], "w")
log.write(f"pid {{os.getpid()}}\\n")
log.flush()
time.sleep(random.uniform(0, 0.5))
keep, allocated = [], 0


def line():
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * page
    log.write(f"{{time.time()}} {{allocated}} {{rss}}\\n")
    log.flush()


while True:
    line()
    if allocated < CAP:
        chunk = bytearray(CHUNK)
        for i in range(0, CHUNK, 4096):
            chunk[i] = 1
        keep.append(chunk)
        allocated += CHUNK
    line()
    time.sleep(0.05)
"""
MODES = {"sampling": "sampling", "auto": "auto"}
KILLED_RE = re.compile(r"Killed process (\d+) .*anon-rss:(\d+)kB, file-rss:(\d+)kB")


def proc_state(pid, ticks):
    """(state letter, start ticks) of pid, or None when it is gone or is another process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if ticks is not None and int(fields[19]) != ticks:
        return None
    return fields[0], int(fields[19])


class Kmsg:
    """The kernel log from now on, its timestamps put on time.time() (None if unreadable)."""

    def __init__(self):
        try:
            self.fd = os.open("/dev/kmsg", os.O_RDWR | os.O_NONBLOCK)
        except OSError:
            try:
                self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                self.fd = None
                return
        os.lseek(self.fd, 0, os.SEEK_END)
        self.offset, self.calibrated = None, False
        try:  # local_clock() (kmsg) vs CLOCK_MONOTONIC differ by a fraction of a ms: measure it
            t0 = time.time()
            os.write(self.fd, b"<6>bench_memory.py: clock calibration marker\n")
            t1 = time.time()
            for _, ts, text in self.records():
                if "bench_memory.py: clock calibration marker" in text:
                    self.offset, self.calibrated = (t0 + t1) / 2 - ts, True
        except OSError:
            pass
        if self.offset is None:
            self.offset = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)

    def records(self):
        """(seq, seconds since boot, text) of every record since the last call."""
        out = []
        while True:
            try:
                raw = os.read(self.fd, 8192)
            except BlockingIOError:
                return out
            except BrokenPipeError:  # overrun: records were lost, go on with the rest
                continue
            head, _, text = raw.decode(errors="replace").partition(";")
            parts = head.split(",")
            out.append((int(parts[1]), int(parts[2]) / 1e6, text.split("\n", 1)[0]))

    def oom_kill(self, pid):
        """(invoked time, killed time, anon RSS, anon+file RSS bytes) of the kernel's OOM kill of pid."""
        invoked = None
        for _, ts, text in self.records():
            if "invoked oom-killer" in text:
                invoked = ts
            m = KILLED_RE.search(text)
            if m and int(m.group(1)) == pid:
                anon, rss = int(m.group(2)) * 1024, (int(m.group(2)) + int(m.group(3))) * 1024
                return (invoked + self.offset if invoked is not None else None), ts + self.offset, anon, rss
        return None

    def close(self):
        if self.fd is not None:
            os.close(self.fd)


def crossing(pairs, index):
    """Interpolated time at which field `index` (1 allocated, 2 RSS) of the hog's
    before/after pairs first exceeds LIMIT; None if it never did."""
    for before, after in pairs:
        if before[index] <= LIMIT < after[index]:
            share = (LIMIT - before[index]) / (after[index] - before[index])
            return before[0] + share * (after[0] - before[0])
        if before[index] > LIMIT:  # already over at a before line (grew in between)
            return before[0]
    return None


def one_run(work, mode, n):
    job_dir = work / mode
    run_dir = job_dir / f"run{n}"
    hog_log = job_dir / f"hog{n}.log"
    log = job_dir / f"run{n}.out"
    kmsg = Kmsg()
    env = dict(os.environ, HOG_LOG=str(hog_log))
    with open(log, "wb") as out:
        proc = spawn([str(NIGHTSHIFT), "run", "job.toml", "--run-dir", str(run_dir)],
                     cwd=job_dir, stdout=out, stderr=subprocess.STDOUT, env=env)
        limit = time.monotonic() + 15
        pid = None
        while pid is None:
            try:
                first, newline, _ = hog_log.read_text().partition("\n")
                pid = int(first.split()[1]) if newline else None
            except (OSError, ValueError, IndexError):
                pass
            if pid is None:
                if proc.poll() is not None or time.monotonic() > limit:
                    sys.exit(f"{mode} run {n}: hog.py did not start (nightshift exit code "
                             f"{proc.returncode}):\n{log.read_text()[-3000:]}")
                time.sleep(0.001)
        state = proc_state(pid, None)
        ticks = state[1] if state else None
        zombie, d_state, last = None, 0.0, (time.time(), state[0] if state else "")
        while state is not None:
            now = time.time()
            if zombie is None and state[0] in "ZX":
                zombie = now
            if last[1] == "D":  # uninterruptible: in the kernel, e.g. reclaiming for its cgroup
                d_state += now - last[0]
            last = (now, state[0])
            if time.monotonic() > limit:
                sys.exit(f"{mode} run {n}: hog.py (pid {pid}) still alive after 15 s")
            time.sleep(0.001)
            state = proc_state(pid, ticks)
        gone = time.time()
        code = proc.wait()
    if code != 1:
        sys.exit(f"{mode} run {n}: nightshift exited {code}, expected 1:\n{log.read_text()[-3000:]}")
    oom = kmsg.oom_kill(pid) if kmsg.fd is not None else None
    kmsg_state = "none" if kmsg.fd is None else ("calibrated" if kmsg.calibrated else "uncalibrated")
    kmsg.close()
    zombie = zombie or gone
    events = [json.loads(l) for l in (run_dir / "events.jsonl").read_text().splitlines()]
    launched = next(e for e in events if e["event"] == "launched")
    if launched["pid"] != pid:
        sys.exit(f"{mode} run {n}: hog.py pid {pid}, but the launched event says {launched['pid']}")
    killed = next((e for e in events if e["event"] == "killed" and e.get("reason") == "memory"), None)
    if killed is None:
        sys.exit(f"{mode} run {n}: no killed/memory event in {run_dir / 'events.jsonl'}")
    report_mode = json.loads((run_dir / "report.json").read_text())["memory"]["mode"]
    lines = [tuple(float(x) for x in l.split()) for l in hog_log.read_text().splitlines()[1:] if l.count(" ") == 2]
    pairs = list(zip(lines[0::2], lines[1::2]))
    last_alloc = lines[-1][1] if lines else 0
    t_alloc, t_rss = crossing(pairs, 1), crossing(pairs, 2)
    # Who killed it: the kernel if /dev/kmsg holds an OOM kill of the pid, else the
    # sampler; the killed event says so too, but not always right (see below).
    event_by = killed.get("by", "sampling")
    by = ("kernel" if oom else "sampling") if kmsg_state != "none" else event_by
    r = {"by": by, "event_by": event_by, "event_rss": killed.get("rss"), "mode_in_force": report_mode,
         "kmsg": kmsg_state, "pid": pid, "d_state_ms": d_state * 1000,
         "hog_last_allocated_mib": last_alloc / MiB, "overshoot_hog_alloc_mib": (last_alloc - LIMIT) / MiB,
         "zombie_to_gone_ms": (gone - zombie) * 1000,
         "from_alloc_ms": (gone - t_alloc) * 1000 if t_alloc else None,
         "from_rss_ms": (gone - t_rss) * 1000 if t_rss else None,
         "from_kernel_oom_ms": None, "oom_invoked_to_killed_ms": None,
         "killed_event_after_alloc_ms": None, "killed_event_after_rss_ms": None, "gone_after_killed_event_ms": None,
         "overshoot_event_rss_mib": None, "overshoot_event_peak_mib": None, "overshoot_kernel_rss_mib": None,
         "overshoot_kernel_anon_mib": None, "oom_after_last_hog_line_ms": None,
         "from_last_hog_line_ms": None}
    if by == "sampling":
        t_killed = event_time(killed["ts"])
        r["gone_after_killed_event_ms"] = (gone - t_killed) * 1000
        r["killed_event_after_alloc_ms"] = (t_killed - t_alloc) * 1000 if t_alloc else None
        r["killed_event_after_rss_ms"] = (t_killed - t_rss) * 1000 if t_rss else None
        r["overshoot_event_rss_mib"] = (killed["rss"] - LIMIT) / MiB
        r["overshoot_event_peak_mib"] = (killed["peak_rss"] - LIMIT) / MiB
    if oom:
        invoked, t_oom_killed, kernel_anon, kernel_rss = oom
        r["from_kernel_oom_ms"] = (gone - (invoked or t_oom_killed)) * 1000
        r["oom_invoked_to_killed_ms"] = (t_oom_killed - invoked) * 1000 if invoked else None
        r["overshoot_kernel_rss_mib"] = (kernel_rss - LIMIT) / MiB
        r["overshoot_kernel_anon_mib"] = (kernel_anon - LIMIT) / MiB
        if invoked and lines:
            r["oom_after_last_hog_line_ms"] = (invoked - lines[-1][0]) * 1000
        if lines:
            r["from_last_hog_line_ms"] = (gone - lines[-1][0]) * 1000
    # The reaction this run is judged by: from the crossing of whatever killed it.
    # Sampler: RSS, not allocated bytes -- RSS is what it compares, and it can be over
    # the limit, and killed, before 300 MiB are allocated. Kernel: the cgroup's charge
    # reaches the limit inside the chunk the hog was allocating when it died (its
    # last line is that chunk's start, a chunk takes ~3-5 ms); the task then sits in
    # reclaim (D state) until the OOM killer is invoked. So from the last line: an
    # upper bound, by a few ms.
    # A hog killed between the two lines of the pair that crossed logged no
    # crossing: its last line (before the crossing) gives an upper bound.
    from_last_line = (gone - lines[-1][0]) * 1000 if lines else None
    if by == "kernel":
        r["reaction_ms"] = r["from_last_hog_line_ms"]
    else:
        r["reaction_ms"] = r["from_rss_ms"] if r["from_rss_ms"] is not None else from_last_line
    r["overshoot_mib"] = r["overshoot_kernel_rss_mib"] if by == "kernel" else r["overshoot_event_rss_mib"]
    return r


def summarize(vals):
    vals = [v for v in vals if v is not None]
    return {**stats(vals), "p90": p90(vals)} if vals else None


def fmt(s, key="median"):
    return f"{s[key]:9.1f}" if s else f"{'-':>9}"


def prepare(work, modes=MODES):
    """One job folder per mode: job.toml, items.jsonl, hog.py."""
    for mode, enforcement in modes.items():
        job_dir = work / mode
        job_dir.mkdir()
        (job_dir / "job.toml").write_text(JOB.format(mode=enforcement))
        (job_dir / "items.jsonl").write_text('{"id": "item-1", "prompt": "p"}\n')
        hog = job_dir / "hog.py"
        hog.write_text(HOG_PY.format(chunk=CHUNK, cap=2 * LIMIT))
        hog.chmod(0o755)


def main():
    parser = argparse.ArgumentParser(description="nightshift memory-limit reaction benchmark")
    parser.add_argument("--json", metavar="FILE", help="write the JSON summary to FILE instead of stdout")
    args = parser.parse_args()
    build()
    results = {m: [] for m in MODES}
    with workdir("bench_memory.") as work:
        fs = filesystem(work)
        prepare(work)
        m0 = busy_jiffies()
        for n in range(RUNS_MEM + 1):  # n = 0: untimed warm-up; modes interleaved, alternating
            for mode in ("auto", "sampling") if n % 2 else ("sampling", "auto"):
                r = one_run(work, mode, n)
                if n:
                    results[mode].append(r)
                label = "warm-up" if n == 0 else f"run {n}/{RUNS_MEM}"
                if r["by"] == "kernel":
                    extra = (f"gone {r['reaction_ms']:6.1f} ms after the fatal chunk's start, "
                             f"{r['from_kernel_oom_ms'] or float('nan'):5.1f} ms after the oom-killer, "
                             f"anon+file rss {r['overshoot_kernel_rss_mib']:+.1f} MiB over")
                else:
                    extra = (f"gone {r['reaction_ms']:6.1f} ms after RSS > limit, TERM "
                             f"{r['killed_event_after_rss_ms'] or float('nan'):4.0f} ms after it, "
                             f"sampled rss {r['overshoot_event_rss_mib']:+.0f} MiB over")
                print(f"{label} {mode:8}: killed by {r['by']:8} {extra}, "
                      f"hog got to {r['hog_last_allocated_mib']:.0f} MiB allocated", file=sys.stderr)

    busy = busy_percent(m0, busy_jiffies())
    summary = {"benchmark": "memory", "machine_busy_percent": busy, "cpus": os.cpu_count(), "limit_mib": LIMIT / MiB, "chunk_mib": CHUNK / MiB, "chunk_every_ms": 50,
               "sample_interval_ms": SAMPLE_MS, "runs_per_mode": RUNS_MEM, "tmp_filesystem": fs,
               "nightshift_root": str(ROOT), "event_ts_resolution_ms": 1, "goal_max_ms": GOAL_MS,
               "cpu_per_100_agents": "see bench_idle_cpu.py"}
    print(f"\nmemory limit: hog.py allocating 10 MiB / 50 ms (~200 MiB/s), memory_limit 300 MiB, sample_interval "
          f"{SAMPLE_MS} ms, {RUNS_MEM} runs per mode (interleaved); gone = /proc/PID reaped; temp dir on {fs}; "
          f"machine {busy:.0f}% busy meanwhile ({os.cpu_count()} CPUs)")
    for mode, rs in results.items():
        modes_in_force = sorted({re.sub(r"nightshift-\d+", "nightshift-PID", r["mode_in_force"]) for r in rs})
        killers = {b: sum(1 for r in rs if r["by"] == b) for b in sorted({r["by"] for r in rs})}
        wrong = [r for r in rs if r["by"] != r["event_by"]]
        out = {"mode_in_force": modes_in_force, "killed_by": killers, "kmsg": sorted({r["kmsg"] for r in rs}),
               "killed_event_says_otherwise": [{"by": r["by"], "event_by": r["event_by"], "event_rss": r["event_rss"]}
                                               for r in wrong]}
        print(f"  {mode}: in force: {' | '.join(modes_in_force)}")
        print(f"    killed by: {', '.join(f'{k} {v}x' for k, v in killers.items())} (kernel = an OOM kill of the "
              f"hog's pid in /dev/kmsg: {', '.join(out['kmsg'])})")
        if wrong:
            print(f"    killed event says otherwise in {len(wrong)} run(s): " + ", ".join(
                f"kernel kill logged as by {r['event_by']} with rss {r['event_rss']}" for r in wrong))
        print(f"    {'':44}{'median':>9}{'p90':>9}{'min':>9}{'max':>9}")
        rows = [("reaction_ms", "reaction ms (crossing of what killed it)"),
                ("from_alloc_ms", "gone - allocated > limit, ms"),
                ("from_rss_ms", "gone - hog RSS > limit, ms"),
                ("from_last_hog_line_ms", "gone - hog's last line, ms"),
                ("from_kernel_oom_ms", "gone - kernel invoked oom-killer, ms"),
                ("oom_invoked_to_killed_ms", "  oom invoked -> Killed record, ms"),
                ("killed_event_after_alloc_ms", "killed event - allocated crossing, ms"),
                ("killed_event_after_rss_ms", "killed event - RSS crossing, ms"),
                ("gone_after_killed_event_ms", "gone - killed event (TERM sent), ms"),
                ("zombie_to_gone_ms", "gone - first seen zombie, ms"),
                ("d_state_ms", "hog seen in D state (reclaim), ms"),
                ("oom_after_last_hog_line_ms", "kernel oom-killer - hog's last line, ms"),
                ("overshoot_mib", "overshoot MiB (of what killed it)"),
                ("overshoot_event_rss_mib", "  killed event rss - limit, MiB"),
                ("overshoot_event_peak_mib", "  killed event peak_rss - limit, MiB"),
                ("overshoot_kernel_rss_mib", "  kernel: anon+file rss - limit, MiB"),
                ("overshoot_kernel_anon_mib", "  kernel: anon rss - limit, MiB"),
                ("overshoot_hog_alloc_mib", "  hog's last allocated line - limit, MiB")]
        for key, label in rows:
            s = summarize([r[key] for r in rs])
            out[key] = s
            if s:
                n_vals = len(s["all"])
                note = f"  (n={n_vals})" if n_vals != len(rs) else ""
                print(f"    {label:44}{fmt(s)}{fmt(s, 'p90')}{fmt(s, 'min')}{fmt(s, 'max')}{note}")
        s = out["reaction_ms"]
        out["goal_met_median"], out["goal_met_p90"] = s["median"] < GOAL_MS, s["p90"] < GOAL_MS
        print(f"    goal reaction < {GOAL_MS} ms (2 sample intervals): median "
              f"{'met' if out['goal_met_median'] else 'MISSED'}, p90 {'met' if out['goal_met_p90'] else 'MISSED'}, "
              f"max {'met' if s['max'] < GOAL_MS else 'MISSED'}")
        summary[mode] = out
    emit_json(summary, args.json)


if __name__ == "__main__":
    main()
