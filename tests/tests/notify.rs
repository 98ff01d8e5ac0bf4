//! The notify command: run once when a session ends, however it ends, with
//! the summary as JSON on stdin, in the job's folder; its failure is
//! journaled and never changes the run's exit code.

use std::path::Path;
use std::time::{Duration, Instant};

use nightshift_tests::{events, launched_pids, wait_until, wait_with_deadline, Job, JobDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// A notify command that saves what it is given as `file` in the job folder
/// (it runs there).
fn saving_to(file: &str) -> [String; 3] {
    ["sh".into(), "-c".into(), format!("cat > {file}")]
}

fn summary(job: &JobDir, file: &str) -> Value {
    let path = job.path().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the notify command wrote {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text} is not JSON: {e}"))
}

fn journaled(run: &Path, name: &str) -> Vec<Value> {
    events(run)
        .into_iter()
        .filter(|e| e["event"] == name)
        .collect()
}

#[test]
fn a_finished_run_sends_its_summary() {
    let job = JobDir::new();
    job.items(6);
    Job::new("items.jsonl")
        .name("nightly")
        .items_per_agent(3)
        .demo()
        .latency("1ms")
        .notify(saving_to("notified.json"))
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run"])
        .expect_code(0);
    let got = summary(&job, "notified.json");
    assert_eq!(got["state"], "finished", "{got}");
    assert_eq!(got["exit_code"], 0);
    assert_eq!(
        got["items"],
        serde_json::json!({"total": 6, "done": 6, "failed": 0, "missing": 0})
    );
    assert_eq!(got["failures"], 0);
    assert!(got["duration_seconds"].as_f64().is_some_and(|s| s >= 0.0));
    assert!(got["cost"].is_null(), "no money is counted yet");
    assert_eq!(got["job"], "nightly");
    let run_dir = got["run_dir"].as_str().expect("run_dir");
    assert!(Path::new(run_dir).join("final.json").is_file(), "{run_dir}");
    let log = events(&job.run_dir());
    let names: Vec<&str> = log.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        names.last(),
        Some(&"notified"),
        "after run-finished: {names:?}"
    );
    assert_eq!(journaled(&job.run_dir(), "notified")[0]["command"][0], "sh");
}

#[test]
fn an_interrupted_run_sends_its_summary_and_a_resume_takes_notify_from_the_command_line() {
    let job = JobDir::new();
    job.items(4);
    // Every item waits while `hold` exists, so the run is surely interrupted
    // mid-way; the resume, without it, completes.
    job.write("hold", "");
    Job::new("items.jsonl")
        .items_per_agent(2)
        .exec(["sh", "-c", "while [ -e hold ]; do sleep 0.05; done; cat"])
        .kill_grace("1s")
        .max_parallel(2)
        .notify(saving_to("notified.json"))
        .write(job.path());
    let child = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run"]);
    let run = job.run_dir();
    assert!(
        wait_until(Duration::from_secs(20), || launched_pids(&run).len() == 2),
        "both agents launched"
    );
    let supervisor = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(supervisor, Signal::SIGINT).expect("signal the supervisor");
    wait_with_deadline(child, Duration::from_secs(30)).expect_code(130);
    let got = summary(&job, "notified.json");
    assert_eq!(got["state"], "interrupted", "{got}");
    assert_eq!(got["exit_code"], 130);
    assert_eq!(got["items"]["total"], 4);
    assert_eq!(got["items"]["done"], 0);
    assert_eq!(got["items"]["missing"], 4);
    assert_eq!(
        got["failures"], 0,
        "agents ended by the shutdown did not fail"
    );

    std::fs::remove_file(job.path().join("hold")).expect("let the items go");
    job.nightshift(&["resume", "run", "--notify", "sh -c 'cat > resumed.json'"])
        .expect_code(0);
    let resumed = summary(&job, "resumed.json");
    assert_eq!(resumed["state"], "finished", "{resumed}");
    assert_eq!(resumed["items"]["done"], 4);
    assert_eq!(
        summary(&job, "notified.json")["state"],
        "interrupted",
        "--notify replaces [notify] for that run"
    );
    assert_eq!(journaled(&run, "notified").len(), 2, "once per session");
}

#[test]
fn notify_from_the_command_line_works_without_a_notify_section() {
    let job = JobDir::new();
    job.items(2);
    Job::new("items.jsonl").demo().write(job.path());
    job.nightshift(&[
        "run",
        "job.toml",
        "--run-dir",
        "run",
        "--notify",
        "sh -c 'cat > \"from cli.json\"'",
    ])
    .expect_code(0);
    assert_eq!(summary(&job, "from cli.json")["state"], "finished");
}

/// A run of two demo items whose notify command is `command`; returns the
/// `notify-failed` event and how long the whole command took.
fn run_with_failing_notify(command: &[&str], timeout: Option<&str>) -> (Value, Duration) {
    let job = JobDir::new();
    job.items(2);
    let mut spec = Job::new("items.jsonl").demo().notify(command);
    if let Some(timeout) = timeout {
        spec = spec.notify_timeout(timeout);
    }
    spec.write(job.path());
    let started = Instant::now();
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    let took = started.elapsed();
    finished.expect_code(0);
    assert!(
        finished.stderr.contains("notify command"),
        "logged: {}",
        finished.stderr
    );
    assert!(
        finished.stdout.trim_end().ends_with("run directory: run"),
        "the run directory is still printed last: {}",
        finished.stdout
    );
    let failed = journaled(&job.run_dir(), "notify-failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(journaled(&job.run_dir(), "notified").is_empty());
    (failed[0].clone(), took)
}

#[test]
fn a_failing_notify_command_is_journaled_and_does_not_change_the_exit_code() {
    let (failed, _) = run_with_failing_notify(&["sh", "-c", "exit 7"], None);
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("code 7")),
        "{failed}"
    );
    let (missing, _) = run_with_failing_notify(&["/nonexistent/tell-someone"], None);
    assert!(
        missing["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot start")),
        "{missing}"
    );
}

#[test]
fn a_notify_command_that_hangs_is_killed_at_its_timeout() {
    let (failed, took) = run_with_failing_notify(&["sleep", "60"], Some("1s"));
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("longer than")),
        "{failed}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

/// Agents that exit with `code` at once, without saving anything.
fn run_agents_exiting(code: i32) -> (JobDir, Value) {
    let job = JobDir::new();
    job.items(4);
    Job::new("items.jsonl")
        .items_per_agent(2)
        .program(["sh", "-c", &format!("exit {code}")])
        .retries(0)
        .notify(saving_to("notified.json"))
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run"])
        .expect_code(if code == 5 { 5 } else { 1 });
    let got = summary(&job, "notified.json");
    (job, got)
}

#[test]
fn a_failed_run_counts_its_failures() {
    let (_job, got) = run_agents_exiting(1);
    assert_eq!(got["state"], "failed", "{got}");
    assert_eq!(got["exit_code"], 1);
    assert_eq!(
        got["items"],
        serde_json::json!({"total": 4, "done": 0, "failed": 4, "missing": 4})
    );
    assert_eq!(got["failures"], 2, "both agents failed once");
}

#[test]
fn a_run_that_cannot_go_on_sends_its_summary() {
    let (_job, got) = run_agents_exiting(5);
    assert_eq!(got["state"], "stopped", "{got}");
    assert_eq!(got["exit_code"], 5);
    assert_eq!(got["items"]["failed"], 0, "not the items' fault");
    assert_eq!(got["failures"], 0);
}
