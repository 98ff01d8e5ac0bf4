//! Memory with real allocations: a tree over agent.memory_limit is killed
//! while the others finish; a RAM ceiling that fits two agents holds; an agent
//! killed to make room is requeued and keeps what it saved. Every test here
//! allocates well under 2 GiB in all.

use std::time::{Duration, Instant};

use nightshift_tests::{events, json_array_ids, run_processes, Job, JobDir};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// Resident bytes of a process (from /proc/PID/statm).
fn rss(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn report(job: &JobDir) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(job.run_dir().join("report.json")).expect("report.json"),
    )
    .expect("report is JSON")
}

/// Agents that take 2 s an item; agent_02 holds 300 MiB meanwhile, in a
/// child of the agent's process (so only its tree's memory shows it).
fn over_limit_job(job: &JobDir, enforcement: &str) {
    Job::new("items.jsonl")
        .items_per_agent(2)
        .program([
            env!("CARGO_BIN_EXE_hog"),
            "--in-child",
            "--only",
            "agent_02",
            "--mib",
            "300",
            "--per-item",
            "2",
        ])
        .memory_limit("100MiB")
        .retries(0)
        .kill_grace("1s")
        .max_parallel(3)
        .sample_interval("100ms")
        .memory_enforcement(enforcement)
        .write(job.path());
}

fn check_over_limit(job: &JobDir) {
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(1);
    let killed: Vec<Value> = events(&job.run_dir())
        .into_iter()
        .filter(|e| e["event"] == "killed")
        .collect();
    assert_eq!(killed.len(), 1, "only the hog was killed: {killed:?}");
    assert_eq!(killed[0]["reason"], "memory");
    assert_eq!(killed[0]["agent"], "segment_01/orch_01/agent_02");
    let ids = json_array_ids(&job.run_dir().join("final.json"));
    assert_eq!(
        ids,
        vec!["item-001", "item-002", "item-005", "item-006"],
        "the others finished"
    );
    let report = report(job);
    let hog = report["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .find(|a| a["agent"] == "segment_01/orch_01/agent_02")
        .expect("the hog's attempt")
        .clone();
    assert_eq!(hog["reason"], "memory");
    assert!(report["memory"]["peak_total"].as_u64().unwrap_or(0) > 0);
    assert!(!report["memory"]["samples"]
        .as_array()
        .expect("samples")
        .is_empty());
    assert!(run_processes(&job.run_dir()).is_empty());
}

#[test]
fn sampling_kills_a_tree_over_its_limit_while_the_others_finish() {
    let job = JobDir::new();
    job.items(6);
    over_limit_job(&job, "sampling");
    check_over_limit(&job);
    let report = report(&job);
    assert!(
        report["memory"]["mode"]
            .as_str()
            .unwrap_or("")
            .starts_with("sampling"),
        "{}",
        report["memory"]["mode"]
    );
    let hog_peak = report["attempts"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|a| a["agent"] == "segment_01/orch_01/agent_02")
        })
        .and_then(|a| a["peak_rss"].as_u64())
        .unwrap_or(0);
    assert!(
        hog_peak > 100 * MIB,
        "the peak over the limit is reported: {hog_peak}"
    );
}

#[test]
fn cgroups_kill_a_tree_over_its_limit_where_available() {
    let job = JobDir::new();
    job.items(6);
    over_limit_job(&job, "auto");
    check_over_limit(&job);
    let mode = report(&job)["memory"]["mode"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    if mode.starts_with("sampling") {
        eprintln!("no memory cgroups on this machine, sampling was used: {mode}");
    } else {
        assert!(mode.contains("cgroup"), "{mode}");
    }
}

/// Samples the run's agents from outside: how many hold over `each` bytes.
fn watch_big_agents(
    job: &JobDir,
    mut child: std::process::Child,
    each: u64,
) -> (Option<i32>, Vec<usize>) {
    let run = job.run_dir();
    let mut counts = Vec::new();
    let started = Instant::now();
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "run took too long"
        );
        let big = run_processes(&run)
            .into_iter()
            .filter(|p| rss(*p) > each)
            .count();
        counts.push(big);
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, counts)
}

#[test]
fn a_ceiling_that_fits_two_agents_holds_and_the_run_completes() {
    let job = JobDir::new();
    let ids = job.items(12);
    Job::new("items.jsonl")
        .items_per_agent(2)
        .demo()
        .latency("400ms")
        .demo_memory("120MiB")
        .max_parallel(6)
        .ram_ceiling("300MiB")
        .sample_interval("100ms")
        .memory_enforcement("sampling")
        .write(job.path());
    let child = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run", "-q"]);
    let (code, counts) = watch_big_agents(&job, child, 100 * MIB);
    assert_eq!(code, Some(0));
    assert_eq!(json_array_ids(&job.run_dir().join("final.json")), ids);
    assert!(
        counts.contains(&2),
        "two agents did run together: {counts:?}"
    );
    // Never three at once for longer than a sample or two (100 ms each;
    // this watcher looks every 50 ms).
    let longest_over = counts
        .split(|c| *c <= 2)
        .map(<[usize]>::len)
        .max()
        .unwrap_or(0);
    assert!(
        longest_over <= 4,
        "more than two agents held memory for too long: {counts:?}"
    );
    // The report's peak is two agents', or — while the run still learns an
    // agent's size — a third one's for the one sample that has it killed.
    let peak = report(&job)["memory"]["peak_total"].as_u64().unwrap_or(0);
    assert!(
        peak > 200 * MIB && peak < 3 * 150 * MIB,
        "peak total {peak}"
    );
}

#[test]
fn an_agent_killed_to_make_room_is_requeued_and_keeps_its_records() {
    let job = JobDir::new();
    let ids = job.items(9);
    // Each agent holds 120 MiB, logs each call and skips what it saved. The
    // estimate is far too small, so three agents start and cross the ceiling.
    Job::new("items.jsonl")
        .items_per_agent(3)
        .program([
            env!("CARGO_BIN_EXE_hog"),
            "--mib",
            "120",
            "--per-item",
            "0.3",
            "--calls",
            "calls.log",
        ])
        .memory_estimate("1MiB")
        .retries(0)
        .kill_grace("1s")
        .max_parallel(3)
        .ram_ceiling("300MiB")
        .sample_interval("100ms")
        .memory_enforcement("sampling")
        .write(job.path());
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(0);
    assert_eq!(json_array_ids(&job.run_dir().join("final.json")), ids);
    let all = events(&job.run_dir());
    let evictions = all
        .iter()
        .filter(|e| e["event"] == "killed" && e["reason"] == "ceiling")
        .count();
    let requeues = all.iter().filter(|e| e["event"] == "requeued").count();
    assert!(
        evictions >= 1,
        "the ceiling was crossed and an agent made room"
    );
    assert_eq!(requeues, evictions);
    let calls = std::fs::read_to_string(job.path().join("calls.log")).expect("calls.log");
    let mut seen = std::collections::HashMap::new();
    for id in calls.lines() {
        *seen.entry(id).or_insert(0) += 1;
    }
    let redone = seen.values().filter(|n| **n > 1).count();
    assert!(
        redone <= evictions,
        "only the item in flight at each eviction is redone: {seen:?}"
    );
}
