//! `nightshift resume`: a run goes on from its directory alone, never redoes
//! saved items, ends a dead supervisor's agents first, and says when it is
//! already finished. Halt policies stop a run that stays resumable.

use std::time::Duration;

use nightshift_tests::litellm::files_under;
use nightshift_tests::{
    events, json_array_ids, launched_pids, wait_until, wait_with_deadline, Job, JobDir,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Each call appends the item's id to calls.log, so the test counts calls.
fn counting_job(job: &JobDir, latency: &str) {
    let command = format!(
        "read -r line; echo \"$line\" >> calls.log; sleep {latency}; printf '%s' \"$line\""
    );
    Job::new("items.jsonl")
        .layout(2, 1, 2)
        .exec(["sh", "-c", &command])
        .kill_grace("1s")
        .max_parallel(2)
        .write(job.path());
}

fn ids_in_calls(job: &JobDir) -> Vec<String> {
    std::fs::read_to_string(job.path().join("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect()
}

fn saved_ids(run: &std::path::Path) -> Vec<String> {
    let mut saved = Vec::new();
    for entry in files_under(run) {
        if entry.extension().is_some_and(|e| e == "jsonl")
            && entry
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("agent_"))
            && !entry.to_string_lossy().ends_with("failures.jsonl")
        {
            saved.extend(nightshift_tests::jsonl_ids(&entry));
        }
    }
    saved
}

#[test]
fn a_resumed_run_does_not_redo_saved_items() {
    let job = JobDir::new();
    let ids = job.items(12);
    counting_job(&job, "0.3");
    let child = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run"]);
    let run = job.run_dir();
    assert!(
        wait_until(Duration::from_secs(30), || saved_ids(&run).len() >= 3),
        "some items saved"
    );
    kill(
        Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        Signal::SIGINT,
    )
    .expect("SIGINT");
    wait_with_deadline(child, Duration::from_secs(30)).expect_code(130);
    let saved_before = saved_ids(&run);
    assert!(!saved_before.is_empty() && saved_before.len() < ids.len());
    std::fs::remove_file(job.path().join("calls.log")).expect("reset the call log");

    let resumed = job.nightshift(&["resume", "run"]);
    resumed.expect_code(0);
    assert!(resumed.stdout.contains("resuming:"), "{}", resumed.stdout);
    let called_after = ids_in_calls(&job);
    for id in &saved_before {
        assert!(
            !called_after.contains(id),
            "{id} was saved before, yet generated again"
        );
    }
    assert_eq!(
        called_after.len() + saved_before.len(),
        ids.len(),
        "every other item exactly once"
    );
    assert_eq!(json_array_ids(&run.join("final.json")), ids);

    job.nightshift(&["resume", "run"])
        .expect_saying(0, "already finished");
}

#[test]
fn resume_ends_the_agents_of_a_dead_supervisor_first() {
    let job = JobDir::new();
    let ids = job.items(8);
    counting_job(&job, "0.4");
    let child = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run"]);
    let run = job.run_dir();
    assert!(wait_until(Duration::from_secs(30), || launched_pids(&run)
        .len()
        >= 2));
    let agents = launched_pids(&run);
    let supervisor = i32::try_from(child.id()).expect("pid");
    kill(Pid::from_raw(supervisor), Signal::SIGKILL).expect("SIGKILL the supervisor");
    let _ = wait_with_deadline(child, Duration::from_secs(10));
    assert!(
        agents.iter().any(|p| nightshift_tests::alive(*p)),
        "its agents live on"
    );

    job.write("job.toml", "# edited after the run started\n");
    let resumed = job.nightshift(&["resume", "run"]);
    resumed.expect_code(0);
    assert!(
        resumed.stdout.contains("leftover process"),
        "{}",
        resumed.stdout
    );
    assert!(
        resumed
            .stdout
            .contains("has changed since this run started"),
        "{}",
        resumed.stdout
    );
    for pid in agents {
        assert!(
            !nightshift_tests::alive(pid),
            "leftover agent {pid} was ended"
        );
    }
    assert_eq!(json_array_ids(&run.join("final.json")), ids);
    let resumed_event = events(&run)
        .into_iter()
        .find(|e| e["event"] == "resumed")
        .expect("resumed event");
    assert!(
        resumed_event["leftovers_ended"].as_u64().unwrap_or(0) >= 2,
        "{resumed_event}"
    );
}

#[test]
fn only_one_supervisor_works_on_a_run() {
    let job = JobDir::new();
    job.items(4);
    counting_job(&job, "1");
    let child = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run"]);
    assert!(wait_until(Duration::from_secs(30), || !launched_pids(
        &job.run_dir()
    )
    .is_empty()));
    let second = job.nightshift(&["resume", "run"]);
    second.expect_code(2);
    assert!(
        second.stderr.contains("another supervisor"),
        "{}",
        second.stderr
    );
    wait_with_deadline(child, Duration::from_secs(60)).expect_code(0);
}

/// Fails every item while the file `broken` exists.
fn flaky_job(job: &JobDir) {
    Job::new("items.jsonl")
        .items_per_agent(1)
        .exec([
            "sh",
            "-c",
            "if [ -e broken ]; then exit 1; fi; sleep 0.2; cat",
        ])
        .item_retries(0)
        .retries(0)
        .kill_grace("1s")
        .max_parallel(1)
        .write(job.path());
}

#[test]
fn halt_soon_stops_launching_and_the_run_resumes_to_completion() {
    let job = JobDir::new();
    let ids = job.items(10);
    flaky_job(&job);
    job.write("broken", "");
    let halted = job.nightshift(&[
        "run",
        "job.toml",
        "--run-dir",
        "run",
        "--halt",
        "soon,fail=2",
    ]);
    halted.expect_code(1);
    assert!(
        halted.stdout.contains("halting (--halt soon,fail=2)"),
        "{}",
        halted.stdout
    );
    assert!(
        halted.stdout.contains("resumable: nightshift resume"),
        "{}",
        halted.stdout
    );
    let run = job.run_dir();
    let launched: std::collections::HashSet<String> = events(&run)
        .iter()
        .filter(|e| e["event"] == "launched")
        .filter_map(|e| e["agent"].as_str().map(str::to_owned))
        .collect();
    assert!(
        launched.len() < ids.len(),
        "launching stopped early: {launched:?}"
    );
    let report = std::fs::read_to_string(run.join("report.json")).expect("report.json");
    assert!(report.contains("\"state\": \"halted\""), "{report}");

    std::fs::remove_file(job.path().join("broken")).expect("fix the generator");
    // The items that failed every attempt are tried again only on request.
    job.nightshift(&["resume", "run", "--retry-failed", "-q"])
        .expect_code(0);
    assert_eq!(json_array_ids(&run.join("final.json")), ids);
}

#[test]
fn halt_now_kills_the_running_agents() {
    let job = JobDir::new();
    job.items(6);
    Job::new("items.jsonl")
        .items_per_agent(1)
        .exec([
            "sh",
            "-c",
            "read -r line; case \"$line\" in *item-001*) exit 1;; esac; sleep 30; printf '%s' \"$line\"",
        ])
        .item_retries(0)
        .retries(0)
        .kill_grace("500ms")
        .max_parallel(3)
        .write(job.path());
    let started = std::time::Instant::now();
    let halted = job.nightshift(&[
        "run",
        "job.toml",
        "--run-dir",
        "run",
        "--halt",
        "now,fail=1",
    ]);
    halted.expect_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "running agents were not waited for"
    );
    let all = events(&job.run_dir());
    assert!(all.iter().any(|e| e["event"] == "halted"));
    let shutdown_kills = all
        .iter()
        .filter(|e| e["event"] == "killed" && e["reason"] == "shutdown")
        .count();
    assert_eq!(shutdown_kills, 2, "the two sleeping agents were killed");
}

#[test]
fn a_failed_agent_is_retried_on_its_remaining_items() {
    let job = JobDir::new();
    let ids = job.items(4);
    // The first launch of each agent exits (code 3) after saving one item.
    Job::new("items.jsonl")
        .items_per_agent(2)
        .program([
            env!("CARGO_BIN_EXE_crasher"),
            "--on-attempt",
            "1",
            "--after",
            "1",
            "--code",
            "3",
            "--calls",
            "calls.log",
        ])
        .retries(1)
        .retry_backoff("50ms")
        .write(job.path());
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(0);
    assert!(
        finished.stderr.contains("retry 1 of 1"),
        "{}",
        finished.stderr
    );
    assert_eq!(json_array_ids(&job.run_dir().join("final.json")), ids);
    let calls = std::fs::read_to_string(job.path().join("calls.log")).expect("calls.log");
    assert_eq!(calls.lines().count(), 4, "no item generated twice: {calls}");
}

#[test]
fn resume_keeps_merges_whose_inputs_are_unchanged() {
    let job = JobDir::new();
    let ids = job.items(8);
    counting_job(&job, "0");
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    let run = job.run_dir();
    let modified = |name: &str| {
        std::fs::metadata(run.join(name))
            .and_then(|m| m.modified())
            .expect("mtime")
    };
    let (first, second) = (modified("segment_01.jsonl"), modified("segment_02.jsonl"));
    // Segment 2's agent file changes (a torn line an agent would cut off);
    // final.json goes missing.
    let agent_file = run.join("segment_02/orch_01/agent_01.jsonl");
    let mut text = std::fs::read_to_string(&agent_file).expect("agent file");
    text.push_str("{\"id\": \"item-0");
    std::fs::write(&agent_file, text).expect("tear");
    std::fs::remove_file(run.join("final.json")).expect("remove final.json");

    let resumed = job.nightshift(&["resume", "run"]);
    resumed.expect_code(0);
    assert!(
        resumed.stdout.contains("segment 1/2: already complete"),
        "{}",
        resumed.stdout
    );
    assert_eq!(
        modified("segment_01.jsonl"),
        first,
        "segment 1 was not merged again"
    );
    assert_ne!(
        modified("segment_02.jsonl"),
        second,
        "segment 2's input changed: merged again"
    );
    assert_eq!(json_array_ids(&run.join("final.json")), ids);
    assert!(
        ids_in_calls(&job).len() == ids.len(),
        "nothing was generated again"
    );
}
