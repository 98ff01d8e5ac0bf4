//! Failures by item: every failed item has one reason a person understands,
//! listed by `nightshift failures`, counted by reason in `status`, kept in
//! report.json; and `status` exits with what the run ended with.

use serde_json::Value;

use nightshift_tests::{Job, JobDir};

/// item-003 and item-007 exit 1 with a message; item-005 hangs past the
/// item timeout; the rest echo themselves.
fn job_dir() -> JobDir {
    let job_dir = JobDir::new();
    job_dir.items(8);
    Job::new("items.jsonl")
        .items_per_agent(4)
        .exec([
            "sh",
            "-c",
            "item=$(cat); case $item in *item-003*|*item-007*) echo 'quota exceeded' >&2; exit 1;; *item-005*) sleep 30;; esac; echo \"$item\"",
        ])
        .item_timeout("1s")
        .item_retries(0)
        .retries(0)
        .kill_grace("1s")
        .write(job_dir.path());
    job_dir
}

#[test]
fn each_failed_item_has_its_reason_in_failures_status_and_the_report() {
    let job_dir = job_dir();
    let finished = job_dir.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(1);
    assert!(
        finished
            .stdout
            .contains("finished: 5 of 8 items (62%), 3 failed — nightshift failures"),
        "{}",
        finished.stdout
    );

    assert!(
        finished
            .stderr
            .contains("item-003 failed: command exited with code 1"),
        "each failed item on the console as it fails: {}",
        finished.stderr
    );

    let listed = job_dir.nightshift(&["failures", "run", "--json"]);
    listed.expect_code(0);
    let listed: Value = serde_json::from_str(&listed.stdout).expect("failures --json");
    let reasons: Vec<(String, String)> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap_or_default().to_owned(),
                f["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        reasons
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["item-003", "item-005", "item-007"],
        "{listed:#}"
    );
    assert!(
        reasons[0]
            .1
            .contains("exited with code 1; stderr ends with: quota exceeded"),
        "the exit code with the last of its stderr: {reasons:?}"
    );
    assert!(reasons[1].1.contains("timeout after 1s"), "{reasons:?}");

    let ids = job_dir.nightshift(&["failures", "run", "--ids"]);
    assert_eq!(ids.stdout, "item-003\nitem-005\nitem-007\n");
    let timeouts = job_dir.nightshift(&["failures", "run", "--ids", "--reason", "timeout"]);
    assert_eq!(timeouts.stdout, "item-005\n");
    let text = job_dir.nightshift(&["failures", "run"]);
    assert!(text.stdout.contains("3 failed item(s)"), "{}", text.stdout);

    let status = job_dir.nightshift(&["status", "run", "--json"]);
    status.expect_code(1);
    let status: Value = serde_json::from_str(&status.stdout).expect("status --json");
    let by_reason = &status["failures"]["by_reason"];
    assert_eq!(
        by_reason["command exited with code 1"], 2,
        "grouped by the reason's kind: {status:#}"
    );
    assert_eq!(status["failures"]["last"].as_array().map(Vec::len), Some(3));
    let text = job_dir.nightshift(&["status", "run"]);
    assert!(
        text.stdout
            .contains("failures: 2 command exited with code 1"),
        "{}",
        text.stdout
    );

    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(job_dir.run_dir().join("report.json")).expect("report.json"),
    )
    .expect("report.json is JSON");
    assert_eq!(
        report["missing_ids"],
        serde_json::json!(["item-003", "item-005", "item-007"])
    );
    assert_eq!(report["failures"][1]["id"], "item-005");
    let printed = job_dir.nightshift(&["report", "run", "--json"]);
    printed.expect_code(0);
    let printed: Value = serde_json::from_str(&printed.stdout).expect("report --json");
    assert_eq!(printed, report, "report --json prints report.json");
    assert_eq!(
        report["failures"][1]["agent"],
        "segment_01/orch_01/agent_02"
    );
}

#[test]
fn an_agent_killed_for_good_gives_its_missing_items_the_kill_as_reason() {
    let job_dir = JobDir::new();
    job_dir.items(4);
    Job::new("items.jsonl")
        .items_per_agent(4)
        .exec(["sh", "-c", "sleep 30"])
        .timeout("1s")
        .retries(0)
        .kill_grace("1s")
        .write(job_dir.path());
    job_dir
        .nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(1);
    let listed = job_dir.nightshift(&["failures", "run", "--json"]);
    let listed: Value = serde_json::from_str(&listed.stdout).expect("failures --json");
    let all = listed.as_array().expect("a list");
    assert_eq!(all.len(), 4, "{listed:#}");
    for failure in all {
        assert_eq!(failure["reason"], "killed: agent timeout 1s", "{failure}");
    }
}

#[test]
fn when_many_items_fail_at_once_the_console_shows_a_few_and_counts_the_rest() {
    let job_dir = JobDir::new();
    job_dir.items(12);
    Job::new("items.jsonl")
        .items_per_agent(12)
        .exec(["sh", "-c", "echo nope >&2; exit 2"])
        .item_retries(0)
        .retries(0)
        .write(job_dir.path());
    let finished = job_dir.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"]);
    finished.expect_code(1);
    let shown = finished
        .stderr
        .lines()
        .filter(|l| l.starts_with("item-") && l.contains(" failed: "))
        .count();
    assert_eq!(shown, 5, "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains("… and 7 more item(s) failed — nightshift failures"),
        "{}",
        finished.stderr
    );
}

/// Each call appends the item's id to calls.log; items whose id is listed in
/// the file `broken` fail (exit 1), item-004 also hangs past the item timeout
/// while it is broken.
fn counting_job(job_dir: &JobDir) {
    job_dir.items(6);
    job_dir.write("broken", "item-002\nitem-004\n");
    Job::new("items.jsonl")
        .items_per_agent(3)
        .exec([
            "sh",
            "-c",
            "item=$(cat); id=$(printf '%s' \"$item\" | sed 's/.*\"id\": *\"\\([^\"]*\\)\".*/\\1/'); echo \"$id\" >> calls.log; if grep -qx \"$id\" broken; then [ \"$id\" = item-004 ] && sleep 30; exit 1; fi; echo \"$item\"",
        ])
        .item_timeout("1s")
        .item_retries(1)
        .retries(2)
        .retry_backoff("100ms")
        .kill_grace("1s")
        .write(job_dir.path());
}

fn calls(job_dir: &JobDir, id: &str) -> usize {
    std::fs::read_to_string(job_dir.path().join("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter(|line| *line == id)
        .count()
}

#[test]
fn an_item_is_attempted_item_retries_plus_one_times_across_relaunches_and_retried_on_request() {
    let job_dir = JobDir::new();
    counting_job(&job_dir);
    let finished = job_dir.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(1);
    assert_eq!(
        calls(&job_dir, "item-002"),
        2,
        "item_retries 1: two attempts, however many relaunches"
    );
    assert_eq!(calls(&job_dir, "item-004"), 2, "the hanging item too");
    assert_eq!(calls(&job_dir, "item-001"), 1);
    assert!(
        finished.stdout.contains("--retry-failed"),
        "says how to retry: {}",
        finished.stdout
    );

    // Without the flag a finished run is left as it is.
    let again = job_dir.nightshift(&["resume", "run"]);
    again.expect_code(1);
    assert!(
        again.stdout.contains("already finished") && again.stdout.contains("2 failed"),
        "{}",
        again.stdout
    );
    assert_eq!(calls(&job_dir, "item-002"), 2, "nothing was tried again");

    // Fixed: --retry-failed runs only the failed items, keeps every record.
    std::fs::write(job_dir.path().join("broken"), "").expect("fix it");
    let retried = job_dir.nightshift(&["resume", "run", "--retry-failed", "-q"]);
    retried.expect_code(0);
    assert_eq!(calls(&job_dir, "item-002"), 3);
    assert_eq!(calls(&job_dir, "item-004"), 3);
    assert_eq!(
        calls(&job_dir, "item-001"),
        1,
        "saved items are not asked again"
    );
    assert_eq!(
        nightshift_tests::json_array_ids(&job_dir.run_dir().join("final.json")).len(),
        6
    );
}
