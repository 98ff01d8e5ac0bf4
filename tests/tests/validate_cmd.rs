//! `nightshift validate`: a whole run directory, one file of a run checked
//! against the ids of its level, and a record file outside any run.

use nightshift_tests::{Job, JobDir};

fn finished_run() -> JobDir {
    let job = JobDir::new();
    job.items(8);
    Job::new("items.jsonl")
        .layout(2, 1, 2)
        .demo()
        .latency("0ms")
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    job
}

#[test]
fn a_tampered_final_output_is_caught_with_its_line() {
    let job = finished_run();
    let final_json = job.run_dir().join("final.json");
    job.nightshift(&["validate", "run/final.json"])
        .expect_code(0);
    let text = std::fs::read_to_string(&final_json).expect("final.json");
    // Replace the third record with a second copy of the first.
    let lines: Vec<&str> = text.lines().collect();
    let mut tampered: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    tampered[3] = lines[1].to_owned();
    std::fs::write(&final_json, tampered.join("\n")).expect("write");
    let finished = job.nightshift(&["validate", "run/final.json"]);
    finished.expect_code(1);
    assert!(
        finished
            .stderr
            .contains("final.json:4: duplicate record for id \"item-001\""),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("1 missing id(s): \"item-003\""),
        "{}",
        finished.stderr
    );
    job.nightshift(&["validate", "run"]).expect_code(1);
}

#[test]
fn merge_rebuilds_the_outputs_from_agent_files() {
    let job = finished_run();
    let final_json = job.run_dir().join("final.json");
    let original = std::fs::read(&final_json).expect("final.json");
    std::fs::remove_file(job.run_dir().join("segment_02.jsonl")).expect("remove");
    std::fs::write(&final_json, "garbage").expect("write");
    job.nightshift(&["merge", "run", "-q"]).expect_code(0);
    assert_eq!(std::fs::read(&final_json).expect("final.json"), original);
    job.nightshift(&["validate", "run"]).expect_code(0);
    job.nightshift(&["merge", "run", "--segment", "1", "-q"])
        .expect_code(0);
    job.nightshift(&["merge", "run", "--segment", "9"])
        .expect_code(2);
}

#[test]
fn an_agent_file_with_a_stranger_is_caught() {
    let job = finished_run();
    let agent_file = job.run_dir().join("segment_02/orch_01/agent_01.jsonl");
    let mut text = std::fs::read_to_string(&agent_file).expect("agent file");
    text.push_str("{\"id\": \"item-001\", \"output\": \"belongs to another agent\"}\n");
    std::fs::write(&agent_file, text).expect("write");
    let finished = job.nightshift(&["validate", "run/segment_02/orch_01/agent_01.jsonl"]);
    finished.expect_code(1);
    assert!(
        finished.stderr.contains(
            "agent_01.jsonl:3: record for id \"item-001\", which this file should not hold"
        ),
        "{}",
        finished.stderr
    );
}

#[test]
fn a_file_outside_a_run_is_checked_for_json_and_duplicates() {
    let job = JobDir::new();
    job.write("good.jsonl", "{\"key\": 1}\n{\"key\": 2}\n");
    job.nightshift(&["validate", "good.jsonl", "--id", "key"])
        .expect_code(0);
    job.write(
        "bad.jsonl",
        "{\"key\": 1}\n{\"key\": 1}\n{oops}\n{\"other\": 3}\n",
    );
    let finished = job.nightshift(&["validate", "bad.jsonl", "--id", "key"]);
    finished.expect_code(1);
    for expected in [
        "bad.jsonl:2: duplicate record for id 1",
        "bad.jsonl:3: invalid record: not valid JSON",
        "bad.jsonl:4: invalid record: no id field",
    ] {
        assert!(
            finished.stderr.contains(expected),
            "{expected}: {}",
            finished.stderr
        );
    }
}
