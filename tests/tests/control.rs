//! `nightshift control` on a live run, from another process: raising
//! concurrency, pausing and continuing launches, a graceful stop that leaves a
//! resumable run; every change journaled and shown by `status`.

use std::time::Duration;

use serde_json::Value;

use nightshift_tests::{events, json_array_ids, wait_until, wait_with_deadline, Job, JobDir};

/// The most agents that were running at once, from the journal's launched
/// and exited events (in journal order), counting only events after the
/// first `control` event whose action is `after` (all events when None).
fn most_at_once(journal: &[Value], after: Option<&str>) -> usize {
    let start = after.map_or(0, |action| {
        journal
            .iter()
            .position(|e| e["event"] == "control" && e["action"] == action)
            .unwrap_or(journal.len())
    });
    let mut running: i64 = 0;
    let mut most = 0;
    for (index, event) in journal.iter().enumerate() {
        match event["event"].as_str() {
            Some("launched") => running += 1,
            Some("exited") => running -= 1,
            _ => {}
        }
        if index >= start {
            most = most.max(running);
        }
    }
    usize::try_from(most).unwrap_or(0)
}

fn count(journal: &[Value], name: &str) -> usize {
    journal.iter().filter(|e| e["event"] == name).count()
}

#[test]
fn control_raises_concurrency_pauses_continues_and_stops_a_live_run() {
    let job_dir = JobDir::new();
    let ids = job_dir.items(40);
    Job::new("items.jsonl")
        .items_per_agent(1)
        .exec(["sh", "-c", "sleep 0.4; cat"])
        .max_parallel(1)
        .write(job_dir.path());
    let child = job_dir.spawn_nightshift(&["run", "job.toml", "--run-dir", "run", "-q"]);
    let run = job_dir.run_dir();
    let control = |args: &[&str]| {
        let mut all = vec!["control", "run"];
        all.extend_from_slice(args);
        job_dir.nightshift(&all)
    };
    assert!(
        wait_until(Duration::from_secs(30), || count(&events(&run), "launched")
            >= 1),
        "the run starts"
    );

    control(&["--max-parallel", "3"]).expect_code(0);
    assert!(
        wait_until(Duration::from_secs(30), || {
            most_at_once(&events(&run), Some("max-parallel")) >= 3
        }),
        "three agents run at once after --max-parallel 3"
    );
    let status = job_dir.nightshift(&["status", "run", "--json"]);
    let status: Value = serde_json::from_str(&status.stdout).expect("status json");
    assert_eq!(status["max_parallel"], 3, "{status}");

    control(&["--pause"]).expect_code(0);
    // Once paused, the agents running finish and nothing new starts.
    assert!(
        wait_until(Duration::from_secs(30), || {
            let journal = events(&run);
            count(&journal, "launched") == count(&journal, "exited")
        }),
        "the running agents finish while paused"
    );
    let launched = count(&events(&run), "launched");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        count(&events(&run), "launched"),
        launched,
        "nothing is launched while paused"
    );
    let status = job_dir.nightshift(&["status", "run", "--json"]);
    let status: Value = serde_json::from_str(&status.stdout).expect("status json");
    assert_eq!(status["paused"], true, "{status}");
    assert!(
        job_dir
            .nightshift(&["status", "run"])
            .stdout
            .contains("paused"),
        "status says so"
    );

    control(&["--continue"]).expect_code(0);
    assert!(
        wait_until(Duration::from_secs(30), || count(&events(&run), "launched")
            > launched),
        "launches go on after --continue"
    );

    control(&["--stop"]).expect_code(0);
    let stopped = wait_with_deadline(child, Duration::from_secs(60));
    assert_eq!(
        stopped.code,
        Some(130),
        "a stopped run is resumable: {stopped:?}"
    );
    let journal = events(&run);
    let actions: Vec<&str> = journal
        .iter()
        .filter(|e| e["event"] == "control")
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["max-parallel", "pause", "continue", "stop"]);
    assert_eq!(
        count(&journal, "killed"),
        0,
        "a graceful stop kills nothing"
    );
    assert!(
        !run.join("final.json").exists(),
        "a stopped run has no final output yet"
    );

    job_dir.nightshift(&["resume", "run", "-q"]).expect_code(0);
    assert_eq!(json_array_ids(&run.join("final.json")), ids);
}

#[test]
fn control_of_a_run_that_is_not_live_is_a_usage_error() {
    let job_dir = JobDir::new();
    job_dir.items(2);
    Job::new("items.jsonl").demo().write(job_dir.path());
    job_dir
        .nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    let refused = job_dir.nightshift(&["control", "run", "--pause"]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("no supervisor is running"),
        "{refused:?}"
    );
    let zero = job_dir.nightshift(&["control", "run", "--max-parallel", "0"]);
    zero.expect_code(2);
}
