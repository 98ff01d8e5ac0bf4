//! The exec backend: the item on stdin, the result on stdout, no shell in
//! between, and a failing item command costing only its own item.

use nightshift_tests::{json_array_ids, Job, JobDir};
use serde_json::Value;

fn job_with_command(command: &[&str]) -> Job {
    Job::new("items.jsonl")
        .layout(2, 1, 2)
        .exec(command)
        .item_retries(1)
        .item_timeout("20s")
        .retry_backoff("100ms")
        .max_parallel(2)
}

fn final_records(job: &JobDir) -> Vec<Value> {
    let text = std::fs::read_to_string(job.run_dir().join("final.json")).expect("final.json");
    serde_json::from_str::<Value>(&text)
        .expect("final.json is JSON")
        .as_array()
        .expect("an array")
        .clone()
}

#[test]
fn a_shell_command_turns_each_item_into_a_record() {
    let job = JobDir::new();
    let ids = job.items(9);
    // Upper-cases the item's text: proves the item arrived whole on stdin; the
    // output is plain text, so the agent wraps it with the id.
    job_with_command(&["sh", "-c", "tr a-z A-Z | tr -d '{}\"'"]).write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    let records = final_records(&job);
    assert_eq!(records.len(), ids.len());
    for (record, id) in records.iter().zip(&ids) {
        assert_eq!(record["id"], id.as_str());
        let output = record["output"].as_str().expect("text output is wrapped");
        assert!(
            output.contains(&format!("SAY SOMETHING ABOUT {}", id.to_uppercase())),
            "{output}"
        );
    }
}

#[test]
fn the_item_never_reaches_a_command_line_or_a_shell() {
    let job = JobDir::new();
    job.write(
        "items.jsonl",
        "{\"id\": 1, \"prompt\": \"$(touch pwned) `touch pwned2`; touch pwned3\"}\n",
    );
    job_with_command(&["cat"]).write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    for name in ["pwned", "pwned2", "pwned3"] {
        assert!(
            !job.path().join(name).exists(),
            "{name} was created: the item was run by a shell"
        );
    }
    let records = final_records(&job);
    assert_eq!(
        records[0]["prompt"],
        "$(touch pwned) `touch pwned2`; touch pwned3"
    );
}

#[test]
fn a_failing_item_command_loses_that_item_only() {
    let job = JobDir::new();
    let ids = job.items(8);
    job_with_command(&[
        "sh",
        "-c",
        "if grep -q item-004; then echo boom >&2; exit 3; fi; echo done",
    ])
    .write(job.path());
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(1);
    assert!(
        finished.stdout.contains("missing ids: item-004"),
        "{}",
        finished.stdout
    );
    assert!(
        finished
            .stdout
            .contains("finished: 7 of 8 items (88%), 1 failed — nightshift failures"),
        "a run that went through every item is headlined finished: {}",
        finished.stdout
    );
    let expected: Vec<String> = ids.into_iter().filter(|id| id != "item-004").collect();
    assert_eq!(json_array_ids(&job.run_dir().join("final.json")), expected);
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(job.run_dir().join("report.json")).expect("report"),
    )
    .expect("report is JSON");
    assert_eq!(report["state"], "failed");
    assert_eq!(report["missing_ids"], serde_json::json!(["item-004"]));
    let failure = &report["failures"][0];
    assert_eq!(failure["id"], "item-004", "{report}");
    assert_eq!(failure["agent"], "segment_01/orch_01/agent_02");
    assert!(
        failure["reason"]
            .as_str()
            .is_some_and(|r| r.contains("exited with code 3")),
        "the item's own reason: {failure}"
    );
    assert_eq!(report["failures"].as_array().map(Vec::len), Some(1));
    // The agent says why, in its log and failures file.
    let orch = job.run_dir().join("segment_01/orch_01");
    let failures =
        std::fs::read_to_string(orch.join("agent_02.failures.jsonl")).expect("failures file");
    assert!(failures.contains("item-004"), "{failures}");
    let log = std::fs::read_to_string(orch.join("agent_02.log")).expect("agent log");
    assert!(
        log.contains("boom"),
        "the command's stderr reaches the agent log: {log}"
    );
}

#[test]
fn a_missing_command_is_refused_before_anything_starts() {
    let job = JobDir::new();
    job.items(2);
    job_with_command(&["no-such-generator-xyz"]).write(job.path());
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(2);
    assert!(
        finished.stderr.contains("no-such-generator-xyz"),
        "{}",
        finished.stderr
    );
    assert!(!job.run_dir().exists());
}
