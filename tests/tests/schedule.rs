//! Launch schedule (warm-up, waves, orchestrator stagger) and the run's
//! deadline, checked against the launch times in events.jsonl.

use std::time::SystemTime;

use nightshift_tests::{events, json_array_ids, Job, JobDir};
use serde_json::Value;

/// (agent, seconds after the first launch, phase) of every launch.
fn launches(run: &std::path::Path) -> Vec<(String, f64, Value)> {
    let all: Vec<(String, SystemTime, Value)> = events(run)
        .into_iter()
        .filter(|e| e["event"] == "launched")
        .map(|e| {
            let at = humantime::parse_rfc3339(e["ts"].as_str().expect("ts")).expect("RFC 3339");
            (
                e["agent"].as_str().unwrap_or("").to_owned(),
                at,
                e["phase"].clone(),
            )
        })
        .collect();
    let first = all.iter().map(|(_, t, _)| *t).min().expect("some launch");
    all.into_iter()
        .map(|(a, t, p)| {
            (
                a,
                t.duration_since(first).unwrap_or_default().as_secs_f64(),
                p,
            )
        })
        .collect()
}

/// Items that take 2 s each; the test adds the layout and the schedule.
fn sleeping_job() -> Job {
    Job::new("items.jsonl")
        .exec(["sh", "-c", "read -r line; sleep 2; printf '%s' \"$line\""])
        .max_parallel(16)
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 0.2
}

#[test]
fn warmup_then_waves_start_at_their_times() {
    let job = JobDir::new();
    job.items(7);
    sleeping_job()
        .layout(1, 1, 7)
        .schedule("warmup", 1)
        .schedule("warmup_delay", "1s")
        .schedule("wave_size", 3)
        .schedule("wave_interval", "1s")
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    let seen = launches(&job.run_dir());
    let times: Vec<f64> = seen.iter().map(|(_, t, _)| *t).collect();
    let expected = [0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0];
    assert_eq!(times.len(), expected.len());
    for (actual, wanted) in times.iter().zip(expected) {
        assert!(
            close(*actual, wanted),
            "launch times {times:?}, expected {expected:?}"
        );
    }
    assert_eq!(seen[0].2, "warmup");
    assert_eq!(seen[1].2, "wave 1");
    assert_eq!(seen[6].2, "wave 2");
}

#[test]
fn sibling_orchestrators_are_staggered() {
    let job = JobDir::new();
    job.items(6);
    sleeping_job()
        .layout(1, 3, 2)
        .schedule("orchestrator_stagger", "700ms")
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    for (agent, at, _) in launches(&job.run_dir()) {
        let orchestrator: f64 = if agent.contains("orch_01") {
            0.0
        } else if agent.contains("orch_02") {
            1.0
        } else {
            2.0
        };
        assert!(
            close(at, orchestrator * 0.7),
            "{agent} launched at {at:.3}s"
        );
    }
}

#[test]
fn a_deadline_stops_launching_drains_and_leaves_a_resumable_run() {
    let job = JobDir::new();
    let ids = job.items(4);
    Job::new("items.jsonl")
        .items_per_agent(2)
        .exec(["sh", "-c", "read -r line; sleep 1.5; printf '%s' \"$line\""])
        .kill_grace("500ms")
        .max_parallel(1)
        .schedule("drain", "500ms")
        .write(job.path());
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run", "--until", "2s"]);
    finished.expect_code(3);
    assert!(
        finished.stdout.contains("deadline reached"),
        "{}",
        finished.stdout
    );
    assert!(
        finished.stdout.contains("resumable: nightshift resume"),
        "{}",
        finished.stdout
    );
    let all = events(&job.run_dir());
    let launched = all.iter().filter(|e| e["event"] == "launched").count();
    // The first agent needs 3 s: still running at the deadline (2 s), stopped
    // when its 500 ms of drain are over; no other agent was launched.
    assert_eq!(launched, 1, "no launch after the deadline");
    assert!(all.iter().any(|e| e["event"] == "deadline"));
    assert!(
        all.iter()
            .any(|e| e["event"] == "killed" && e["reason"] == "deadline"),
        "the drain ended the running agent"
    );
    let status: Value =
        serde_json::from_str(&job.nightshift(&["status", "run", "--json"]).stdout).expect("status");
    assert_eq!(status["state"], "interrupted");

    job.nightshift(&["resume", "run", "-q"]).expect_code(0);
    assert_eq!(json_array_ids(&job.run_dir().join("final.json")), ids);
}
