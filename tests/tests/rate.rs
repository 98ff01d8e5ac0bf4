//! The rate broker: one budget for every agent of a run, reached over
//! NIGHTSHIFT_SOCKET — by nightshift-agent itself, or by any agent with
//! `nightshift permit` — and a shared backoff that pauses everyone.

use std::path::Path;

use nightshift_tests::{binary, json_array_ids, Job, JobDir};
use serde_json::Value;

/// Grant times (seconds) from the broker's own log, in order.
fn grants(run: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(run.join("rate.log")).expect("rate.log");
    let mut times: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["op"] == "grant")
        .filter_map(|e| e["t"].as_f64())
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

/// No window holds more grants than `burst` plus what the rate allows in it.
fn assert_within_budget(times: &[f64], per_second: f64, burst: f64) {
    for i in 0..times.len() {
        for j in i..times.len() {
            let granted = (j - i + 1) as f64;
            let allowed = burst + (times[j] - times[i]) * per_second + 1e-3;
            assert!(
                granted <= allowed,
                "{granted} grants in {:.3}s: over the budget",
                times[j] - times[i]
            );
        }
    }
}

/// A shell agent that takes a permit per item with `nightshift permit`.
fn shell_agent(job: &JobDir) {
    job.script(
        "agent.sh",
        r#"#!/bin/sh
python3 - <<'PY'
import json, os, subprocess
task = json.load(open(os.environ['NIGHTSHIFT_TASK']))
with open(os.environ['NIGHTSHIFT_OUTPUT'], 'a') as out:
    for item in task['items']:
        if item['id'] == 'item-001' and os.environ.get('BACKOFF'):
            subprocess.run([os.environ['NIGHTSHIFT_BIN'], 'permit', '--backoff', os.environ['BACKOFF']], check=True)
        subprocess.run([os.environ['NIGHTSHIFT_BIN'], 'permit', '--tokens', '10'], check=True)
        out.write(json.dumps({'id': item['id']}) + '\n')
        out.flush()
PY
"#,
    );
}

fn shell_job(job: &JobDir, backoff: &str) {
    Job::new("items.jsonl")
        .items_per_agent(4)
        .program(["./agent.sh"])
        .env(
            "NIGHTSHIFT_BIN",
            &binary("nightshift").display().to_string(),
        )
        .env("BACKOFF", backoff)
        .max_parallel(5)
        .rate("requests_per_minute", 600)
        .rate("burst", 1)
        .write(job.path());
}

#[test]
fn shell_agents_using_nightshift_permit_are_paced_as_one() {
    let job = JobDir::new();
    let ids = job.items(20);
    shell_agent(&job);
    shell_job(&job, "");
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    assert_eq!(json_array_ids(&job.run_dir().join("final.json")), ids);
    let times = grants(&job.run_dir());
    assert_eq!(times.len(), 20);
    assert_within_budget(&times, 10.0, 1.0);
    assert!(
        times[19] - times[0] >= 1.89,
        "20 permits at 10/s take 1.9 s: {times:?}"
    );
    let socket = std::fs::metadata(job.run_dir().join("nightshift.sock"));
    assert!(socket.is_err(), "the socket is removed when the run ends");
}

#[test]
fn a_reported_rate_limit_pauses_every_agent() {
    let job = JobDir::new();
    job.items(20);
    shell_agent(&job);
    shell_job(&job, "2");
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    let log = std::fs::read_to_string(job.run_dir().join("rate.log")).expect("rate.log");
    let backoff = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["op"] == "backoff")
        .expect("the backoff is logged");
    let at = backoff["t"].as_f64().expect("t");
    assert_eq!(backoff["seconds"], 2.0);
    let times = grants(&job.run_dir());
    assert!(
        times.iter().all(|t| *t < at || *t >= at + 2.0 - 1e-3),
        "no permit for any agent during the 2 s pause at {at}: {times:?}"
    );
    assert!(
        times.iter().any(|t| *t >= at + 2.0),
        "permits resume after the pause"
    );
}

#[test]
fn nightshift_permit_outside_an_agent_is_a_usage_error() {
    let job = JobDir::new();
    let finished = job.nightshift(&["permit"]);
    finished.expect_code(2);
    assert!(
        finished.stderr.contains("NIGHTSHIFT_SOCKET"),
        "{}",
        finished.stderr
    );
}

#[test]
fn a_job_without_limits_sends_the_broker_nothing() {
    let job = JobDir::new();
    let ids = job.items(200);
    Job::new("items.jsonl")
        .layout(1, 1, 4)
        .demo()
        .latency("0ms")
        .max_parallel(4)
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    assert_eq!(json_array_ids(&job.run_dir().join("final.json")), ids);
    let lines = std::fs::read_to_string(job.run_dir().join("rate.log"))
        .map(|text| text.lines().count())
        .unwrap_or(0);
    assert_eq!(lines, 0, "no permit, no rate.log line");
    assert!(!job.run_dir().join("rate.limited").exists());
}
