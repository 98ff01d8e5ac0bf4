//! Whole process trees: timeouts and stalls kill every descendant (setsid'd
//! ones included), TERM-ignorers are KILLed after the grace, and leftovers of
//! finished agents are swept before the next segment. Checked in /proc.

use std::time::Duration;

use nightshift_tests::{
    alive, events, json_array_ids, pids_in, run_processes, wait_until, Job, JobDir,
};
use serde_json::Value;

fn killed_reasons(run: &std::path::Path) -> Vec<String> {
    events(run)
        .iter()
        .filter(|e| e["event"] == "killed")
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_timeout_kills_a_term_ignoring_tree_with_a_setsid_grandchild() {
    let job = JobDir::new();
    job.items(2);
    // The item command ignores TERM, leaves a child that ignores it too in a
    // session of its own (the agent's grandchild), then hangs.
    Job::new("items.jsonl")
        .layout(1, 1, 1)
        .exec([
            env!("CARGO_BIN_EXE_term_ignorer"),
            "--child",
            "--setsid",
            "--pids",
            "pids",
        ])
        .timeout("2s")
        .kill_grace("500ms")
        .retries(0)
        .write(job.path());
    let child = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run"]);
    let run = job.run_dir();
    assert!(
        wait_until(Duration::from_secs(20), || run_processes(&run).len() >= 3
            && pids_in(&job.path().join("pids")).len() >= 2),
        "agent, the item command, and its setsid'd child are running"
    );
    let tree = run_processes(&run);
    let finished = nightshift_tests::wait_with_deadline(child, Duration::from_secs(60));
    finished.expect_code(1);
    for pid in tree.iter().chain(&pids_in(&job.path().join("pids"))) {
        assert!(!alive(*pid), "process {pid} of the tree survived");
    }
    assert!(run_processes(&run).is_empty());
    assert!(killed_reasons(&run).contains(&"timeout".to_owned()));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).expect("report"))
            .expect("JSON");
    assert_eq!(report["attempts"][0]["outcome"], "killed");
    assert_eq!(report["attempts"][0]["reason"], "timeout");
}

#[test]
fn an_agent_ignoring_sigterm_is_killed_after_the_grace() {
    let job = JobDir::new();
    job.items(1);
    Job::new("items.jsonl")
        .program([env!("CARGO_BIN_EXE_term_ignorer")])
        .timeout("1s")
        .kill_grace("1500ms")
        .retries(0)
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run"])
        .expect_code(1);
    let all = events(&job.run_dir());
    let killed = all
        .iter()
        .find(|e| e["event"] == "killed")
        .expect("a killed event");
    let exited = all
        .iter()
        .find(|e| e["event"] == "exited")
        .expect("an exited event");
    assert_eq!(killed["reason"], "timeout");
    assert_eq!(exited["signal"], 9, "ended by SIGKILL, not TERM: {exited}");
    let at = |e: &Value| humantime::parse_rfc3339(e["ts"].as_str().expect("ts")).expect("RFC 3339");
    let waited = at(exited)
        .duration_since(at(killed))
        .expect("exit after kill");
    assert!(
        waited >= Duration::from_millis(1400),
        "KILL came after the grace, not before: {waited:?}"
    );
}

#[test]
fn a_stalled_agent_is_killed_and_keeps_what_it_saved() {
    let job = JobDir::new();
    let ids = job.items(3);
    // Saves the first item, then hangs.
    Job::new("items.jsonl")
        .program([env!("CARGO_BIN_EXE_staller"), "--save", "1"])
        .stall_timeout("1s")
        .kill_grace("1s")
        .retries(0)
        .sample_interval("100ms")
        .write(job.path());
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(1);
    assert!(
        finished.stderr.contains("hit its stall"),
        "{}",
        finished.stderr
    );
    assert_eq!(killed_reasons(&job.run_dir()), vec!["stall"]);
    assert_eq!(
        json_array_ids(&job.run_dir().join("final.json")),
        vec![ids[0].clone()]
    );
}

#[test]
fn daemonised_leftovers_of_finished_agents_are_swept_at_segment_end() {
    let job = JobDir::new();
    job.items(4);
    // Each agent saves its items, then leaves two daemons behind: one that
    // keeps the run's environment, and one double-forked into its own session
    // with an empty environment (found only as an orphan the supervisor adopted).
    Job::new("items.jsonl")
        .layout(2, 1, 1)
        .program([env!("CARGO_BIN_EXE_leaker"), "--pids", "pids"])
        .kill_grace("1s")
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run"])
        .expect_code(0);
    let pids = pids_in(&job.path().join("pids"));
    assert_eq!(pids.len(), 4, "two daemons per agent were started");
    for pid in &pids {
        assert!(!alive(*pid), "daemon {pid} outlived its segment");
    }
    // Segment 1's leftovers were ended before segment 2 started.
    let all = events(&job.run_dir());
    let swept = all
        .iter()
        .position(|e| e["event"] == "killed" && e["reason"] == "segment-end")
        .expect("a segment-end sweep");
    let second_launch = all
        .iter()
        .position(|e| e["event"] == "launched" && e["agent"] == "segment_02/orch_01/agent_01")
        .expect("segment 2 launched");
    assert!(
        swept < second_launch,
        "swept before the next segment started"
    );
}

#[test]
fn a_relative_timeout_kills_an_agent_far_slower_than_the_median() {
    let job = JobDir::new();
    job.items(6);
    // Every item is answered at once but item-006, which hangs.
    Job::new("items.jsonl")
        .items_per_agent(1)
        .exec([env!("CARGO_BIN_EXE_staller"), "--only", "item-006"])
        .timeout("300%")
        .kill_grace("200ms")
        .retries(0)
        .max_parallel(1)
        .sample_interval("100ms")
        .write(job.path());
    let started = std::time::Instant::now();
    job.nightshift(&["run", "job.toml", "--run-dir", "run"])
        .expect_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the slow agent was not waited for"
    );
    assert_eq!(killed_reasons(&job.run_dir()), vec!["timeout"]);
    let killed = events(&job.run_dir())
        .into_iter()
        .find(|e| e["event"] == "killed")
        .expect("killed");
    assert_eq!(killed["agent"], "segment_01/orch_01/agent_06");
}
