//! The openai backend against a real LiteLLM proxy (a mock_response model
//! limited to 120 requests a minute): 150 items with no `[rate]` in the job
//! finish, paced by what the answers' headers tell, with few 429s and no item
//! asked for again once answered; and the key never reaches the run directory.
//!
//! Without LiteLLM these tests say so and pass; `.ci/run` installs it and sets
//! NIGHTSHIFT_LLM_TESTS=1, which turns a missing LiteLLM into a failure.

use std::time::Duration;

use nightshift_tests::litellm::{
    files_under, final_records, litellm_ready, spawn_nightshift_with, test_key, LiteLlm, Mock,
};
use nightshift_tests::{wait_with_deadline, Job, JobDir};

const KEY_VAR: &str = "NIGHTSHIFT_TEST_LITELLM_KEY";

#[test]
fn a_server_limit_is_learned_and_the_key_stays_out_of_the_run() {
    let Some(litellm) = litellm_ready() else {
        return;
    };
    let key = test_key();
    let server = LiteLlm::start(
        &litellm,
        Mock {
            model: "mock".into(),
            response: "a mock reply".into(),
            rpm: 120,
            master_key: key.clone(),
        },
    );
    let job = JobDir::new();
    let ids = job.items(150);
    Job::new("items.jsonl")
        .items_per_agent(25)
        .openai(&server.base_url(), "mock")
        .llm("api_key_env", KEY_VAR)
        .llm("prompt", "{{prompt}}")
        .llm("request_timeout", "30s")
        .concurrency(4)
        .item_retries(3)
        .max_parallel(6)
        .timeout("10m")
        .write(job.path());

    let run = spawn_nightshift_with(
        job.path(),
        &["run", "job.toml", "--run-dir", "run"],
        &[(KEY_VAR, &key)],
    );
    // 150 requests at 120 a minute take over a minute; the deadline is generous.
    let finished = wait_with_deadline(run, Duration::from_secs(360));
    finished.expect_code(0);

    let records = final_records(&job.run_dir());
    let got: Vec<&str> = records.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(got, ids, "final.json holds every item once, in input order");
    for record in &records {
        assert_eq!(record["output"], "a mock reply", "{record}");
        assert_eq!(record["model"], "mock", "{record}");
    }
    // Every 200 LiteLLM sent is one saved record: a 151st would be an item
    // asked for again after its answer was in.
    let answered = server.answered(200);
    let limited = server.answered(429);
    eprintln!("LiteLLM answered {answered} requests with 200 and {limited} with 429");
    assert_eq!(
        answered,
        ids.len(),
        "LiteLLM answered {answered} requests for {} items (429s: {limited})",
        ids.len()
    );
    assert!(
        limited <= 15,
        "{limited} requests got 429 for 150 items: the pace was not learned from the headers"
    );

    let leaks: Vec<String> = files_under(&job.run_dir())
        .into_iter()
        .filter(|file| {
            std::fs::read(file).is_ok_and(|bytes| {
                bytes
                    .windows(key.len())
                    .any(|window| window == key.as_bytes())
            })
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(leaks.is_empty(), "the API key is written in {leaks:?}");
}
