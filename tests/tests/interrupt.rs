//! Ctrl-C (SIGINT) or SIGTERM to the supervisor: no new launches, every agent
//! tree ended, exit 130, nothing left running; SIGHUP does not stop a run.

use std::time::Duration;

use nightshift_tests::{
    alive, group_members, launched_pids, wait_until, wait_with_deadline, Job, JobDir,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Stalling agents whose items each also start a stalling child (in the
/// agent's process group), so a kill must reach more than the agent.
fn slow_job(job: &JobDir) {
    job.items(12);
    Job::new("items.jsonl")
        .layout(2, 1, 3)
        .exec([env!("CARGO_BIN_EXE_staller"), "--child"])
        .kill_grace("1s")
        .max_parallel(3)
        .write(job.path());
}

fn signal_after_launch(signal: Signal) {
    let job = JobDir::new();
    slow_job(&job);
    let child = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run"]);
    let run = job.run_dir();
    assert!(
        wait_until(Duration::from_secs(20), || launched_pids(&run).len() == 3),
        "three agents launched"
    );
    let pids = launched_pids(&run);
    // Let the item commands start their sleepers.
    assert!(wait_until(Duration::from_secs(10), || pids
        .iter()
        .all(|p| group_members(*p).len() >= 3)));
    let supervisor = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(supervisor, signal).expect("signal the supervisor");
    let finished = wait_with_deadline(child, Duration::from_secs(30));
    finished.expect_code(130);
    assert!(
        finished.stdout.contains("interrupted"),
        "{}",
        finished.stdout
    );
    assert!(
        finished.stdout.contains("resumable: nightshift resume"),
        "{}",
        finished.stdout
    );
    for pid in &pids {
        assert!(!alive(*pid), "agent {pid} is gone");
        assert!(
            group_members(*pid).is_empty(),
            "nothing left of agent group {pid}"
        );
    }
    assert_eq!(launched_pids(&run).len(), 3, "no launch after the signal");
    let events = nightshift_tests::events(&run);
    let shutdown_kills = events
        .iter()
        .filter(|e| e["event"] == "killed" && e["reason"] == "shutdown")
        .count();
    assert_eq!(shutdown_kills, 3);
    let report = std::fs::read_to_string(run.join("report.json")).expect("report.json");
    assert!(report.contains("\"state\": \"interrupted\""), "{report}");
}

#[test]
fn sigint_stops_the_run_and_leaves_nothing_behind() {
    signal_after_launch(Signal::SIGINT);
}

#[test]
fn sigterm_stops_the_run_like_sigint() {
    signal_after_launch(Signal::SIGTERM);
}

#[test]
fn sighup_does_not_stop_a_run() {
    let job = JobDir::new();
    job.items(4);
    Job::new("items.jsonl")
        .items_per_agent(2)
        .demo()
        .latency("400ms")
        .write(job.path());
    let child = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run"]);
    let run = job.run_dir();
    assert!(wait_until(Duration::from_secs(20), || !launched_pids(&run).is_empty()));
    let supervisor = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(supervisor, Signal::SIGHUP).expect("signal the supervisor");
    let finished = wait_with_deadline(child, Duration::from_secs(60));
    finished.expect_code(0);
}

#[test]
fn an_interrupted_run_lists_at_most_ten_thousand_missing_items_and_counts_them_all() {
    // 12,000 items, two agents that each stall on their first item: nearly
    // every item is missing when the run is stopped.
    let job = JobDir::new();
    job.items(12_000);
    Job::new("items.jsonl")
        .layout(1, 1, 2)
        .exec([env!("CARGO_BIN_EXE_staller")])
        .kill_grace("1s")
        .write(job.path());
    let child = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run"]);
    let run = job.run_dir();
    assert!(
        wait_until(Duration::from_secs(20), || launched_pids(&run).len() == 2),
        "two agents launched"
    );
    let supervisor = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(supervisor, Signal::SIGINT).expect("signal the supervisor");
    let finished = wait_with_deadline(child, Duration::from_secs(30));
    finished.expect_code(130);
    assert!(
        finished.stdout.contains("12000 missing")
            && finished
                .stdout
                .contains("the first 10000 listed in report.json"),
        "{}",
        finished.stdout
    );
    let text = std::fs::read_to_string(run.join("report.json")).expect("report.json");
    let report: serde_json::Value = serde_json::from_str(&text).expect("report is JSON");
    assert_eq!(report["items"]["missing"], 12_000);
    assert_eq!(report["missing_ids"].as_array().map(Vec::len), Some(10_000));
    assert_eq!(report["missing_ids"][0], "item-001");
    assert_eq!(report["failures"].as_array().map(Vec::len), Some(10_000));
    assert_eq!(report["failures_total"], 12_000);
    let by_reason: u64 = report["failures_by_reason"]
        .as_object()
        .expect("failures by reason")
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert_eq!(
        by_reason, 12_000,
        "every missing item counted by its reason"
    );
}
