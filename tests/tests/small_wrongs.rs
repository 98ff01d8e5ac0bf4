//! Small wrongs a new user meets, each said clearly before anything starts:
//! a program that is not executable, a run directory that cannot be made, a
//! missing input file, and a `[layout] segments` that is honoured, not ignored.

use nightshift_tests::{Job, JobDir};

#[test]
fn an_agent_program_that_is_not_executable_says_so() {
    let job_dir = JobDir::new();
    job_dir.items(2);
    job_dir.write("agent.sh", "#!/bin/sh\n");
    Job::new("items.jsonl")
        .program(["./agent.sh"])
        .write(job_dir.path());
    let refused = job_dir.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("is not executable") && refused.stderr.contains("chmod +x"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains("was not found"),
        "{}",
        refused.stderr
    );
}

#[test]
fn a_run_directory_that_cannot_be_made_is_a_usage_error_said_once_before_anything() {
    let job_dir = JobDir::new();
    job_dir.items(2);
    Job::new("items.jsonl").demo().write(job_dir.path());
    // A plain file where a folder of the run directory's path should be.
    job_dir.write("blocker", "");
    let refused = job_dir.nightshift(&["run", "job.toml", "--run-dir", "blocker/run"]);
    refused.expect_code(2);
    assert!(
        !refused.stdout.contains("run directory:"),
        "not announced: {}",
        refused.stdout
    );
    assert_eq!(
        refused
            .stderr
            .matches("cannot use blocker/run as the run directory")
            .count(),
        1,
        "said once: {}",
        refused.stderr
    );
}

#[test]
fn a_missing_input_file_names_input_path_and_the_job_file() {
    let job_dir = JobDir::new();
    Job::new("nowhere.jsonl").demo().write(job_dir.path());
    let refused = job_dir.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("job.toml")
            && refused.stderr.contains("input.path")
            && refused.stderr.contains("nowhere.jsonl"),
        "{}",
        refused.stderr
    );
}

#[test]
fn segments_alone_are_honoured_and_more_segments_than_items_refused() {
    let job_dir = JobDir::new();
    job_dir.items(3);
    Job::new("items.jsonl")
        .demo()
        .raw("layout", "segments = 2")
        .write(job_dir.path());
    let plan = job_dir.nightshift(&["plan", "job.toml", "--json"]);
    plan.expect_code(0);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).expect("plan json");
    assert_eq!(
        plan["segments"].as_array().map(Vec::len),
        Some(2),
        "{plan:#}"
    );

    Job::new("items.jsonl")
        .demo()
        .raw("layout", "segments = 5")
        .write(job_dir.path());
    let refused = job_dir.nightshift(&["plan", "job.toml"]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("segments = 5") && refused.stderr.contains("only 3 item(s)"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        refused.stderr.matches("segments = 5").count(),
        1,
        "said once"
    );
}
