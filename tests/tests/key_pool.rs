//! A pool of API keys against tests/src/bin/fault_server.rs (per-key
//! rate-limit headers at 40 requests a minute, 401 for any key but the two
//! good ones): the broker spreads the requests over both good keys by what
//! their headers leave them, with few 429s; the rejected key is dropped,
//! named once in the journal and in status, and the run completes without it.

use std::path::PathBuf;
use std::time::Duration;

use nightshift_tests::litellm::{final_records, spawn_nightshift_with, FaultServer};
use nightshift_tests::{events, wait_with_deadline, Job, JobDir};
use serde_json::Value;

const BAD: (&str, &str) = ("NIGHTSHIFT_TEST_POOL_BAD", "sk-pool-test-rejected-0bad");
const GOOD_A: (&str, &str) = ("NIGHTSHIFT_TEST_POOL_A", "sk-pool-test-good-000aaaa");
const GOOD_B: (&str, &str) = ("NIGHTSHIFT_TEST_POOL_B", "sk-pool-test-good-000bbbb");

/// Requests the server answered with `status` using the key ending in `last4`.
fn answered(requests: &[Value], status: u64, last4: &str) -> usize {
    requests
        .iter()
        .filter(|r| r["status"] == status && r["key"].as_str().is_some_and(|k| k.ends_with(last4)))
        .count()
}

#[test]
fn two_good_keys_share_the_work_and_a_rejected_key_is_dropped_and_named() {
    let job = JobDir::new();
    let good = format!("{},{}", GOOD_A.1, GOOD_B.1);
    let server = FaultServer::start(
        &PathBuf::from(env!("CARGO_BIN_EXE_fault_server")),
        &job.path().join("requests.jsonl"),
        &[
            "--mode",
            "unauthorized,ratelimit",
            "--good-key",
            &good,
            "--rpm",
            "40",
        ],
    );
    let ids = job.items(70);
    Job::new("items.jsonl")
        .layout(1, 1, 5)
        .openai(&server.base_url(), "fault-model")
        .llm("api_key_env", vec![BAD.0, GOOD_A.0, GOOD_B.0])
        .llm("prompt", "{{prompt}}")
        .llm("request_timeout", "10s")
        .concurrency(4)
        .item_retries(3)
        .timeout("5m")
        .write(job.path());
    let child = spawn_nightshift_with(
        job.path(),
        &["run", "job.toml", "--run-dir", "run"],
        &[BAD, GOOD_A, GOOD_B],
    );
    // 70 requests at 2 × 40 a minute; one key alone would need 105 s. The
    // deadline only keeps a broken run from hanging the suite.
    wait_with_deadline(child, Duration::from_secs(150)).expect_code(0);
    assert_eq!(final_records(&job.run_dir()).len(), ids.len());

    let requests = server.requests();
    let (a, b) = (
        answered(&requests, 200, "aaaa"),
        answered(&requests, 200, "bbbb"),
    );
    let limited = requests.iter().filter(|r| r["status"] == 429).count();
    let rejected = answered(&requests, 401, "0bad");
    eprintln!("answered: A {a}, B {b}; 429s {limited}; 401s {rejected}");
    assert_eq!(a + b, ids.len(), "one answer per item");
    assert!(
        a >= 20 && b >= 20,
        "requests not spread over both keys: A {a}, B {b}"
    );
    assert!(limited <= 10, "{limited} answers were 429");
    assert!(
        (1..=10).contains(&rejected),
        "{rejected} requests used the rejected key"
    );

    let named: Vec<Value> = events(&job.run_dir())
        .into_iter()
        .filter(|e| e["event"] == "key-rejected")
        .collect();
    assert_eq!(named.len(), 1, "{named:?}");
    assert!(
        named[0]["key"].as_str().is_some_and(|k| k.ends_with(BAD.0)),
        "{named:?}"
    );
    let status = job.nightshift(&["status", "run"]);
    assert!(
        status.stdout.contains("keys rejected") && status.stdout.contains(BAD.0),
        "{}",
        status.stdout
    );
    let json: Value = serde_json::from_str(&job.nightshift(&["status", "run", "--json"]).stdout)
        .expect("status --json");
    assert_eq!(
        json["rejected_keys"].as_array().map(Vec::len),
        Some(1),
        "{json}"
    );
}
