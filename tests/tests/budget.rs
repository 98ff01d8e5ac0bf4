//! Money against tests/src/bin/fault_server.rs (whose answers carry a usage
//! the tests know): every record's cost is its usage at the four prices; a
//! run with a tiny limits.max_cost stops with exit 4, the records' costs
//! summing to no more than the budget and to what status --json and
//! report.json say; `resume --max-cost` goes on and completes it without
//! asking again for a saved item; limits.max_tokens likewise.

use std::collections::HashSet;
use std::time::Duration;

use nightshift_tests::litellm::{files_under, final_records, spawn_nightshift_with, FaultServer};
use nightshift_tests::priced::{self, fault_server, priced, CACHED, CACHE_WRITE, INPUT, OUTPUT};
use nightshift_tests::{wait_with_deadline, Job, JobDir};
use serde_json::Value;

const KEY_VAR: &str = "NIGHTSHIFT_TEST_BUDGET_KEY";
const KEY: &str = "sk-budget-test-key-0000abcd";
const DEADLINE: Duration = Duration::from_secs(120);

/// A priced job with this test's key variable.
fn priced_job(job: &JobDir, server: &FaultServer, items: usize, anthropic: bool) -> Job {
    priced::priced_job(job, server, KEY_VAR, items, anthropic)
}

fn nightshift(job: &JobDir, args: &[&str]) -> nightshift_tests::Finished {
    wait_with_deadline(
        spawn_nightshift_with(job.path(), args, &[(KEY_VAR, KEY)]),
        DEADLINE,
    )
}

/// Every record in the run's agent files.
fn saved_records(job: &JobDir) -> Vec<Value> {
    records_in(&job.run_dir())
}

/// Every record in the agent files under `dir`.
fn records_in(dir: &std::path::Path) -> Vec<Value> {
    files_under(dir)
        .into_iter()
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("agent_") && name.ends_with(".jsonl") && !name.contains("failures")
        })
        .flat_map(|path| {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn status_json(job: &JobDir) -> Value {
    let status = nightshift(job, &["status", "run", "--json"]);
    serde_json::from_str(&status.stdout).expect("status --json is JSON")
}

fn report_json(job: &JobDir) -> Value {
    let text = std::fs::read_to_string(job.run_dir().join("report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report.json is JSON")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn a_tiny_budget_stops_the_run_with_exit_4_and_resume_with_more_completes_it() {
    let job = JobDir::new();
    let server = fault_server(&job, &["--delay", "50ms"]);
    let max_cost = 0.3;
    priced_job(&job, &server, 30, false)
        .limit("max_cost", max_cost)
        .write(job.path());

    // 30 prompts of 28 characters (7 tokens) and 20 output tokens at most:
    // 30 × (7 × $1000 + 20 × $2000) / 1M.
    let estimate = "estimated cost: at most $1.41 for 30 items (210 prompt tokens, 600 output tokens at most); budget limits.max_cost = $0.30";
    let plan = nightshift(&job, &["plan", "job.toml"]);
    assert!(plan.stdout.contains(estimate), "{}", plan.stdout);
    let stopped = nightshift(&job, &["run", "job.toml", "--run-dir", "run"]);
    stopped.expect_code(4);
    assert!(stopped.stdout.contains(estimate), "{}", stopped.stdout);
    assert!(
        stopped.stdout.contains("budget spent"),
        "{}",
        stopped.stdout
    );
    let records = saved_records(&job);
    assert!(
        !records.is_empty(),
        "nothing was saved before the budget ran out"
    );
    assert!(records.len() < 30, "the budget stopped nothing");
    let mut sum = 0.0;
    for record in &records {
        let cost = record["cost"].as_f64().expect("every record has a cost");
        assert!(close(cost, priced(&record["usage"])), "{record}");
        sum += cost;
    }
    assert!(
        sum <= max_cost + 1e-9,
        "records cost {sum}, above the budget {max_cost}"
    );

    let status = status_json(&job);
    assert_eq!(status["state"], "budget", "{status}");
    let status_cost = status["cost"].as_f64().expect("status carries the cost");
    assert!(
        close(status_cost, sum),
        "status says {status_cost}, records {sum}"
    );
    assert_eq!(
        status["usage"]["output_tokens"].as_u64(),
        Some(5 * records.len() as u64),
        "{status}"
    );
    let report_cost = report_json(&job)["cost"]
        .as_f64()
        .expect("report.json has the cost");
    assert!(close(report_cost, sum), "report.json says {report_cost}");

    // A larger budget: the run goes on and completes, asking for no item saved.
    let saved: HashSet<String> = records
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    let before = server.requests().len();
    nightshift(&job, &["resume", "run", "--max-cost", "50"]).expect_code(0);
    assert_eq!(final_records(&job.run_dir()).len(), 30);
    let again = server.asked_again(before, &saved);
    assert!(
        again.is_empty(),
        "resume asked again for saved items {again:?}"
    );
    let total: f64 = saved_records(&job)
        .iter()
        .filter_map(|r| r["cost"].as_f64())
        .sum();
    let report_cost = report_json(&job)["cost"]
        .as_f64()
        .expect("report.json has the cost");
    assert!(
        close(report_cost, total),
        "report.json says {report_cost}, records {total}"
    );
    let status = status_json(&job);
    assert_eq!(status["state"], "finished", "{status}");
    assert!(
        close(status["cost"].as_f64().unwrap_or(-1.0), total),
        "{status}"
    );
}

#[test]
fn a_token_budget_stops_the_run_too() {
    let job = JobDir::new();
    let server = fault_server(&job, &[]);
    // Each answer uses 25 tokens; a permit reserves its prompt and max_tokens.
    let max_tokens = 200;
    priced_job(&job, &server, 30, false)
        .limit("max_tokens", i64::try_from(max_tokens).expect("small"))
        .write(job.path());
    nightshift(&job, &["run", "job.toml", "--run-dir", "run"]).expect_code(4);
    let records = saved_records(&job);
    let used: u64 = records
        .iter()
        .map(|r| {
            let usage = &r["usage"];
            [
                "input_tokens",
                "output_tokens",
                "cached_input_tokens",
                "cache_write_tokens",
            ]
            .iter()
            .map(|k| usage[*k].as_u64().unwrap_or(0))
            .sum::<u64>()
        })
        .sum();
    assert!(
        !records.is_empty() && used <= max_tokens,
        "{used} tokens used"
    );
    nightshift(&job, &["resume", "run", "--max-tokens", "100000"]).expect_code(0);
    assert_eq!(final_records(&job.run_dir()).len(), 30);
}

#[test]
fn anthropic_records_are_priced_at_the_four_prices_and_a_bad_price_is_refused() {
    let job = JobDir::new();
    let server = fault_server(&job, &["--mode", "anthropic"]);
    priced_job(&job, &server, 6, true).write(job.path());
    nightshift(&job, &["run", "job.toml", "--run-dir", "run"]).expect_code(0);
    let records = final_records(&job.run_dir());
    assert_eq!(records.len(), 6);
    for record in &records {
        // 12 in, 5 out, 8 cache reads, 3 cache writes.
        let expected = (12.0 * INPUT + 5.0 * OUTPUT + 8.0 * CACHED + 3.0 * CACHE_WRITE) / 1e6;
        let cost = record["cost"].as_f64().expect("a cost");
        assert!(close(cost, expected), "{record}");
    }

    let bad = JobDir::new();
    bad.items(1);
    Job::new("items.jsonl")
        .openai("http://127.0.0.1:9/v1", "m")
        .raw("agent.price", "input = 1\noutput = -3")
        .write(bad.path());
    let refused = bad.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("job.toml") && refused.stderr.contains("agent.price.output"),
        "{}",
        refused.stderr
    );
}

/// The server's chat requests after its first `skip` log lines.
fn chat_requests(server: &FaultServer, skip: usize) -> usize {
    server
        .requests()
        .into_iter()
        .skip(skip)
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/chat/completions"))
        })
        .count()
}

#[test]
fn a_daily_request_budget_stops_the_run_and_holds_across_a_resume() {
    let job = JobDir::new();
    let server = fault_server(&job, &[]);
    priced_job(&job, &server, 10, false)
        .raw("rate", "requests_per_day = 4")
        .write(job.path());
    let stopped = nightshift(&job, &["run", "job.toml", "--run-dir", "run"]);
    stopped.expect_code(4);
    let said = format!("{}{}", stopped.stdout, stopped.stderr);
    assert!(
        said.contains("rate.requests_per_day = 4") && said.contains("room again from"),
        "{said}"
    );
    assert_eq!(chat_requests(&server, 0), 4, "four requests, then none");
    assert_eq!(saved_records(&job).len(), 4);
    let daily = std::fs::read_to_string(job.run_dir().join("rate.daily.jsonl"))
        .expect("the day's use is kept in the run directory");
    let requests: u64 = daily
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["requests"].as_u64())
        .sum();
    assert_eq!(requests, 4, "{daily}");

    // The same day: the resume finds the budget spent and asks nothing.
    let before = server.requests().len();
    nightshift(&job, &["resume", "run"]).expect_code(4);
    assert_eq!(
        chat_requests(&server, before),
        0,
        "no request past the day's budget"
    );
}

#[test]
fn a_daily_token_budget_stops_the_run_within_the_requests_in_flight() {
    let job = JobDir::new();
    let server = fault_server(&job, &[]);
    // Each request reserves 7 prompt + 20 output tokens and uses 7 + 5.
    priced_job(&job, &server, 30, false)
        .raw("rate", "tokens_per_day = 100")
        .write(job.path());
    let stopped = nightshift(&job, &["run", "job.toml", "--run-dir", "run"]);
    stopped.expect_code(4);
    let said = format!("{}{}", stopped.stdout, stopped.stderr);
    assert!(said.contains("rate.tokens_per_day = 100"), "{said}");
    let used: u64 = saved_records(&job)
        .iter()
        .filter_map(|r| {
            let usage = &r["usage"];
            Some(usage["input_tokens"].as_u64()? + usage["output_tokens"].as_u64()?)
        })
        .sum();
    assert!(used > 0 && used <= 100, "{used} tokens used");
}

#[test]
fn a_sample_gives_plan_a_likely_cost_from_real_answers() {
    let job = JobDir::new();
    let server = fault_server(&job, &[]);
    priced_job(&job, &server, 30, false)
        .llm("estimate_sample", 3)
        .write(job.path());
    let plan = nightshift(&job, &["plan", "job.toml"]);
    plan.expect_code(0);
    // At most: 30 × (7 × $1000 + 20 × $2000) / 1M. Likely: the sample's
    // answers have 5 output tokens each, so 30 × (7 × $1000 + 5 × $2000) / 1M.
    assert!(
        plan.stdout
            .contains("estimated cost: at most $1.41 for 30 items")
            && plan.stdout.contains(
                "; likely $0.51 (output from 3 sample answers: 5 tokens each on average)"
            ),
        "{}",
        plan.stdout
    );
    assert_eq!(chat_requests(&server, 0), 3, "three items asked, no more");
    // Without its key the sample cannot be taken: said, and the plan stands.
    let without = wait_with_deadline(
        spawn_nightshift_with(job.path(), &["plan", "job.toml"], &[]),
        DEADLINE,
    );
    without.expect_code(0);
    assert!(
        without.stdout.contains("likely cost not known"),
        "{}",
        without.stdout
    );
}

/// The priced job as a two-stage pipeline (`first`, then `second` after it),
/// each stage the priced job's agent over agents of two items, so that the
/// second stage works while the first still does.
fn priced_pipeline(job: &JobDir, server: &FaultServer, items: usize, max_cost: f64) {
    let single: toml::Table = priced_job(job, server, items, false)
        .render()
        .parse()
        .expect("the priced job is TOML");
    let mut pipeline = single.clone();
    pipeline.remove("agent");
    pipeline.remove("layout");
    let mut limits = toml::Table::new();
    limits.insert("max_parallel".into(), 2.into());
    limits.insert("max_cost".into(), max_cost.into());
    pipeline.insert("limits".into(), limits.into());
    let mut layout = toml::Table::new();
    layout.insert("items_per_agent".into(), 2.into());
    let stages: Vec<toml::Value> = [("first", None), ("second", Some("first"))]
        .into_iter()
        .map(|(name, after)| {
            let mut stage = toml::Table::new();
            stage.insert("name".into(), name.into());
            if let Some(after) = after {
                stage.insert("after".into(), after.into());
            }
            stage.insert("layout".into(), layout.clone().into());
            let mut agent = single["agent"].clone();
            if after.is_some() {
                // An LLM record holds the reply, not the item's fields.
                agent["llm"]["prompt"] = "review: {{output}}".into();
            }
            stage.insert("agent".into(), agent);
            stage.into()
        })
        .collect();
    pipeline.insert("stage".into(), stages.into());
    job.write("job.toml", &toml::to_string(&pipeline).expect("TOML"));
}

#[test]
fn a_pipeline_spends_one_budget_over_all_its_stages() {
    let job = JobDir::new();
    let server = fault_server(&job, &["--delay", "50ms"]);
    // Up to 4 requests in flight, each holding $0.047 until its usage is known.
    let max_cost = 0.6;
    priced_pipeline(&job, &server, 30, max_cost);
    let stopped = nightshift(&job, &["run", "job.toml", "--run-dir", "run"]);
    stopped.expect_code(4);
    let records = saved_records(&job);
    let in_second = records_in(&job.run_dir().join("stage_second")).len();
    assert!(in_second > 0, "the second stage never started");
    let sum: f64 = records
        .iter()
        .map(|r| r["cost"].as_f64().expect("every record has a cost"))
        .sum();
    assert!(
        sum <= max_cost + 1e-9,
        "the stages' records cost {sum} together, above the pipeline's budget {max_cost}"
    );
    // More budget: every stage goes on to the end.
    nightshift(&job, &["resume", "run", "--max-cost", "50"]).expect_code(0);
    assert_eq!(final_records(&job.run_dir()).len(), 30);
}
