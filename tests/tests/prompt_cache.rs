//! Prompt caching against tests/src/bin/fault_server.rs in `anthropic,cache`
//! mode (a slow model: each answer takes 300 ms, and a request that comes
//! before the first writer's answer writes the cache too, as Anthropic's
//! does): with `cache_prefix`, four agents of three requests in flight each
//! write the cache exactly once — the first request goes alone — and read it
//! after; every record's cost is its usage at the four prices.

use std::path::PathBuf;
use std::time::Duration;

use nightshift_tests::litellm::{final_records, spawn_nightshift_with, FaultServer};
use nightshift_tests::{wait_with_deadline, Job, JobDir};
use serde_json::Value;

const KEY_VAR: &str = "NIGHTSHIFT_TEST_CACHE_KEY";
const KEY: &str = "sk-ant-cache-test-0000cafe";

const INPUT: f64 = 3.0;
const OUTPUT: f64 = 15.0;
const CACHED: f64 = 0.3;
const CACHE_WRITE: f64 = 3.75;

#[test]
fn several_agents_write_the_cache_once_and_read_it_after() {
    let job = JobDir::new();
    let server = FaultServer::start(
        &PathBuf::from(env!("CARGO_BIN_EXE_fault_server")),
        &job.path().join("requests.jsonl"),
        &["--mode", "anthropic,cache", "--delay", "300ms"],
    );
    let ids = job.items(24);
    // 4000 characters: 1000 tokens of shared prefix.
    let system = "You write short practice baskets. ".repeat(118);
    let system: String = system.chars().take(4000).collect();
    Job::new("items.jsonl")
        .layout(1, 1, 4)
        .max_parallel(4)
        .anthropic(&server.base_url(), "claude-fault")
        .llm("api_key_env", KEY_VAR)
        .llm("system", system.as_str())
        .llm("prompt", "{{prompt}}")
        .llm("cache_prefix", true)
        .llm("request_timeout", "10s")
        .concurrency(3)
        .timeout("5m")
        .raw(
            "agent.price",
            &format!("input = {INPUT}\noutput = {OUTPUT}\ncached_input = {CACHED}\ncache_write = {CACHE_WRITE}"),
        )
        .write(job.path());
    let child = spawn_nightshift_with(
        job.path(),
        &["run", "job.toml", "--run-dir", "run"],
        &[(KEY_VAR, KEY)],
    );
    wait_with_deadline(child, Duration::from_secs(120)).expect_code(0);

    let records = final_records(&job.run_dir());
    assert_eq!(records.len(), ids.len());
    let usage = |record: &Value, key: &str| record["usage"][key].as_u64().unwrap_or(0);
    let writers: Vec<&Value> = records
        .iter()
        .filter(|r| usage(r, "cache_write_tokens") > 0)
        .collect();
    assert_eq!(
        writers.len(),
        1,
        "requests that wrote the cache: {writers:?}"
    );
    assert_eq!(usage(writers[0], "cache_write_tokens"), 1000);
    let readers = records
        .iter()
        .filter(|r| usage(r, "cached_input_tokens") == 1000)
        .count();
    assert_eq!(readers, ids.len() - 1, "every other request read the cache");
    for record in &records {
        let expected = (usage(record, "input_tokens") as f64 * INPUT
            + usage(record, "output_tokens") as f64 * OUTPUT
            + usage(record, "cached_input_tokens") as f64 * CACHED
            + usage(record, "cache_write_tokens") as f64 * CACHE_WRITE)
            / 1e6;
        let cost = record["cost"].as_f64().expect("a cost");
        assert!((cost - expected).abs() < 1e-9, "{record}");
    }
    // The requests carried the system prompt as a block marked for caching.
    let log = std::fs::read_to_string(job.path().join("requests.jsonl")).expect("request log");
    assert_eq!(log.lines().count(), ids.len(), "one request per item");
}
