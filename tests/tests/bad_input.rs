//! Bad job files and bad inputs: a clear message naming file, line and key,
//! exit code 2, and nothing started.

use nightshift_tests::{Job, JobDir};

fn refused(job_text: &str) -> String {
    let job = JobDir::new();
    job.items(3);
    job.write("job.toml", job_text);
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(2);
    assert!(!job.run_dir().exists(), "nothing was created");
    finished.stderr
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let stderr = refused(
        "[input]\npath = \"items.jsonl\"\n\n[agent]\nbackend = \"demo\"\ntimout = \"5m\"\n",
    );
    assert!(
        stderr.contains("job.toml:6:1: key `agent.timout`: unknown field `timout`"),
        "{stderr}"
    );
}

#[test]
fn a_wrong_type_is_named_with_its_line() {
    let stderr = refused("[input]\npath = \"items.jsonl\"\n[agent]\nbackend = \"demo\"\n[limits]\nmax_parallel = \"lots\"\n");
    assert!(
        stderr.contains("job.toml:6:16: key `limits.max_parallel`"),
        "{stderr}"
    );
}

#[test]
fn a_bad_duration_is_named_with_its_line() {
    let stderr = refused(
        "[input]\npath = \"items.jsonl\"\n[agent]\nbackend = \"demo\"\ntimeout = \"soon\"\n",
    );
    assert!(
        stderr.contains("job.toml:5:11: key `agent.timeout`"),
        "{stderr}"
    );
    assert!(stderr.contains("\"soon\""), "{stderr}");
}

#[test]
fn a_bad_size_and_a_bad_share_are_named() {
    let stderr = refused("[input]\npath = \"items.jsonl\"\n[agent]\nbackend = \"demo\"\nmemory_limit = \"2 giraffes\"\n");
    assert!(stderr.contains("key `agent.memory_limit`"), "{stderr}");
    let stderr = refused("[input]\npath = \"items.jsonl\"\n[agent]\nbackend = \"demo\"\n[agent.demo]\nfail_rate = 1.5\n");
    assert!(
        stderr.contains("job.toml:6:13: key `agent.demo.fail_rate`"),
        "{stderr}"
    );
}

#[test]
fn a_missing_input_path_is_refused() {
    let stderr = refused("[agent]\nbackend = \"demo\"\n");
    assert!(stderr.contains("missing field `input`"), "{stderr}");
}

#[test]
fn duplicate_and_missing_ids_are_listed_with_file_and_line() {
    let job = JobDir::new();
    job.write(
        "items.jsonl",
        "{\"id\": \"a\"}\n{\"id\": \"b\"}\n{\"text\": \"no id\"}\n{\"id\": \"a\"}\n",
    );
    Job::new("items.jsonl").demo().write(job.path());
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(2);
    assert!(
        finished.stderr.contains("items.jsonl:3: no `id` field"),
        "{}",
        finished.stderr
    );
    assert!(
        finished
            .stderr
            .contains("items.jsonl:4: duplicate id \"a\" (first at line 1)"),
        "{}",
        finished.stderr
    );
    assert!(!job.run_dir().exists());
}

#[test]
fn plain_lines_and_json_arrays_are_inputs_too() {
    let job = JobDir::new();
    job.write("items.txt", "first prompt\n\nthird prompt\n");
    Job::new("items.txt")
        .demo()
        .latency("0ms")
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    assert_eq!(
        nightshift_tests::json_array_ids(&job.run_dir().join("final.json")),
        vec!["1", "3"]
    );

    let job = JobDir::new();
    job.write("items.json", "[\n  {\"key\": 10},\n  {\"key\": 20}\n]\n");
    Job::new("items.json")
        .input("id", "key")
        .demo()
        .latency("0ms")
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    let text = std::fs::read_to_string(job.run_dir().join("final.json")).expect("final.json");
    assert!(
        text.contains("\"key\":10") && text.contains("\"key\":20"),
        "{text}"
    );
}
