//! Provider batch APIs (`agent.llm.mode = "batch"`) against the fault
//! server's batch endpoints (tests/src/bin/fault_server/batch.rs), both
//! shapes: a batch job completes with records priced at half the online
//! price and no online request; a supervisor SIGKILLed (with its agents)
//! after the batch ids are journaled resumes by polling those batches —
//! no item is ever submitted twice and final.json is byte-identical to an
//! uninterrupted run's; expired and errored requests go again, alone, in a
//! new batch; auto mode sends the items still in batches online at its
//! deadline, cancelling the batches; Ctrl-C leaves batches running, says so, `status` shows them and
//! `cancel` cancels them at the provider; a batch the budget cannot cover is
//! not sent (exit 4) and a resume with more completes; a bad batch_poll is refused with
//! exit 2 naming the key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use nightshift_tests::litellm::{files_under, final_records, spawn_nightshift_with, FaultServer};
use nightshift_tests::priced::{fault_server, priced, priced_job};
use nightshift_tests::{run_processes, wait_until, wait_with_deadline, Job, JobDir};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const KEY_VAR: &str = "NIGHTSHIFT_TEST_BATCH_KEY";
const KEY: &str = "sk-batch-test-key-0000abcd";
const DEADLINE: Duration = Duration::from_secs(120);

/// A priced batch job over `items` items in two agents, polling every 200ms.
fn batch_job(job: &JobDir, server: &FaultServer, items: usize, anthropic: bool) -> Job {
    priced_job(job, server, KEY_VAR, items, anthropic)
        .llm("mode", "batch")
        .llm("batch_poll", "200ms")
}

fn nightshift(job: &JobDir, args: &[&str]) -> nightshift_tests::Finished {
    wait_with_deadline(
        spawn_nightshift_with(job.path(), args, &[(KEY_VAR, KEY)]),
        DEADLINE,
    )
}

/// The batch requests the server logged after its first `skip` log lines:
/// (batch id, item) in the order they came.
fn batch_requests(server: &FaultServer, skip: usize) -> Vec<(String, String)> {
    server
        .requests()
        .into_iter()
        .skip(skip)
        .filter(|r| r["event"] == "batch-request")
        .map(|r| {
            let text = |key: &str| r[key].as_str().unwrap_or_default().to_owned();
            (text("batch"), text("item"))
        })
        .collect()
}

fn submissions(requests: &[(String, String)]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (_, item) in requests {
        *counts.entry(item.clone()).or_insert(0) += 1;
    }
    counts
}

fn batch_journals(job: &JobDir) -> Vec<PathBuf> {
    files_under(&job.run_dir())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".batch.jsonl"))
        .collect()
}

fn completes_at_half_price(anthropic: bool) {
    let job = JobDir::new();
    let server = fault_server(&job, &["--batch-polls", "2"]);
    let ids = {
        let spec = batch_job(&job, &server, 6, anthropic);
        spec.write(job.path());
        (1..=6).map(|i| format!("item-{i:03}")).collect::<Vec<_>>()
    };
    nightshift(&job, &["run", "job.toml", "--run-dir", "run", "-q"]).expect_code(0);
    let records = final_records(&job.run_dir());
    let found: Vec<&str> = records.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(found, ids, "every item once, in input order");
    for record in &records {
        let id = record["id"].as_str().unwrap_or_default();
        assert_eq!(record["output"], format!("reply to {id}"), "{record}");
        let cost = record["cost"].as_f64().expect("a cost");
        let half = priced(&record["usage"]) / 2.0;
        assert!(
            half > 0.0 && (cost - half).abs() < 1e-9,
            "{cost} vs {half}: {record}"
        );
    }
    let online = server.requests().into_iter().filter(|r| {
        let path = r["path"].as_str().unwrap_or_default();
        path.ends_with("/chat/completions") || path.ends_with("/messages")
    });
    assert_eq!(online.count(), 0, "no online request in batch mode");
    let counts = submissions(&batch_requests(&server, 0));
    assert_eq!(counts.len(), 6, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    let report: Value = serde_json::from_slice(
        &std::fs::read(job.run_dir().join("report.json")).expect("report.json"),
    )
    .expect("report.json is JSON");
    let batches = report["batches"].as_array().cloned().unwrap_or_default();
    assert_eq!(batches.len(), 2, "the report lists each batch: {report}");
    assert!(
        batches
            .iter()
            .all(|b| b["settled"] == true && b["succeeded"] == 3),
        "{batches:?}"
    );
    let journals = batch_journals(&job);
    assert_eq!(journals.len(), 2, "one journal per agent");
    for journal in journals {
        let text = std::fs::read_to_string(&journal).expect("journal");
        assert!(
            text.contains("\"submitted\"") && text.contains("\"settled\""),
            "{text}"
        );
        assert!(
            !text.contains(KEY),
            "the key never reaches the run directory"
        );
    }
}

#[test]
fn an_openai_batch_job_completes_at_half_the_online_price() {
    completes_at_half_price(false);
}

#[test]
fn an_anthropic_batch_job_completes_at_half_the_online_price() {
    completes_at_half_price(true);
}

#[test]
fn ids_a_provider_refuses_as_custom_ids_are_hashed_and_mapped_back() {
    let job = JobDir::new();
    let server = fault_server(&job, &[]);
    batch_job(&job, &server, 3, true).write(job.path());
    // Ids with a space, a dot and a slash; an integer id: none is a custom_id.
    let ids = [json!("item 001.a"), json!("item/002"), json!(3)];
    let lines: String = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            format!(
                "{}\n",
                json!({"id": id, "prompt": format!("say something about item-00{}", i + 1)})
            )
        })
        .collect();
    job.write("items.jsonl", &lines);
    nightshift(&job, &["run", "job.toml", "--run-dir", "run", "-q"]).expect_code(0);
    let records = final_records(&job.run_dir());
    let found: Vec<&Value> = records.iter().map(|r| &r["id"]).collect();
    assert_eq!(
        found,
        ids.iter().collect::<Vec<_>>(),
        "every id, mapped back"
    );
    for (i, record) in records.iter().enumerate() {
        assert_eq!(
            record["output"],
            format!("reply to item-00{}", i + 1),
            "{record}"
        );
    }
    let requests = server.requests();
    let custom: Vec<&str> = requests
        .iter()
        .filter(|r| r["event"] == "batch-request")
        .filter_map(|r| r["custom_id"].as_str())
        .collect();
    assert_eq!(custom.len(), 3, "{custom:?}");
    assert!(custom.iter().all(|c| c.starts_with("h-")), "{custom:?}");
}

#[test]
fn a_killed_run_resumes_polling_its_batches_without_submitting_again() {
    // Both runs share one server (records name its address); the batches
    // stay in progress for 15 polls (3 s), long enough to kill the run.
    let reference = JobDir::new();
    let server = fault_server(&reference, &["--batch-polls", "15"]);
    batch_job(&reference, &server, 6, false).write(reference.path());
    nightshift(&reference, &["run", "job.toml", "--run-dir", "run", "-q"]).expect_code(0);
    let expected = std::fs::read(reference.run_dir().join("final.json")).expect("final.json");
    let before = server.requests().len();

    let job = JobDir::new();
    batch_job(&job, &server, 6, false).write(job.path());
    let child = spawn_nightshift_with(
        job.path(),
        &["run", "job.toml", "--run-dir", "run", "-q"],
        &[(KEY_VAR, KEY)],
    );
    wait_for_batches(&job);
    // The machine goes down: the supervisor's group, and every agent.
    let supervisor = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let _ = killpg(supervisor, Signal::SIGKILL);
    let agents = run_processes(&job.run_dir());
    for pid in &agents {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let _ = wait_with_deadline(child, DEADLINE);
    assert!(wait_until(DEADLINE, || run_processes(&job.run_dir()).is_empty()));
    assert!(
        !job.run_dir().join("final.json").exists(),
        "the run was killed before its batches ended"
    );

    nightshift(&job, &["resume", "run", "-q"]).expect_code(0);
    assert_eq!(
        std::fs::read(job.run_dir().join("final.json")).expect("final.json"),
        expected,
        "final.json is byte-identical to the uninterrupted run's"
    );
    let counts = submissions(&batch_requests(&server, before));
    assert_eq!(counts.len(), 6, "{counts:?}");
    assert!(
        counts.values().all(|n| *n == 1),
        "no item was submitted twice: {counts:?}"
    );
}

/// Waits until both agents of `job` journaled a batch.
fn wait_for_batches(job: &JobDir) {
    let submitted = || {
        let journals = batch_journals(job);
        journals.len() == 2
            && journals
                .iter()
                .all(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("\"submitted\"")))
    };
    assert!(
        wait_until(DEADLINE, submitted),
        "both agents journaled a batch"
    );
}

fn status_batches(job: &JobDir) -> Vec<Value> {
    let status = nightshift(job, &["status", "run", "--json"]);
    let status: Value = serde_json::from_str(&status.stdout).expect("status --json is JSON");
    status["batches"].as_array().cloned().unwrap_or_default()
}

#[test]
fn ctrl_c_leaves_batches_running_status_shows_them_and_cancel_cancels_them() {
    let job = JobDir::new();
    // Batches that never end by themselves.
    let server = fault_server(&job, &["--batch-polls", "100000"]);
    batch_job(&job, &server, 4, true).write(job.path());
    let child = spawn_nightshift_with(
        job.path(),
        &["run", "job.toml", "--run-dir", "run"],
        &[(KEY_VAR, KEY)],
    );
    wait_for_batches(&job);
    let supervisor = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(supervisor, Signal::SIGINT).expect("Ctrl-C");
    let finished = wait_with_deadline(child, DEADLINE);
    finished.expect_code(130);
    assert!(
        finished
            .stdout
            .contains("2 provider batch(es) left running at the provider"),
        "{}",
        finished.stdout
    );
    let batches = status_batches(&job);
    assert_eq!(batches.len(), 2, "{batches:?}");
    for batch in &batches {
        assert_eq!(batch["settled"], false, "{batch}");
        assert_eq!(batch["provider"], "anthropic", "{batch}");
        assert_eq!(batch["total"], 2, "{batch}");
    }
    let text = nightshift(&job, &["status", "run"]);
    assert!(
        text.stdout.contains("still at the provider"),
        "{}",
        text.stdout
    );

    nightshift(&job, &["cancel", "run"]).expect_code(0);
    let cancels = server.requests().into_iter().filter(|r| {
        r["method"] == "POST" && r["path"].as_str().is_some_and(|p| p.ends_with("/cancel"))
    });
    assert_eq!(cancels.count(), 2, "one cancel per batch at the provider");
    for batch in status_batches(&job) {
        assert_eq!(batch["state"], "ended", "cancelled batches end: {batch}");
    }
}

#[test]
fn auto_mode_sends_the_stragglers_online_at_its_deadline() {
    let job = JobDir::new();
    // Batches that never end by themselves: only the deadline ends the run.
    let server = fault_server(&job, &["--batch-polls", "100000"]);
    batch_job(&job, &server, 4, false)
        .llm("mode", "auto")
        .llm("batch_deadline", "2s")
        .write(job.path());
    nightshift(&job, &["run", "job.toml", "--run-dir", "run", "-q"]).expect_code(0);
    let records = final_records(&job.run_dir());
    assert_eq!(records.len(), 4);
    for record in &records {
        let id = record["id"].as_str().unwrap_or_default();
        assert_eq!(record["output"], format!("reply to {id}"), "{record}");
        let cost = record["cost"].as_f64().expect("a cost");
        assert!(
            (cost - priced(&record["usage"])).abs() < 1e-9,
            "online price: {record}"
        );
        let online = server.requests_for(id).into_iter().filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/chat/completions"))
        });
        assert_eq!(online.count(), 1, "{id} was asked online once");
    }
    let requests = batch_requests(&server, 0);
    let counts = submissions(&requests);
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    let batches: std::collections::HashSet<&String> = requests.iter().map(|(b, _)| b).collect();
    let cancels = server.requests().into_iter().filter(|r| {
        r["method"] == "POST" && r["path"].as_str().is_some_and(|p| p.ends_with("/cancel"))
    });
    assert_eq!(cancels.count(), batches.len(), "every batch was cancelled");
}

#[test]
fn expired_and_errored_requests_go_again_alone_in_a_new_batch() {
    let job = JobDir::new();
    let server = fault_server(
        &job,
        &["--batch-expire", "item-002", "--batch-error", "item-005"],
    );
    batch_job(&job, &server, 6, false).write(job.path());
    nightshift(&job, &["run", "job.toml", "--run-dir", "run", "-q"]).expect_code(0);
    let records = final_records(&job.run_dir());
    assert_eq!(records.len(), 6);
    let requests = batch_requests(&server, 0);
    let counts = submissions(&requests);
    for (item, want) in [
        ("item-001", 1),
        ("item-002", 2),
        ("item-003", 1),
        ("item-004", 1),
        ("item-005", 2),
        ("item-006", 1),
    ] {
        assert_eq!(counts.get(item), Some(&want), "{item}: {requests:?}");
    }
    // The second submission of each is a batch of its own.
    for item in ["item-002", "item-005"] {
        let Some((batch, _)) = requests.iter().rev().find(|(_, i)| i == item) else {
            panic!("{item} was submitted");
        };
        let members: Vec<&String> = requests
            .iter()
            .filter(|(b, _)| b == batch)
            .map(|(_, i)| i)
            .collect();
        assert_eq!(members, [item], "{requests:?}");
    }
}

#[test]
fn a_batch_the_budget_cannot_cover_is_not_sent_and_a_resume_with_more_completes() {
    let job = JobDir::new();
    let server = fault_server(&job, &[]);
    // Each agent's batch of three is estimated at about $0.07 (batch price).
    batch_job(&job, &server, 6, false)
        .limit("max_cost", 0.05)
        .write(job.path());
    nightshift(&job, &["run", "job.toml", "--run-dir", "run", "-q"]).expect_code(4);
    assert!(batch_requests(&server, 0).is_empty(), "no batch was sent");
    nightshift(&job, &["resume", "run", "-q", "--max-cost", "10"]).expect_code(0);
    let records = final_records(&job.run_dir());
    assert_eq!(records.len(), 6);
    let spent: f64 = records.iter().filter_map(|r| r["cost"].as_f64()).sum();
    assert!(spent > 0.0 && spent < 10.0, "{spent}");
    let counts = submissions(&batch_requests(&server, 0));
    assert_eq!(counts.len(), 6, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
}

#[test]
fn a_bad_batch_poll_is_refused_naming_the_key() {
    let job = JobDir::new();
    let server = fault_server(&job, &[]);
    batch_job(&job, &server, 2, false)
        .llm("batch_poll", "soon")
        .write(job.path());
    let finished = nightshift(&job, &["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(2);
    assert!(
        finished.stderr.contains("agent.llm.batch_poll"),
        "{}",
        finished.stderr
    );
    assert!(server.requests().is_empty(), "nothing was sent");
}

#[test]
fn batch_answers_fill_the_answer_cache_and_are_reused_by_batch_and_online_runs() {
    let job = JobDir::new();
    let server = fault_server(&job, &["--batch-polls", "1"]);
    let cache = job.path().join("answers.sqlite");
    let with_cache = |spec: Job| {
        spec.raw(
            "cache",
            &format!("path = {:?}", cache.display().to_string()),
        )
    };
    with_cache(batch_job(&job, &server, 6, false)).write(job.path());
    nightshift(&job, &["run", "job.toml", "--run-dir", "first", "-q"]).expect_code(0);
    let first = final_records(&job.path().join("first"));
    assert_eq!(submissions(&batch_requests(&server, 0)).len(), 6);

    // The same job again: every item answered from the cache, no batch sent.
    let before = server.requests().len();
    nightshift(&job, &["run", "job.toml", "--run-dir", "second", "-q"]).expect_code(0);
    let second = final_records(&job.path().join("second"));
    assert!(
        batch_requests(&server, before).is_empty(),
        "no item submitted again"
    );
    assert_eq!(second.len(), 6);
    for (old, new) in first.iter().zip(&second) {
        assert_eq!(new["cached"], true, "{new}");
        assert_eq!(new["cost"], 0.0, "{new}");
        assert_eq!(new["output"], old["output"], "the same answer");
        // What it would have cost in a batch: the half price the first run paid.
        assert!(
            (new["saved"].as_f64().unwrap_or(-1.0) - old["cost"].as_f64().unwrap_or(-2.0)).abs()
                < 1e-9,
            "{old} / {new}"
        );
    }

    // Online mode sends the very same requests: it finds them too.
    let before = server.requests().len();
    with_cache(priced_job(&job, &server, KEY_VAR, 6, false)).write(job.path());
    nightshift(&job, &["run", "job.toml", "--run-dir", "online", "-q"]).expect_code(0);
    let asked = server.requests().split_off(before);
    assert!(asked.is_empty(), "online mode asked again: {asked:?}");
    let online = final_records(&job.path().join("online"));
    assert!(online.iter().all(|r| r["cached"] == true), "{online:?}");
}
