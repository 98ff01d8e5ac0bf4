//! The answer cache (`[cache]`) against tests/src/bin/fault_server.rs, which
//! logs every request: a second run of a job asks nothing and gives the
//! same answers, marked cached, at cost 0, with the money saved in status
//! and report.json; a changed prompt or max_tokens asks again only for what
//! changed; a changed validator asks nothing, yet re-checks every cached
//! answer; no [cache] or --no-cache asks every time; two runs at once share
//! one cache file; a cache that cannot be used stops `run` with exit 2.

use std::path::PathBuf;
use std::time::Duration;

use nightshift_tests::litellm::{final_records, spawn_nightshift_with, FaultServer};
use nightshift_tests::{wait_with_deadline, Finished, Job, JobDir};
use serde_json::Value;

const KEY_VAR: &str = "NIGHTSHIFT_TEST_CACHE_KEY";
const KEY: &str = "sk-cache-test-key-0000wxyz";
const DEADLINE: Duration = Duration::from_secs(120);
const ITEMS: usize = 8;
/// Relative: resolved against the job file's folder.
const CACHE: &str = "cache/answers.sqlite";

fn server(job: &JobDir) -> FaultServer {
    server_with(job, &[])
}

fn server_with(job: &JobDir, args: &[&str]) -> FaultServer {
    FaultServer::start(
        &PathBuf::from(env!("CARGO_BIN_EXE_fault_server")),
        &job.path().join("requests.jsonl"),
        args,
    )
}

/// A priced openai job over the items, two agents.
fn llm_job(server: &FaultServer) -> Job {
    Job::new("items.jsonl")
        .layout(1, 1, 2)
        .openai(&server.base_url(), "fault-model")
        .llm("api_key_env", KEY_VAR)
        .llm("prompt", "{{prompt}}")
        .llm("max_tokens", 20)
        .llm("request_timeout", "5s")
        .concurrency(2)
        .item_retries(1)
        .raw("agent.price", "input = 1000.0\noutput = 2000.0")
}

/// The same with `[cache]`.
fn cached_job(server: &FaultServer) -> Job {
    llm_job(server).raw("cache", &format!("path = {CACHE:?}"))
}

fn nightshift(job: &JobDir, args: &[&str]) -> Finished {
    wait_with_deadline(
        spawn_nightshift_with(job.path(), args, &[(KEY_VAR, KEY)]),
        DEADLINE,
    )
}

/// Runs job.toml into `run_dir`; returns the requests it made.
fn run(job: &JobDir, server: &FaultServer, run_dir: &str, extra: &[&str], code: i32) -> Vec<Value> {
    let before = server.requests().len();
    let mut args = vec!["run", "job.toml", "--run-dir", run_dir];
    args.extend_from_slice(extra);
    nightshift(job, &args).expect_code(code);
    server.requests().split_off(before)
}

fn items_asked(requests: &[Value]) -> Vec<String> {
    let mut items: Vec<String> = requests
        .iter()
        .filter_map(|r| r["item"].as_str().map(str::to_owned))
        .collect();
    items.sort();
    items
}

/// A record without what the cache changes in it.
fn answer_of(record: &Value) -> Value {
    let mut record = record.clone();
    if let Some(fields) = record.as_object_mut() {
        for key in ["cached", "cost", "saved"] {
            fields.remove(key);
        }
    }
    record
}

fn status_json(job: &JobDir, run_dir: &str) -> Value {
    let status = nightshift(job, &["status", run_dir, "--json"]);
    serde_json::from_str(&status.stdout).expect("status --json is JSON")
}

#[test]
fn a_second_run_asks_nothing_and_saves_the_same_answers_at_no_cost() {
    let (job, server, _) = first_run();
    let fresh = final_records(&job.path().join("run1"));
    assert!(fresh.iter().all(|r| r.get("cached").is_none()), "{fresh:?}");
    let paid: f64 = fresh.iter().filter_map(|r| r["cost"].as_f64()).sum();
    assert!(paid > 0.0);
    assert!(job.path().join(CACHE).is_file());

    let file = std::fs::read(job.path().join(CACHE)).expect("the cache file");
    assert!(
        !file.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
        "the API key is in the cache"
    );

    let second = run(&job, &server, "run2", &[], 0);
    assert_eq!(
        second,
        Vec::<Value>::new(),
        "the second run asked the server"
    );
    let cached = final_records(&job.path().join("run2"));
    assert_eq!(cached.len(), ITEMS);
    for record in &cached {
        assert_eq!(record["cached"], true, "{record}");
        assert_eq!(record["cost"], 0.0, "{record}");
        assert!(
            record["usage"]["output_tokens"].as_u64() > Some(0),
            "{record}"
        );
    }
    let answers = |records: &[Value]| records.iter().map(answer_of).collect::<Vec<_>>();
    assert_eq!(answers(&fresh), answers(&cached));
    let saved: f64 = cached.iter().filter_map(|r| r["saved"].as_f64()).sum();
    assert!((saved - paid).abs() < 1e-6, "saved {saved}, paid {paid}");

    let status = status_json(&job, "run2");
    assert_eq!(status["cache"]["hits"], ITEMS, "{status}");
    let shown = status["cache"]["saved"].as_f64().expect("saved USD");
    assert!((shown - paid).abs() < 1e-6, "{status}");
    // Answers from the cache used no tokens and cost nothing.
    assert_eq!(status["cost"], 0.0, "{status}");
    assert_eq!(status["usage"]["output_tokens"], 0, "{status}");
    let text = nightshift(&job, &["status", "run2"]);
    assert!(
        text.stdout
            .contains(&format!("answer cache: {ITEMS} hits, saved $")),
        "{}",
        text.stdout
    );
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(job.path().join("run2/report.json")).expect("report.json"),
    )
    .expect("report.json is JSON");
    assert_eq!(report["cache"]["hits"], ITEMS, "{report}");
    nightshift(&job, &["report", "run2", "--html", "report.html"]).expect_code(0);
    let page = std::fs::read_to_string(job.path().join("report.html")).expect("the page");
    assert!(page.contains(&format!("answer cache: {ITEMS} hits, saved $")));
    assert_eq!(status_json(&job, "run1")["cache"]["hits"], 0);

    // Cached answers need no permit and no money: a budget smaller than
    // one request does not stop a run that asks nothing.
    cached_job(&server)
        .limit("max_cost", 0.000_001)
        .write(job.path());
    assert_eq!(
        run(&job, &server, "run-budget", &[], 0),
        Vec::<Value>::new()
    );
    cached_job(&server).write(job.path());

    // --no-cache asks again for everything and marks nothing.
    let again = run(&job, &server, "run3", &["--no-cache"], 0);
    assert_eq!(again.len(), ITEMS);
    let records = final_records(&job.path().join("run3"));
    assert!(records.iter().all(|r| r.get("cached").is_none()));

    let stats = nightshift(&job, &["cache", "stats", "--path", CACHE, "--json"]);
    let stats: Value = serde_json::from_str(&stats.stdout).expect("stats --json is JSON");
    assert_eq!(stats["entries"], ITEMS, "{stats}");
    // run2 and run-budget; --no-cache neither reads nor fills it.
    assert_eq!(stats["hits"], 2 * ITEMS, "{stats}");
    assert_eq!(stats["models"][0]["model"], "fault-model", "{stats}");
    let by_job = nightshift(&job, &["cache", "stats", "--job", "job.toml"]);
    assert!(
        by_job.stdout.contains(&format!("{ITEMS} answers")),
        "{}",
        by_job.stdout
    );

    let kept = nightshift(
        &job,
        &["cache", "prune", "--path", CACHE, "--older-than", "30d"],
    );
    assert!(kept.stdout.contains("removed 0 answers"), "{}", kept.stdout);
    let pruned = nightshift(&job, &["cache", "prune", "--path", CACHE, "--all"]);
    assert!(
        pruned.stdout.contains(&format!("removed {ITEMS} answers")),
        "{}",
        pruned.stdout
    );
    assert_eq!(run(&job, &server, "run4", &[], 0).len(), ITEMS);
}

/// A job folder whose cached job ran once into run1, asking for every item.
fn first_run() -> (JobDir, FaultServer, Vec<String>) {
    let job = JobDir::new();
    let server = server(&job);
    let ids = job.items(ITEMS);
    cached_job(&server).write(job.path());
    assert_eq!(run(&job, &server, "run1", &[], 0).len(), ITEMS);
    (job, server, ids)
}

#[test]
fn a_changed_prompt_or_max_tokens_asks_again_only_for_what_changed() {
    let (job, server, ids) = first_run();

    // Two items' prompts change: only they are asked again.
    let text: String = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let prompt = if n < 2 {
                "something new about"
            } else {
                "say something about"
            };
            format!("{{\"id\": \"{id}\", \"prompt\": \"{prompt} {id}\"}}\n")
        })
        .collect();
    job.write("items.jsonl", &text);
    let changed = run(&job, &server, "run2", &[], 0);
    assert_eq!(items_asked(&changed), vec![ids[0].clone(), ids[1].clone()]);
    let records = final_records(&job.path().join("run2"));
    let cached = records.iter().filter(|r| r["cached"] == true).count();
    assert_eq!(cached, ITEMS - 2);

    // max_tokens is in every request: all are asked again.
    cached_job(&server).llm("max_tokens", 21).write(job.path());
    assert_eq!(run(&job, &server, "run3", &[], 0).len(), ITEMS);
}

#[test]
fn a_changed_validator_asks_nothing_but_checks_every_cached_answer() {
    let (job, server, ids) = first_run();

    cached_job(&server)
        .validate("required", vec!["output"])
        .write(job.path());
    assert_eq!(run(&job, &server, "run2", &[], 0), Vec::<Value>::new());

    // The cached answer of one item is refused now: that item alone is asked
    // again (its retry), and fails, the server saying the same.
    let refused = format!("^reply to {}$", ids[2]);
    cached_job(&server)
        .validate("reject", vec![refused.as_str()])
        .write(job.path());
    let asked = run(&job, &server, "run3", &[], 1);
    assert_eq!(items_asked(&asked), vec![ids[2].clone()]);
    assert_eq!(final_records(&job.path().join("run3")).len(), ITEMS - 1);
}

#[test]
fn resume_no_cache_asks_the_server_for_every_attempt() {
    let job = JobDir::new();
    let server = server(&job);
    let ids = job.items(ITEMS);
    let refused = format!("^reply to {}$", ids[3]);
    cached_job(&server)
        .validate("reject", vec![refused.as_str()])
        .write(job.path());
    // Both attempts at the refused item ask: its first answer was not cached
    // yet when the retry came.
    let asked = run(&job, &server, "run", &[], 1);
    assert_eq!(asked.len(), ITEMS + 1);
    let resume = |extra: &[&str]| {
        let before = server.requests().len();
        let mut args = vec!["resume", "run", "--retry-failed"];
        args.extend_from_slice(extra);
        nightshift(&job, &args).expect_code(1);
        items_asked(&server.requests().split_off(before))
    };
    // The first attempt is answered from the cache (and refused), the retry asks.
    assert_eq!(resume(&[]), vec![ids[3].clone()]);
    assert_eq!(
        resume(&["--no-cache"]),
        vec![ids[3].clone(), ids[3].clone()]
    );
}

#[test]
fn anthropic_answers_are_cached_too() {
    let job = JobDir::new();
    let server = server_with(&job, &["--mode", "anthropic"]);
    job.items(ITEMS);
    cached_job(&server)
        .anthropic(&server.base_url(), "claude-fault")
        .write(job.path());
    assert_eq!(run(&job, &server, "run1", &[], 0).len(), ITEMS);
    assert_eq!(run(&job, &server, "run2", &[], 0), Vec::<Value>::new());
    let records = final_records(&job.path().join("run2"));
    assert!(records.iter().all(|r| r["cached"] == true), "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| r["output"] == format!("reply to {}", r["id"].as_str().unwrap_or("?"))),
        "{records:?}"
    );
}

#[test]
fn without_a_cache_section_every_run_asks() {
    let job = JobDir::new();
    let server = server(&job);
    job.items(ITEMS);
    llm_job(&server).write(job.path());
    assert_eq!(run(&job, &server, "run1", &[], 0).len(), ITEMS);
    assert_eq!(run(&job, &server, "run2", &[], 0).len(), ITEMS);
    assert!(!job.path().join(CACHE).exists());
}

#[test]
fn two_runs_at_once_share_one_cache_file() {
    let job = JobDir::new();
    let server = server(&job);
    job.items(ITEMS * 4);
    cached_job(&server).layout(1, 1, 4).write(job.path());
    let start = |run_dir: &str| {
        spawn_nightshift_with(
            job.path(),
            &["run", "job.toml", "--run-dir", run_dir],
            &[(KEY_VAR, KEY)],
        )
    };
    let (a, b) = (start("run-a"), start("run-b"));
    wait_with_deadline(a, DEADLINE).expect_code(0);
    wait_with_deadline(b, DEADLINE).expect_code(0);
    assert!(server.requests().len() <= 2 * ITEMS * 4);
    // Every answer of either is in the cache.
    assert_eq!(run(&job, &server, "run-c", &[], 0), Vec::<Value>::new());
}

#[test]
fn a_cache_that_cannot_be_used_stops_the_run_with_exit_2_naming_the_file() {
    let job = JobDir::new();
    let server = server(&job);
    job.items(ITEMS);
    // `run` with the cache at `path`: refused with exit 2 before the run
    // directory exists; what it said.
    let refused = |path: &str, run_dir: &str| {
        cached_job(&server)
            .raw("cache", &format!("path = {path:?}"))
            .write(job.path());
        let refused = nightshift(&job, &["run", "job.toml", "--run-dir", run_dir]);
        refused.expect_code(2);
        assert!(!job.path().join(run_dir).exists());
        refused.stderr
    };
    // Not a database (a root user could write anywhere: no permission test).
    let garbage = job.write("garbage.sqlite", &"x".repeat(4096));
    let said = refused("garbage.sqlite", "run1");
    assert!(said.contains(&*garbage.to_string_lossy()), "{said}");
    assert_eq!(
        std::fs::read(&garbage).expect("kept"),
        "x".repeat(4096).as_bytes()
    );
    // A folder that cannot be made: a file stands where it would be.
    job.write("blocker", "");
    let said = refused("blocker/answers.sqlite", "run2");
    assert!(said.contains("blocker/answers.sqlite"), "{said}");
    assert!(server.requests().is_empty());
}
