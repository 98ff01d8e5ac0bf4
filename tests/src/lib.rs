//! Helpers for the end-to-end tests: find the real binaries, lay out job
//! folders, write job files ([`Job`]), run commands with a deadline, read run
//! directories, and look at real processes in /proc.
//!
//! Misbehaving agents are small programs of this crate (src/bin: a leaker, a
//! memory hog, a TERM-ignorer, a staller, a crasher) built on [`agent_kit`];
//! a test names one with `env!("CARGO_BIN_EXE_<name>")`.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod agent_kit;
mod job;
pub use job::Job;
pub mod litellm;
pub mod priced;

/// The start of an agent program in Python that honours the agent contract:
/// it reads the task and the ids already saved (`task`, `field`, `done`,
/// `out_path`); the test's script goes on from there.
pub const PYTHON_AGENT_PRELUDE: &str = r#"#!/usr/bin/env python3
import json, os, sys
task = json.load(open(os.environ["NIGHTSHIFT_TASK"]))
out_path = os.environ["NIGHTSHIFT_OUTPUT"]
field = task["id_field"]
done = set()
if os.path.exists(out_path):
    for line in open(out_path):
        try:
            done.add(json.loads(line)[field])
        except Exception:
            pass
"#;

/// No test command may run longer than this.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// A built binary of the workspace (the test runner builds them all).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run the tests with `cargo nextest run --workspace` (or cargo build --workspace first)",
        path.display()
    );
    path
}

/// What a finished command left.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Exit code `code`, and `text` on stdout.
    pub fn expect_saying(&self, code: i32, text: &str) -> &Self {
        self.expect_code(code);
        assert!(self.stdout.contains(text), "{}", self.stdout);
        self
    }
}

/// A temporary job folder, removed when dropped.
pub struct JobDir {
    pub dir: tempfile::TempDir,
}

impl Default for JobDir {
    fn default() -> Self {
        Self::new()
    }
}

/// A failing test must not leave its agents behind: on drop, every process
/// that carries the environment of a run inside this folder is killed (by pid).
impl Drop for JobDir {
    fn drop(&mut self) {
        let prefix = format!("NIGHTSHIFT_RUN_DIR={}", self.path().display());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
            let ours = std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|entry| entry.starts_with(prefix.as_bytes()))
            });
            if ours {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl JobDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("nightshift-test-")
                .tempdir()
                .expect("temporary folder"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).expect("write test file");
        path
    }

    /// An executable script.
    pub fn script(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.write(name, text);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// `n` JSONL items with ids "item-001"… and a prompt each.
    pub fn items(&self, n: usize) -> Vec<String> {
        let ids: Vec<String> = (1..=n).map(|i| format!("item-{i:03}")).collect();
        let text: String = ids
            .iter()
            .map(|id| format!("{{\"id\": \"{id}\", \"prompt\": \"say something about {id}\"}}\n"))
            .collect();
        self.write("items.jsonl", &text);
        ids
    }

    pub fn run_dir(&self) -> PathBuf {
        self.path().join("run")
    }

    /// `nightshift ARGS` in this folder, to completion.
    pub fn nightshift(&self, args: &[&str]) -> Finished {
        let child = self.spawn_nightshift(args);
        wait_with_deadline(child, COMMAND_DEADLINE)
    }

    /// `nightshift ARGS` in this folder, started in its own process group.
    pub fn spawn_nightshift(&self, args: &[&str]) -> Child {
        let mut command = Command::new(binary("nightshift"));
        command
            .args(args)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        command.spawn().expect("start nightshift")
    }
}

/// Waits for `child`, collecting its output; kills its process group and fails
/// the test if it outlives `deadline`.
pub fn wait_with_deadline(mut child: Child, deadline: Duration) -> Finished {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for nightshift") {
            break status;
        }
        if started.elapsed() > deadline {
            let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            panic!("command ran longer than {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        code: status.code(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Polls `condition` until it holds or `deadline` passes.
pub fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    condition()
}

/// The ids of a JSONL record file, in file order.
pub fn jsonl_ids(path: &Path) -> Vec<String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {l}: {e}", path.display()));
            id_text(&v)
        })
        .collect()
}

/// The ids of a JSON array file, in order.
pub fn json_array_ids(path: &Path) -> Vec<String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(id_text)
        .collect()
}

fn id_text(record: &Value) -> String {
    match &record["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every JSON object of events.jsonl.
pub fn events(run_dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(run_dir.join("events.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Pids of every `launched` event.
pub fn launched_pids(run_dir: &Path) -> Vec<i32> {
    events(run_dir)
        .iter()
        .filter(|e| e["event"] == "launched")
        .filter_map(|e| e["pid"].as_i64())
        .filter_map(|p| i32::try_from(p).ok())
        .collect()
}

/// True when a process with this pid exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Pids of live processes whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')').is_some_and(|(_, rest)| {
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    // fields[0] is the state, fields[2] the process group.
                    fields.first() != Some(&"Z")
                        && fields.get(2) == Some(&pgid.to_string().as_str())
                })
            })
        })
        .collect()
}

/// Live processes that carry this run's environment (NIGHTSHIFT_RUN_DIR):
/// every process an agent of the run started, unless it cleared its environment.
pub fn run_processes(run_dir: &Path) -> Vec<i32> {
    let wanted = format!("NIGHTSHIFT_RUN_DIR={}", run_dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|entry| entry == wanted.as_bytes())
            })
        })
        .collect()
}

/// Pids written by test scripts into a file, one per line.
pub fn pids_in(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// True when a Slurm controller answers with a usable node. Without one the
/// Slurm tests skip, saying how to get one; with NIGHTSHIFT_SLURM_TESTS set
/// (as `.ci/run` does) a missing Slurm fails the test instead.
pub fn slurm_ready() -> bool {
    let ready = Command::new("sinfo")
        .args(["--noheader", "--format=%t"])
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).lines().any(|state| {
                    ["idle", "mix", "alloc"]
                        .iter()
                        .any(|s| state.starts_with(s))
                })
        });
    if !ready {
        assert!(
            std::env::var_os("NIGHTSHIFT_SLURM_TESTS").is_none(),
            "NIGHTSHIFT_SLURM_TESTS is set but no Slurm node is up (sinfo)"
        );
        eprintln!(
            "skipped: no Slurm here. To run the Slurm tests: `sudo scripts/slurm_up.sh`, then `cargo nextest run -E 'binary(slurm) | binary(rate_tcp)'`"
        );
    }
    ready
}

/// Cancels every Slurm job a run's events name, even when the test fails.
pub struct CancelJobs<'a>(pub &'a Path);

impl Drop for CancelJobs<'_> {
    fn drop(&mut self) {
        let ids: Vec<String> = events(self.0)
            .iter()
            .filter_map(|e| e["job_id"].as_u64())
            .map(|id| id.to_string())
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("scancel").args(&ids).status();
        }
    }
}
