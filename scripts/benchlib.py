# benchlib.py -- helpers shared by scripts/bench_*.py (not run by itself): the
# release build, a temp dir that is removed on exit or on SIGINT/SIGTERM/SIGHUP,
# the temp dir's filesystem, and the JSON summary. Standard library only.
# NIGHTSHIFT_ROOT=DIR measures another checkout (e.g. a `git worktree` of HEAD, a stable
# snapshot while the tree is being edited): it is built there and its
# target/release/nightshift is run. Default: the workspace these scripts live in.
import contextlib, json, os, signal, subprocess, sys, tempfile, time
from datetime import datetime
from pathlib import Path

ROOT = Path(os.environ.get("NIGHTSHIFT_ROOT") or Path(__file__).resolve().parent.parent).resolve()
NIGHTSHIFT = ROOT / "target/release/nightshift"
RUNS = int(os.environ.get("RUNS", "5"))


def build():
    """`cargo build --release` at the workspace root; the benchmark stops if it fails."""
    if subprocess.run(["cargo", "build", "--release"], cwd=ROOT).returncode != 0:
        sys.exit("cargo build --release failed: nothing measured")


_children = []


def spawn(argv, **popen_kwargs):
    """subprocess.Popen, remembered so that workdir() can stop it if the script is cut short."""
    proc = subprocess.Popen(argv, **popen_kwargs)
    _children.append(proc)
    return proc


@contextlib.contextmanager
def workdir(prefix):
    """A fresh folder under ${TMPDIR:-/tmp}, removed however the script ends (after stopping
    a benchmarked process still running in it)."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _: sys.exit(128 + signum))  # unwinds through the cleanup
    with tempfile.TemporaryDirectory(prefix=prefix, dir=os.environ.get("TMPDIR") or "/tmp") as tmp:
        try:
            yield Path(tmp)
        finally:
            for proc in _children:
                if proc.returncode is None and proc.poll() is None:
                    proc.terminate()  # nightshift stops its agents, then exits
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()


def filesystem(path):
    """Type of the filesystem holding path, from /proc/mounts; ext4 without a journal is flagged
    (it skips inodes freed in the last ~5 minutes when creating files, which can make
    file-creating runs after a big delete much slower)."""
    dev, mnt, fstype = "?", "", "?"
    for line in Path("/proc/mounts").read_text().splitlines():
        d, m, t = line.split()[:3]
        if (str(path) + "/").startswith(m.rstrip("/") + "/") and len(m) >= len(mnt):
            dev, mnt, fstype = d, m, t
    jbd2 = os.listdir("/proc/fs/jbd2") if os.path.isdir("/proc/fs/jbd2") else []
    if fstype == "ext4" and not any(j.startswith(os.path.basename(dev) + "-") for j in jbd2):
        fstype += " without journal"
    return f"{fstype} at {mnt}"


def rounded(v):
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    return [rounded(x) for x in v] if isinstance(v, list) else v


def stats(values):
    from statistics import median
    return {"median": median(values), "min": min(values), "max": max(values), "all": list(values)}


def p90(values):
    """90th percentile, nearest rank (of 20 values: the 18th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * 9 // 10) - 1)]


def event_time(ts):
    """An events.jsonl "ts" (RFC 3339 UTC, e.g. 2026-05-09T07:30:00.123Z) as Unix seconds."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def vm_hwm(pid):
    """Peak resident memory (VmHWM) of a process in bytes; 0 when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return 0


def emit_json(summary, path):
    """The summary as one JSON line: into path if given, else at the end of stdout."""
    text = json.dumps(rounded(summary))
    if path:
        Path(path).write_text(text + "\n")
        print(f"  JSON summary: {path}")
    else:
        print(text)


def timed(argv, **popen_kwargs):
    """Runs argv to the end: (wall seconds, exit code, user CPU s, sys CPU s); CPU from wait4."""
    start = time.perf_counter()
    proc = spawn(argv, **popen_kwargs)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return seconds, proc.returncode, usage.ru_utime, usage.ru_stime


def busy_jiffies():
    """(busy, total) jiffies of the whole machine so far (first line of /proc/stat; idle
    and iowait are not busy): the share between two readings says how loaded it was."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def busy_percent(start, end):
    """Percent of all CPUs busy between two busy_jiffies() readings."""
    return 100 * (end[0] - start[0]) / max(1, end[1] - start[1])
