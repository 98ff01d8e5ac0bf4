//! The budget against a real LiteLLM proxy (a mock_response model): a tiny
//! limits.max_cost stops the run with exit 4, the records' costs (their
//! usage at the job's prices) within the budget and equal to what status
//! --json says; `resume --max-cost` completes the run, and LiteLLM answered
//! exactly one request per item over both sessions, so no saved item was
//! asked for again; report.json carries the total.
//!
//! Without LiteLLM this test says so and passes; `.ci/run` installs it and
//! sets NIGHTSHIFT_LLM_TESTS=1, which turns a missing LiteLLM into a failure.

use std::time::Duration;

use nightshift_tests::litellm::{
    final_records, litellm_ready, spawn_nightshift_with, test_key, LiteLlm, Mock,
};
use nightshift_tests::{wait_with_deadline, Job, JobDir};
use serde_json::Value;

const KEY_VAR: &str = "NIGHTSHIFT_TEST_LITELLM_BUDGET_KEY";

fn cost_of(usage: &Value) -> f64 {
    let n = |key: &str| usage[key].as_u64().unwrap_or(0) as f64;
    (n("input_tokens") * 100.0 + n("output_tokens") * 200.0 + n("cached_input_tokens") * 100.0)
        / 1e6
}

#[test]
fn a_tiny_budget_stops_a_litellm_run_and_resume_with_more_finishes_it() {
    let Some(litellm) = litellm_ready() else {
        return;
    };
    let key = test_key();
    let server = LiteLlm::start(
        &litellm,
        Mock {
            model: "mock".into(),
            response: "a mock reply".into(),
            rpm: 6000,
            master_key: key.clone(),
        },
    );
    let job = JobDir::new();
    let ids = job.items(40);
    let max_cost = 0.03;
    Job::new("items.jsonl")
        .layout(1, 1, 2)
        .openai(&server.base_url(), "mock")
        .llm("api_key_env", KEY_VAR)
        .llm("prompt", "{{prompt}}")
        .llm("max_tokens", 20)
        .llm("request_timeout", "30s")
        .concurrency(2)
        .timeout("10m")
        .raw("agent.price", "input = 100.0\noutput = 200.0")
        .limit("max_cost", max_cost)
        .write(job.path());
    let nightshift = |args: &[&str]| {
        wait_with_deadline(
            spawn_nightshift_with(job.path(), args, &[(KEY_VAR, &key)]),
            Duration::from_secs(240),
        )
    };

    nightshift(&["run", "job.toml", "--run-dir", "run"]).expect_code(4);
    let status = nightshift(&["status", "run", "--json"]);
    let status: Value = serde_json::from_str(&status.stdout).expect("status --json");
    let done = status["items"]["done"].as_u64().unwrap_or(0);
    assert!(done > 0 && done < 40, "{status}");
    let spent = status["cost"].as_f64().expect("a cost");
    assert!(spent <= max_cost + 1e-9, "spent {spent} of {max_cost}");
    let answered_before = server.answered(200);
    assert_eq!(
        u64::try_from(answered_before).unwrap_or(0),
        done,
        "every answer is a saved record"
    );

    nightshift(&["resume", "run", "--max-cost", "10"]).expect_code(0);
    let records = final_records(&job.run_dir());
    assert_eq!(records.len(), ids.len());
    assert_eq!(
        server.answered(200),
        ids.len(),
        "a saved item was asked again"
    );
    let mut total = 0.0;
    for record in &records {
        let cost = record["cost"].as_f64().expect("every record has a cost");
        assert!((cost - cost_of(&record["usage"])).abs() < 1e-9, "{record}");
        total += cost;
    }
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(job.run_dir().join("report.json")).expect("report.json"),
    )
    .expect("report.json is JSON");
    let reported = report["cost"].as_f64().expect("report.json has the cost");
    assert!((reported - total).abs() < 1e-6, "{reported} vs {total}");
}
