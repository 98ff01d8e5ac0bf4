//! nightshift-agent inside a real run: paced by the shared rate budget,
//! reporting rate-limit answers that pause every agent, validating results
//! before it saves them, and falling back to the next command.

use std::path::Path;

use nightshift_tests::{json_array_ids, jsonl_ids, Job, JobDir};
use serde_json::Value;

fn rate_log(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("rate.log"))
        .expect("rate.log")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn grant_times(run: &Path) -> Vec<f64> {
    let mut times: Vec<f64> = rate_log(run)
        .iter()
        .filter(|e| e["op"] == "grant")
        .filter_map(|e| e["t"].as_f64())
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

#[test]
fn one_hundred_twenty_calls_from_six_agents_keep_the_budget() {
    let job = JobDir::new();
    let ids = job.items(120);
    Job::new("items.jsonl")
        .layout(1, 1, 6)
        .demo()
        .latency("0ms")
        .max_parallel(6)
        .rate("requests_per_minute", 600)
        .rate("burst", 1)
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    assert_eq!(json_array_ids(&job.run_dir().join("final.json")), ids);
    let times = grant_times(&job.run_dir());
    assert_eq!(times.len(), 120, "one permit per call");
    // 10 a second, at most 1 at once: no window holds more than 1 + 10/s × its length.
    for i in 0..times.len() {
        for j in i..times.len() {
            let allowed = 1.0 + (times[j] - times[i]) * 10.0 + 1e-3;
            assert!(
                (j - i + 1) as f64 <= allowed,
                "over budget between {} and {}",
                times[i],
                times[j]
            );
        }
    }
    assert!(
        times[119] - times[0] >= 11.9 - 1e-3,
        "120 calls at 10/s take 11.9 s: {}",
        times[119] - times[0]
    );
    let log = rate_log(&job.run_dir());
    let agents: std::collections::HashSet<&str> =
        log.iter().filter_map(|e| e["agent"].as_str()).collect();
    assert_eq!(agents.len(), 6, "all six agents shared the budget");
}

#[test]
fn an_exec_rate_limit_answer_pauses_every_agent() {
    let job = JobDir::new();
    job.items(8);
    // Every call notes when it starts (seconds since the epoch) and its item;
    // the first call for item-001 answers "rate limited, retry after 1.5 s".
    Job::new("items.jsonl")
        .layout(1, 1, 4)
        .exec([
            "sh",
            "-c",
            "read -r line; echo \"$(date +%s.%N) $line\" >> calls.log; case \"$line\" in *item-001*) if [ ! -e limited ]; then touch limited; echo 'NIGHTSHIFT_RATE_LIMITED retry_after=1.5'; exit 0; fi;; esac; sleep 0.2; printf '%s' \"$line\"",
        ])
        .item_retries(0)
        .max_parallel(4)
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    let log = rate_log(&job.run_dir());
    let backoff = log
        .iter()
        .find(|e| e["op"] == "backoff")
        .expect("a backoff was reported");
    assert_eq!(backoff["seconds"], 1.5);
    let calls: Vec<(f64, String)> = std::fs::read_to_string(job.path().join("calls.log"))
        .expect("calls.log")
        .lines()
        .filter_map(|l| {
            let (at, item) = l.split_once(' ')?;
            Some((at.parse().ok()?, item.to_owned()))
        })
        .collect();
    assert_eq!(
        calls.len(),
        9,
        "8 calls and the one retried after the pause"
    );
    let limited_at = calls
        .iter()
        .find(|(_, item)| item.contains("item-001"))
        .map(|(at, _)| *at)
        .expect("item-001 was called");
    // Calls under way when the answer came finish; no agent starts a new
    // one until the pause is over (a little slack for the report's way).
    let during: Vec<&(f64, String)> = calls
        .iter()
        .filter(|(at, _)| *at > limited_at + 0.15 && *at < limited_at + 1.4)
        .collect();
    assert!(
        during.is_empty(),
        "calls during the pause: {during:?} (limited at {limited_at})"
    );
    let grants = grant_times(&job.run_dir());
    assert!(!grants.is_empty(), "calls after the answer took permits");
    assert!(
        job.run_dir().join("rate.limited").exists(),
        "the broker told every agent that a limit showed"
    );
}

#[test]
fn rejected_results_are_retried_then_recorded_as_failures() {
    let job = JobDir::new();
    job.items(6);
    // item-002 always answers with a plan; item-003 answers with a plan once.
    Job::new("items.jsonl")
        .items_per_agent(6)
        .exec([
            "sh",
            "-c",
            "read -r line; case \"$line\" in *item-002*) echo 'Here is a plan: first…';; *item-003*) if [ -e once ]; then echo fine; else touch once; echo 'Here is a plan'; fi;; *) echo 'the text';; esac",
        ])
        .item_retries(2)
        .retries(0)
        .validate("required", vec!["output"])
        .validate("reject", vec!["(?i)^here is a plan"])
        .write(job.path());
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(1);
    let saved = json_array_ids(&job.run_dir().join("final.json"));
    assert_eq!(
        saved,
        vec!["item-001", "item-003", "item-004", "item-005", "item-006"]
    );
    let failures_path = job
        .run_dir()
        .join("segment_01/orch_01/agent_01.failures.jsonl");
    assert_eq!(jsonl_ids(&failures_path), vec!["item-002"]);
    let failures = std::fs::read_to_string(&failures_path).expect("failures");
    assert!(failures.contains("matches reject pattern"), "{failures}");
    assert!(
        failures.contains("\"attempts\":3"),
        "rejected, retried twice: {failures}"
    );
    let text = std::fs::read_to_string(job.run_dir().join("final.json")).expect("final.json");
    assert!(
        !text.to_lowercase().contains("here is a plan"),
        "a rejected result is never saved"
    );
}

#[test]
fn fallback_switches_command_and_records_which_one_answered() {
    let job = JobDir::new();
    job.items(4);
    // The primary fails for item-002 and later; the fallback answers.
    Job::new("items.jsonl")
        .items_per_agent(4)
        .exec_fallbacks([
            [
                "sh",
                "-c",
                "read -r line; case \"$line\" in *item-001*) echo primary;; *) exit 1;; esac",
            ],
            ["sh", "-c", "read -r line; echo fallback"],
        ])
        .item_retries(1)
        .retries(0)
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    let text = std::fs::read_to_string(job.run_dir().join("final.json")).expect("final.json");
    let records: Vec<Value> = serde_json::from_str(&text).expect("JSON");
    let produced: Vec<&str> = records
        .iter()
        .map(|r| r["produced_by"].as_str().unwrap_or(""))
        .collect();
    assert!(produced[0].contains("echo primary"), "{produced:?}");
    for later in &produced[1..] {
        assert!(later.contains("echo fallback"), "{produced:?}");
    }
    assert_eq!(records[1]["output"], "fallback");
}
