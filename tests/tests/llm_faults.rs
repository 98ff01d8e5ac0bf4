//! The LLM backends against tests/src/bin/fault_server.rs: every fault kind
//! (500s, a hang past request_timeout, a reset connection, a garbled body) is
//! retried to a complete final.json; an unset key variable stops the run
//! before any launch; a rejected key stops it (exit 5) after few requests; a
//! supervisor killed mid-run and resumed asks for no item already saved; the
//! anthropic backend reads Anthropic's shape and normalises its usage; a
//! server that announces no limit is probed through the broker once per agent.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use nightshift_tests::litellm::{files_under, final_records, spawn_nightshift_with, FaultServer};
use nightshift_tests::{events, run_processes, wait_until, wait_with_deadline, Job, JobDir};
use serde_json::Value;

const KEY_VAR: &str = "NIGHTSHIFT_TEST_FAULT_KEY";
const KEY: &str = "sk-fault-test-key-0000wxyz";
const DEADLINE: Duration = Duration::from_secs(120);

fn fault_server(job: &JobDir, args: &[&str]) -> FaultServer {
    FaultServer::start(
        &PathBuf::from(env!("CARGO_BIN_EXE_fault_server")),
        &job.path().join("requests.jsonl"),
        args,
    )
}

/// An openai job over `items` items against `server`, two agents.
fn openai_job(job: &JobDir, server: &FaultServer, items: usize) -> Vec<String> {
    let ids = job.items(items);
    Job::new("items.jsonl")
        .layout(1, 1, 2)
        .openai(&server.base_url(), "fault-model")
        .llm("api_key_env", KEY_VAR)
        .llm("prompt", "{{prompt}}")
        .llm("request_timeout", "2s")
        .concurrency(3)
        .item_retries(4)
        .timeout("5m")
        .write(job.path());
    ids
}

fn run(job: &JobDir, key: &str) -> nightshift_tests::Finished {
    let child = spawn_nightshift_with(
        job.path(),
        &["run", "job.toml", "--run-dir", "run"],
        &[(KEY_VAR, key)],
    );
    wait_with_deadline(child, DEADLINE)
}

/// Runs the openai job against a fault server in `mode`; every item ends in
/// final.json with the server's reply after exactly one `fault` request.
fn retried_to_the_end(mode: &str, fault: &str) {
    let job = JobDir::new();
    let server = fault_server(&job, &["--mode", mode, "--hang", "20s"]);
    let ids = openai_job(&job, &server, 6);
    run(&job, KEY).expect_code(0);

    let records = final_records(&job.run_dir());
    let got: Vec<&str> = records.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(got, ids);
    for record in &records {
        let id = record["id"].as_str().unwrap_or_default();
        assert_eq!(record["output"], format!("reply to {id}"), "{record}");
        // OpenAI counts cached tokens inside prompt_tokens (20, 8 cached).
        assert_eq!(record["usage"]["input_tokens"], 12, "{record}");
        assert_eq!(record["usage"]["cached_input_tokens"], 8, "{record}");
        assert_eq!(record["usage"]["output_tokens"], 5, "{record}");
        let faults: Vec<Value> = server
            .requests_for(id)
            .into_iter()
            .map(|r| r["fault"].clone())
            .collect();
        assert_eq!(
            faults.iter().filter(|f| *f == fault).count(),
            1,
            "{id}: requests met {faults:?}"
        );
        assert_eq!(faults.last(), Some(&Value::Null), "{id}: {faults:?}");
    }
}

#[test]
fn server_errors_are_retried() {
    retried_to_the_end("error500:1", "error500");
}

#[test]
fn a_hang_past_request_timeout_is_retried() {
    retried_to_the_end("hang", "hang");
}

#[test]
fn a_reset_connection_is_retried() {
    retried_to_the_end("reset", "reset");
}

#[test]
fn a_garbled_body_is_retried() {
    retried_to_the_end("garbled", "garbled");
}

#[test]
fn an_unset_key_variable_stops_the_run_before_any_launch() {
    let job = JobDir::new();
    job.items(4);
    Job::new("items.jsonl")
        .layout(1, 1, 2)
        // Nothing listens there: no request may be tried.
        .openai("http://127.0.0.1:9/v1", "fault-model")
        .llm("api_key_env", "NIGHTSHIFT_TEST_KEY_NOBODY_SET")
        .write(job.path());
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(2);
    assert!(
        finished.stderr.contains("NIGHTSHIFT_TEST_KEY_NOBODY_SET"),
        "the message names the variable:\n{}",
        finished.stderr
    );
    let logs: Vec<PathBuf> = files_under(&job.run_dir())
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "log"))
        .collect();
    assert!(logs.is_empty(), "agents were launched: {logs:?}");
    assert!(!events(&job.run_dir())
        .iter()
        .any(|e| e["event"] == "launched"));
}

#[test]
fn a_rejected_key_stops_the_run_with_exit_5_after_few_requests() {
    let job = JobDir::new();
    let server = fault_server(&job, &["--mode", "unauthorized", "--good-key", KEY]);
    openai_job(&job, &server, 40);
    let child = spawn_nightshift_with(
        job.path(),
        &["run", "job.toml", "--run-dir", "run"],
        &[(KEY_VAR, "sk-wrong-key-for-this-server-1111")],
    );
    // A rejected key must stop the run within seconds, not burn the items.
    let finished = wait_with_deadline(child, Duration::from_secs(30));
    finished.expect_code(5);
    // Said on the terminal (either stream), naming the variable and the endpoint.
    let said = format!("{}{}", finished.stdout, finished.stderr);
    assert!(
        said.contains(KEY_VAR) && said.contains(&server.base_url()),
        "the message names the variable and the endpoint:\n{said}"
    );
    let sent = server.requests().len();
    assert!(sent <= 12, "{sent} requests were sent with a rejected key");
}

#[test]
fn resume_after_a_supervisor_kill_asks_for_no_saved_item() {
    let job = JobDir::new();
    // A slow model (and rate-limit headers to pace by): the run lasts long
    // enough to be killed mid-way.
    let server = fault_server(
        &job,
        &["--mode", "ratelimit", "--rpm", "600", "--delay", "300ms"],
    );
    let ids = openai_job(&job, &server, 30);
    let child = spawn_nightshift_with(
        job.path(),
        &["run", "job.toml", "--run-dir", "run"],
        &[(KEY_VAR, KEY)],
    );
    let supervisor = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let saved_count = || saved_ids(&job).len();
    assert!(
        wait_until(DEADLINE, || saved_count() >= 6),
        "no records were saved"
    );
    // A machine crash: the supervisor and its agents die at once.
    let _ = nix::sys::signal::kill(supervisor, nix::sys::signal::Signal::SIGKILL);
    let finished = wait_with_deadline(child, Duration::from_secs(10));
    assert_eq!(finished.code, None, "the supervisor was killed");
    for pid in run_processes(&job.run_dir()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(wait_until(DEADLINE, || run_processes(&job.run_dir()).is_empty()));
    let saved = saved_ids(&job);
    assert!(saved.len() < ids.len(), "the run ended before the kill");
    let before = server.requests().len();

    let child = spawn_nightshift_with(job.path(), &["resume", "run"], &[(KEY_VAR, KEY)]);
    wait_with_deadline(child, DEADLINE).expect_code(0);
    let records = final_records(&job.run_dir());
    assert_eq!(records.len(), ids.len());
    let again = server.asked_again(before, &saved);
    assert!(
        again.is_empty(),
        "resume asked again for saved items {again:?}"
    );
}

#[test]
fn a_server_without_limits_is_probed_once_per_agent_while_the_other_calls_wait() {
    let job = JobDir::new();
    // Slow answers, so that every worker's first call is due at once.
    let server = fault_server(&job, &["--delay", "300ms"]);
    let ids = openai_job(&job, &server, 12);
    run(&job, KEY).expect_code(0);
    assert_eq!(final_records(&job.run_dir()).len(), ids.len());
    // One permit per agent: its first call probes; the two other workers
    // of each agent waited for that answer, which announced no limit, and
    // went on without permits (before, each took one from the broker,
    // whose slow start held them back).
    let log = std::fs::read_to_string(job.run_dir().join("rate.log")).unwrap_or_default();
    let grants: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["op"] == "grant")
        .collect();
    assert_eq!(grants.len(), 2, "one probe per agent: {grants:?}");
    let agents: HashSet<&str> = grants.iter().filter_map(|g| g["agent"].as_str()).collect();
    assert_eq!(agents.len(), 2, "{grants:?}");
}

/// Ids in the run's agent files (torn last lines ignored).
fn saved_ids(job: &JobDir) -> HashSet<String> {
    files_under(&job.run_dir())
        .into_iter()
        .filter(|f| {
            f.to_string_lossy().ends_with(".jsonl") && f.to_string_lossy().contains("agent_")
        })
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|r| r["id"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn anthropic_answers_give_records_with_normalised_usage() {
    let job = JobDir::new();
    let server = fault_server(&job, &["--mode", "anthropic"]);
    let ids = job.items(5);
    Job::new("items.jsonl")
        .layout(1, 1, 1)
        .anthropic(&server.base_url(), "claude-fault")
        .llm("api_key_env", KEY_VAR)
        .llm("prompt", "{{prompt}}")
        .llm("max_tokens", 100)
        .concurrency(2)
        .write(job.path());
    run(&job, KEY).expect_code(0);

    let records = final_records(&job.run_dir());
    assert_eq!(records.len(), ids.len());
    for record in &records {
        let id = record["id"].as_str().unwrap_or_default();
        assert_eq!(record["output"], format!("reply to {id}"), "{record}");
        assert_eq!(record["model"], "claude-fault", "{record}");
        // Anthropic counts cache reads and writes apart from input_tokens.
        let usage = &record["usage"];
        assert_eq!(usage["input_tokens"], 12, "{record}");
        assert_eq!(usage["output_tokens"], 5, "{record}");
        assert_eq!(usage["cached_input_tokens"], 8, "{record}");
        assert_eq!(usage["cache_write_tokens"], 3, "{record}");
    }
    for request in server.requests() {
        assert_eq!(request["path"], "/v1/messages", "{request}");
        assert!(request["anthropic_version"].is_string(), "{request}");
        assert_eq!(request["key"], "…wxyz", "{request}");
    }
}

#[test]
fn replies_cut_by_max_tokens_are_kept_and_counted_in_status_and_the_report() {
    let job = JobDir::new();
    let server = fault_server(&job, &["--mode", "truncate"]);
    let ids = job.items(4);
    Job::new("items.jsonl")
        .layout(1, 1, 1)
        .openai(&server.base_url(), "gpt-fault")
        .llm("api_key_env", KEY_VAR)
        .llm("prompt", "{{prompt}}")
        .llm("max_tokens", 5)
        .write(job.path());
    run(&job, KEY).expect_code(0);
    let records = final_records(&job.run_dir());
    assert_eq!(records.len(), ids.len(), "kept");
    assert!(
        records.iter().all(|r| r["truncated"] == true),
        "{records:?}"
    );
    let status = job.nightshift(&["status", "run", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("status --json");
    assert_eq!(status["items"]["truncated"], 4, "{status}");
    let text = job.nightshift(&["status", "run"]);
    assert!(text.stdout.contains("truncated: 4"), "{}", text.stdout);
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(job.run_dir().join("report.json")).expect("report.json"),
    )
    .expect("report.json is JSON");
    assert_eq!(report["items"]["truncated"], 4, "{report}");
}
