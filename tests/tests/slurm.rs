//! executor = "slurm" on a real Slurm cluster (scripts/slurm_up.sh starts a
//! single-node one): the demo job gives the same final.json as the local
//! executor; OUT_OF_MEMORY and timeouts end attempts as they would locally;
//! scancel leaves no process of a job's tree behind; a supervisor killed
//! mid-run is resumed and adopts its running jobs.
//!
//! Without Slurm these tests say so and pass; `.ci/run` starts Slurm and sets
//! NIGHTSHIFT_SLURM_TESTS=1, which turns a missing Slurm into a failure.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use nightshift_tests::{
    alive, events, pids_in, slurm_ready, wait_until, wait_with_deadline, CancelJobs, Job, JobDir,
};
use serde_json::Value;

fn of_kind<'e>(all: &'e [Value], kind: &str) -> Vec<&'e Value> {
    all.iter().filter(|e| e["event"] == kind).collect()
}

/// The demo job, on the executor `executor` sets ([`locally`] or [`under_slurm`]).
/// Demo failures depend on the agent's attempt number: with `fail_rate` > 0,
/// only runs that launch each agent the same number of times give the same
/// records.
fn demo_job(job: &JobDir, items: usize, latency: &str, fail_rate: f64, executor: fn(Job) -> Job) {
    job.items(items);
    let demo = Job::new("items.jsonl")
        .layout(2, 2, 2)
        .demo()
        .timeout("2m")
        .kill_grace("1s")
        .retries(3)
        .retry_backoff("100ms")
        .latency(latency)
        .fail_rate(fail_rate)
        .max_parallel(8);
    executor(demo).write(job.path());
}

/// One exec-backend agent running `command` under Slurm; the test adds its
/// limits.
fn one_exec_agent(command: &[&str]) -> Job {
    under_slurm(Job::new("items.jsonl").layout(1, 1, 1).exec(command))
}

const FAIL_RATE: f64 = 0.1;

/// The local executor: the default, so nothing to add.
fn locally(job: Job) -> Job {
    job
}

fn under_slurm(job: Job) -> Job {
    job.executor("kind", "slurm")
        .executor("poll_interval", "200ms")
}

fn in_an_unknown_partition(job: Job) -> Job {
    job.executor("kind", "slurm")
        .executor("partition", "no-such-partition")
}

#[test]
fn the_demo_job_gives_the_same_final_json_under_slurm_as_locally() {
    if !slurm_ready() {
        return;
    }
    let local = JobDir::new();
    demo_job(&local, 60, "10ms", FAIL_RATE, locally);
    local
        .nightshift(&["run", "job.toml", "--run-dir", "run"])
        .expect_code(0);

    let on_slurm = JobDir::new();
    demo_job(&on_slurm, 60, "10ms", FAIL_RATE, under_slurm);
    let run = on_slurm.run_dir();
    let _cancel = CancelJobs(&run);
    let finished = on_slurm.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(0);
    assert!(
        finished.stdout.contains("executor: Slurm"),
        "{}",
        finished.stdout
    );

    let local_final = std::fs::read(local.run_dir().join("final.json")).expect("local final.json");
    let slurm_final = std::fs::read(run.join("final.json")).expect("slurm final.json");
    assert!(
        local_final == slurm_final,
        "final.json differs between executors"
    );

    let all = events(&run);
    let launched = of_kind(&all, "launched");
    assert_eq!(launched.len(), 8, "one job per agent");
    for event in &launched {
        assert!(event["job_id"].as_u64().is_some(), "{event}");
        assert!(event.get("pid").is_none(), "no local process: {event}");
    }
    for exited in of_kind(&all, "exited") {
        assert_eq!(exited["state"], "COMPLETED", "{exited}");
    }
    // Each agent's job ran its batch script from the run directory.
    assert!(run.join("segment_01/orch_01/agent_01.sbatch").is_file());
}

#[test]
fn an_agent_over_its_memory_limit_ends_out_of_memory_and_is_retried() {
    if !slurm_ready() {
        return;
    }
    let job = JobDir::new();
    job.items(3);
    // The first attempt allocates 400 MiB under a 100 MiB --mem and, once
    // that is killed, ends its agent (so its items are still untried, not
    // failed for good); the retry does its items plainly.
    one_exec_agent(&[
        "sh",
        "-c",
        "if [ \"$NIGHTSHIFT_ATTEMPT\" = 1 ]; then python3 -c 'import time; x = bytearray(400 << 20); time.sleep(30)'; kill -KILL $PPID; fi; read -r line; printf '%s' \"$line\"",
    ])
    .memory_limit("100MiB")
    .retries(1)
    .retry_backoff("100ms")
    .item_retries(0)
    .write(job.path());
    let run = job.run_dir();
    let _cancel = CancelJobs(&run);
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(0);
    let all = events(&run);
    let launched = of_kind(&all, "launched");
    assert_eq!(launched.len(), 2, "the attempt and its retry");
    let batch = std::fs::read_to_string(run.join("segment_01/orch_01/agent_01.sbatch"))
        .expect("batch script");
    assert!(batch.contains("exec "), "{batch}");
    let exited = of_kind(&all, "exited");
    assert_eq!(exited[0]["state"], "OUT_OF_MEMORY", "{:?}", exited);
    let killed = of_kind(&all, "killed");
    assert!(
        killed
            .iter()
            .any(|k| k["reason"] == "memory" && k["by"] == "slurm"),
        "{killed:?}"
    );
    assert_eq!(exited[1]["state"], "COMPLETED");
    let report: Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).expect("report.json"))
            .expect("report.json parses");
    let outcomes: Vec<&str> = report["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["outcome"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(outcomes, ["killed", "succeeded"], "{report}");
    let first = &report["attempts"][0];
    assert!(
        first["job_id"].is_u64() && first["pid"].is_null(),
        "{first}"
    );
    assert_eq!(first["reason"], "memory", "{first}");
}

#[test]
fn a_timeout_cancels_the_job_and_scancel_leaves_no_process_of_its_tree() {
    if !slurm_ready() {
        return;
    }
    let job = JobDir::new();
    job.items(2);
    // The item command ignores TERM, leaves a child that ignores it too in a
    // session of its own, and hangs: only the job's cgroup can end all of it.
    one_exec_agent(&[
        env!("CARGO_BIN_EXE_term_ignorer"),
        "--child",
        "--setsid",
        "--pids",
        "pids",
    ])
    .timeout("3s")
    .kill_grace("500ms")
    .retries(0)
    .write(job.path());
    let run = job.run_dir();
    let _cancel = CancelJobs(&run);
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(1);
    let all = events(&run);
    let killed = of_kind(&all, "killed");
    assert_eq!(killed.len(), 1, "{killed:?}");
    assert_eq!(killed[0]["reason"], "timeout");
    assert!(
        killed[0].get("by").is_none(),
        "nightshift's clock, not Slurm's"
    );
    let exited = of_kind(&all, "exited");
    assert_eq!(exited.len(), 1);
    assert_ne!(exited[0]["state"], "COMPLETED", "{}", exited[0]);
    // Well before Slurm's own one-minute limit.
    let seconds = exited[0]["seconds"].as_f64().unwrap_or(f64::MAX);
    assert!(seconds < 50.0, "ended after {seconds} s");

    let pids = pids_in(&job.path().join("pids"));
    assert!(
        pids.len() >= 2,
        "the item command and its grandchild: {pids:?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || pids.iter().all(|p| !alive(*p))),
        "still alive after the job ended: {:?}",
        pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
    let job_id = exited[0]["job_id"].as_u64().expect("job id").to_string();
    let queue = Command::new("squeue")
        .args(["--noheader", "--format=%T", "--jobs", &job_id])
        .output()
        .expect("squeue runs");
    let states = String::from_utf8_lossy(&queue.stdout);
    assert!(
        !states.contains("RUNNING") && !states.contains("PENDING"),
        "{states}"
    );
}

#[test]
fn a_supervisor_killed_mid_run_is_resumed_and_adopts_its_running_jobs() {
    if !slurm_ready() {
        return;
    }
    let local = JobDir::new();
    demo_job(&local, 40, "300ms", FAIL_RATE, locally);
    local
        .nightshift(&["run", "job.toml", "--run-dir", "run"])
        .expect_code(0);

    let job = JobDir::new();
    demo_job(&job, 40, "300ms", FAIL_RATE, under_slurm);
    let run = job.run_dir();
    let _cancel = CancelJobs(&run);
    let child = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run"]);
    let supervisor = child.id();
    // Killed once its first jobs run and have saved something.
    let running = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(run.join("segment_01/orch_01/agent_01.jsonl"))
            .is_ok_and(|text| text.lines().count() >= 2)
    });
    assert!(running, "the first agent never saved anything");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(supervisor).expect("pid fits")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("the supervisor can be killed");
    let killed = wait_with_deadline(child, Duration::from_secs(10));
    assert_eq!(killed.code, None, "ended by SIGKILL");
    let before: HashSet<u64> = of_kind(&events(&run), "launched")
        .iter()
        .filter_map(|e| e["job_id"].as_u64())
        .collect();

    let resumed = job.nightshift(&["resume", &run.display().to_string()]);
    resumed.expect_code(0);
    let all = events(&run);
    let adopted = of_kind(&all, "adopted");
    assert!(!adopted.is_empty(), "no job adopted:\n{}", resumed.stdout);
    for event in &adopted {
        let id = event["job_id"].as_u64().expect("job id");
        assert!(
            before.contains(&id),
            "adopted a job it never submitted: {event}"
        );
        // Never a second writer: no launch of that agent while its job lived.
        let agent = event["agent"].as_str().expect("agent");
        let after_adoption: Vec<&Value> = all
            .iter()
            .skip_while(|e| *e != *event)
            .filter(|e| e["agent"] == agent)
            .collect();
        let ended = after_adoption
            .iter()
            .position(|e| e["event"] == "exited" && e["job_id"] == id)
            .expect("the adopted job's end is journaled");
        assert!(
            !after_adoption[..ended]
                .iter()
                .any(|e| e["event"] == "launched"),
            "{agent} launched again while its job ran"
        );
    }
    let local_final = std::fs::read(local.run_dir().join("final.json")).expect("local final.json");
    let resumed_final = std::fs::read(run.join("final.json")).expect("final.json");
    assert!(
        local_final == resumed_final,
        "final.json differs after the resume"
    );
}

#[test]
fn without_slurms_commands_a_slurm_job_is_a_usage_error() {
    let job = JobDir::new();
    demo_job(&job, 4, "1ms", FAIL_RATE, under_slurm);
    let finished = wait_with_deadline(
        Command::new(nightshift_tests::binary("nightshift"))
            .args(["run", "job.toml"])
            .current_dir(job.path())
            .env("PATH", "/nonexistent")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("nightshift starts"),
        Duration::from_secs(30),
    );
    finished.expect_code(2);
    assert!(
        finished.stderr.contains("sbatch") && finished.stderr.contains("job.toml"),
        "{}",
        finished.stderr
    );
    assert!(!job.run_dir().join("events.jsonl").exists());
}

#[test]
fn ctrl_c_cancels_every_job_and_the_run_resumes_to_the_same_output() {
    if !slurm_ready() {
        return;
    }
    let local = JobDir::new();
    demo_job(&local, 40, "500ms", 0.0, locally);
    local
        .nightshift(&["run", "job.toml", "--run-dir", "run"])
        .expect_code(0);

    let job = JobDir::new();
    demo_job(&job, 40, "500ms", 0.0, under_slurm);
    let run = job.run_dir();
    let _cancel = CancelJobs(&run);
    let child = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run"]);
    let running = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(run.join("segment_01/orch_01/agent_01.jsonl"))
            .is_ok_and(|text| !text.is_empty())
    });
    assert!(running, "the first agent never saved anything");
    // `status` from another terminal names each running agent's job.
    let status = job.nightshift(&["status", "run", "--json"]);
    status.expect_code(0);
    let status: Value = serde_json::from_str(&status.stdout).expect("status --json");
    let running_jobs: Vec<&Value> = status["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter(|a| a["state"] == "running")
        .collect();
    assert!(!running_jobs.is_empty(), "{status}");
    assert!(
        running_jobs.iter().all(|a| a["job_id"].is_u64()),
        "{status}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits")),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("the supervisor takes SIGINT");
    let stopped = wait_with_deadline(child, Duration::from_secs(60));
    assert_eq!(stopped.code, Some(130), "{}", stopped.stdout);
    let submitted: Vec<String> = of_kind(&events(&run), "launched")
        .iter()
        .filter_map(|e| e["job_id"].as_u64())
        .map(|id| id.to_string())
        .collect();
    let queue = Command::new("squeue")
        .args([
            "--noheader",
            "--format=%i %T",
            "--jobs",
            &submitted.join(","),
        ])
        .output()
        .expect("squeue runs");
    let queue = String::from_utf8_lossy(&queue.stdout);
    assert!(
        !queue.contains("RUNNING") && !queue.contains("PENDING") && !queue.contains("COMPLETING"),
        "jobs outlived the supervisor:\n{queue}"
    );
    let status = job.nightshift(&["status", "run"]);
    assert!(status.stdout.contains("interrupted"), "{}", status.stdout);

    job.nightshift(&["resume", "run"]).expect_code(0);
    let local_final = std::fs::read(local.run_dir().join("final.json")).expect("local final.json");
    let resumed_final = std::fs::read(run.join("final.json")).expect("final.json");
    assert!(
        local_final == resumed_final,
        "final.json differs after the resume"
    );
}

#[test]
fn a_partition_slurm_does_not_know_is_a_usage_error_before_anything_starts() {
    if !slurm_ready() {
        return;
    }
    let job = JobDir::new();
    demo_job(&job, 4, "1ms", FAIL_RATE, in_an_unknown_partition);
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(2);
    assert!(
        finished.stderr.contains("no-such-partition") || finished.stderr.contains("partition"),
        "{}",
        finished.stderr
    );
    assert!(!job.run_dir().join("events.jsonl").exists());
}

#[test]
fn a_job_whose_agent_file_stops_growing_is_cancelled_as_stalled() {
    if !slurm_ready() {
        return;
    }
    let job = JobDir::new();
    job.items(6);
    // Two items come quickly, then the third hangs: only the agent file's
    // growth (polled, as writes from other nodes may not reach inotify) tells.
    one_exec_agent(&[env!("CARGO_BIN_EXE_staller"), "--only", "item-003"])
        .stall_timeout("3s")
        .kill_grace("500ms")
        .retries(0)
        .sample_interval("200ms")
        .write(job.path());
    let run = job.run_dir();
    let _cancel = CancelJobs(&run);
    job.nightshift(&["run", "job.toml", "--run-dir", "run"])
        .expect_code(1);
    let all = events(&run);
    let killed = of_kind(&all, "killed");
    assert_eq!(killed.len(), 1, "{killed:?}");
    assert_eq!(killed[0]["reason"], "stall");
    let saved = nightshift_tests::jsonl_ids(&run.join("segment_01/orch_01/agent_01.jsonl"));
    assert_eq!(saved, ["item-001", "item-002"]);
}

#[test]
fn a_fresh_run_cancels_jobs_left_by_an_earlier_run_at_the_same_path() {
    if !slurm_ready() {
        return;
    }
    let local = JobDir::new();
    demo_job(&local, 40, "300ms", 0.0, locally);
    local
        .nightshift(&["run", "job.toml", "--run-dir", "run"])
        .expect_code(0);

    let job = JobDir::new();
    demo_job(&job, 40, "300ms", 0.0, under_slurm);
    let run = job.run_dir();
    let earlier = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run"]);
    let running = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(run.join("segment_01/orch_01/agent_01.jsonl"))
            .is_ok_and(|text| !text.is_empty())
    });
    assert!(running, "the first agent never saved anything");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(earlier.id()).expect("pid fits")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("the supervisor can be killed");
    wait_with_deadline(earlier, Duration::from_secs(10));
    let left: Vec<String> = of_kind(&events(&run), "launched")
        .iter()
        .filter_map(|e| e["job_id"].as_u64())
        .map(|id| id.to_string())
        .collect();
    // The same path, emptied: the earlier run's jobs must not write into it.
    let _cancel_left = CancelJobsById(left.clone());
    std::fs::remove_dir_all(&run).expect("remove the run directory");
    let _cancel = CancelJobs(&run);
    job.nightshift(&["run", "job.toml", "--run-dir", "run"])
        .expect_code(0);
    for id in &left {
        let shown = Command::new("scontrol")
            .args(["show", "job", "--oneliner", id])
            .output()
            .expect("scontrol runs");
        let shown = String::from_utf8_lossy(&shown.stdout);
        // Cancelled, not left to finish writing into files that are gone. A
        // job still pending when its folder went fails to launch at once
        // (its batch script is gone): it never ran either.
        let never_ran =
            shown.contains("JobState=FAILED") && shown.contains("Reason=JobLaunchFailure");
        assert!(
            shown.contains("JobState=CANCELLED") || never_ran,
            "job {id} of the earlier run was not cancelled: {shown}"
        );
    }
    let local_final = std::fs::read(local.run_dir().join("final.json")).expect("local final.json");
    let fresh_final = std::fs::read(run.join("final.json")).expect("final.json");
    assert!(local_final == fresh_final, "final.json differs");
}

/// Cancels the given jobs when dropped (the run that named them is gone).
struct CancelJobsById(Vec<String>);

impl Drop for CancelJobsById {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("scancel").args(&self.0).status();
        }
    }
}
