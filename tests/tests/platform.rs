//! The platform seam from outside: the run says which implementation answers
//! its process and memory calls (start message, events.jsonl, report.json),
//! and an unknown NIGHTSHIFT_PLATFORM stops it with exit code 2. `.ci/run`
//! runs this file, and the process-tree, memory, resume and status tests,
//! under both implementations (NIGHTSHIFT_PLATFORM unset, then "portable").

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nightshift_tests::{binary, events, wait_with_deadline, Job, JobDir};
use serde_json::Value;

/// The implementation this test run selected (the environment reaches the
/// supervisor the tests start).
fn expected() -> &'static str {
    match std::env::var("NIGHTSHIFT_PLATFORM").as_deref() {
        Ok("portable") => "portable",
        _ => "linux",
    }
}

#[test]
fn the_run_says_which_platform_implementation_it_uses() {
    let job = JobDir::new();
    job.items(4);
    Job::new("items.jsonl")
        .layout(1, 1, 2)
        .demo()
        .memory_limit("1GiB")
        .write(job.path());
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(0);
    let platform = expected();
    assert!(
        finished
            .stdout
            .lines()
            .any(|l| l.starts_with(&format!("platform: {platform} "))),
        "the start message names {platform}:\n{}",
        finished.stdout
    );
    let run = job.run_dir();
    let started = events(&run)
        .into_iter()
        .find(|e| e["event"] == "run-started")
        .expect("a run-started event");
    assert_eq!(started["platform"], platform);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).expect("report"))
            .expect("JSON");
    assert_eq!(report["memory"]["platform"], platform);
    if platform == "portable" {
        // No memory cgroups there: the limit is enforced by sampling, and both
        // the start message and the report say so.
        let mode = report["memory"]["mode"].as_str().unwrap_or_default();
        assert!(mode.starts_with("sampling"), "{mode}");
        assert!(
            finished.stdout.contains("no subreaper"),
            "{}",
            finished.stdout
        );
    }
}

#[test]
fn an_unknown_platform_implementation_is_refused_with_exit_code_2() {
    let job = JobDir::new();
    job.items(2);
    Job::new("items.jsonl").demo().write(job.path());
    let child = Command::new(binary("nightshift"))
        .args(["run", "job.toml", "--run-dir", "run"])
        .current_dir(job.path())
        .env("NIGHTSHIFT_PLATFORM", "windows")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start nightshift");
    let finished = wait_with_deadline(child, Duration::from_secs(60));
    finished.expect_code(2);
    assert!(
        finished.stderr.contains("NIGHTSHIFT_PLATFORM=\"windows\""),
        "{}",
        finished.stderr
    );
    assert!(
        !job.run_dir().exists(),
        "nothing was started: no run directory"
    );
}
