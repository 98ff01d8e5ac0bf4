//! Exit code 5: an agent that says the run cannot go on (every API key
//! rejected, a full disk) stops the whole run at once, without retries and
//! without counting its items as failed; once fixed, `resume` completes it.

use nightshift_tests::{events, json_array_ids, Job, JobDir, PYTHON_AGENT_PRELUDE};

/// A contract-honouring agent that, while the file `broken` exists in the job
/// folder, saves one record and then exits 5 naming what is wrong.
const AGENT_BODY: &str = r#"
with open(out_path, "a") as out:
    for item in task["items"]:
        if item[field] in done:
            continue
        out.write(json.dumps({field: item[field], "ok": True}) + "\n")
        out.flush()
        os.fsync(out.fileno())
        if os.path.exists("broken"):
            print("no usable API key: NIGHTSHIFT_TEST_KEY was rejected by http://127.0.0.1:9/v1", file=sys.stderr)
            sys.exit(5)
"#;

#[test]
fn an_agent_that_cannot_go_on_stops_the_run_with_exit_5_and_resume_completes_it() {
    let job_dir = JobDir::new();
    let ids = job_dir.items(12);
    job_dir.script("agent.py", &format!("{PYTHON_AGENT_PRELUDE}{AGENT_BODY}"));
    job_dir.write("broken", "");
    Job::new("items.jsonl")
        .items_per_agent(2)
        .program(["./agent.py"])
        .retries(3)
        .retry_backoff("100ms")
        .max_parallel(2)
        .write(job_dir.path());

    let stopped = job_dir.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    stopped.expect_code(5);
    assert!(
        stopped.stdout.contains("NIGHTSHIFT_TEST_KEY")
            || stopped.stderr.contains("NIGHTSHIFT_TEST_KEY"),
        "the reason reaches the console: {stopped:?}"
    );
    let run = job_dir.run_dir();
    let journal = events(&run);
    let of = |name: &str| journal.iter().filter(|e| e["event"] == name).count();
    assert_eq!(of("retry-scheduled"), 0, "not the items' fault: no retry");
    assert!(
        of("launched") < 6,
        "nothing more is launched once the run cannot go on ({} launched)",
        of("launched")
    );
    let reason = journal
        .iter()
        .find(|e| e["event"] == "cannot-go-on")
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .expect("a cannot-go-on event");
    assert!(reason.contains("NIGHTSHIFT_TEST_KEY"), "{reason}");
    let finished = journal
        .iter()
        .find(|e| e["event"] == "run-finished")
        .expect("run-finished");
    assert_eq!(finished["state"], "stopped");
    assert_eq!(finished["exit_code"], 5);
    let status = job_dir.nightshift(&["status", "run", "--json"]);
    status.expect_code(5);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
    assert_eq!(status["state"], "stopped", "{status}");
    assert_eq!(
        status["items"]["failed"], 0,
        "no item counted as failed: {status}"
    );

    std::fs::remove_file(job_dir.path().join("broken")).expect("fix it");
    job_dir.nightshift(&["resume", "run", "-q"]).expect_code(0);
    assert_eq!(json_array_ids(&run.join("final.json")), ids);
}
