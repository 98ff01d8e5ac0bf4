//! Pipelines (`[[stage]]`): every final record carries every stage's work,
//! each stage is an ordinary run directory RUN/stage_NAME, a killed pipeline
//! resumes to the same final.json without redoing a saved item in any stage,
//! and bad stage tables are refused before anything starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nightshift_tests::{
    events, json_array_ids, jsonl_ids, run_processes, wait_until, wait_with_deadline, JobDir,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A stage's command: logs the item to calls_NAME.log (to count executions),
/// waits, and adds `"NAME": "done"` to it. `needs`: a field the item must
/// already carry (the upstream stage's work), or the item fails.
fn stage_script(job: &JobDir, name: &str, needs: Option<&str>, latency: &str) {
    let check = needs.map_or(String::new(), |field| {
        format!("case \"$line\" in *'\"{field}\"'*) ;; *) exit 1 ;; esac\n")
    });
    job.write(
        &format!("{name}.sh"),
        &format!(
            "read -r line\n{check}echo \"$line\" >> calls_{name}.log\nsleep {latency}\nprintf '%s' \"$line\" | sed 's/}}$/, \"{name}\": \"done\"}}/'\n"
        ),
    );
}

/// A two-stage job: `draft`, then `check` after it.
fn two_stage_job(job: &JobDir, latency: &str, barrier: bool) {
    stage_script(job, "draft", None, latency);
    stage_script(job, "check", Some("draft"), latency);
    job.write(
        "job.toml",
        &format!(
            r#"name = "pipe"
[input]
path = "items.jsonl"
[limits]
max_parallel = 2

[[stage]]
name = "draft"
[stage.layout]
items_per_agent = 2
[stage.agent]
backend = "exec"
command = ["sh", "draft.sh"]
kill_grace = "1s"

[[stage]]
name = "check"
after = "draft"
barrier = {barrier}
[stage.layout]
items_per_agent = 3
[stage.agent]
backend = "exec"
command = ["sh", "check.sh"]
kill_grace = "1s"
"#
        ),
    );
}

fn calls(job: &JobDir, stage: &str) -> Vec<String> {
    std::fs::read_to_string(job.path().join(format!("calls_{stage}.log")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect()
}

/// Ids saved in a stage's agent files.
fn saved(stage_dir: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for entry in nightshift_tests::litellm::files_under(stage_dir) {
        let name = entry
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("agent_")
            && name.ends_with(".jsonl")
            && !name.ends_with("failures.jsonl")
        {
            ids.extend(jsonl_ids(&entry));
        }
    }
    ids
}

fn stage(run: &Path, name: &str) -> PathBuf {
    run.join(format!("stage_{name}"))
}

#[test]
fn every_final_record_carries_both_stages_work() {
    let job = JobDir::new();
    let ids = job.items(10);
    two_stage_job(&job, "0", false);
    let done = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    done.expect_code(0);
    // Each stage's lines say which stage they are from.
    for name in ["draft", "check"] {
        let line = format!("[{name}] finished: 10 of 10 items");
        assert!(done.stdout.contains(&line), "{line}: {}", done.stdout);
    }
    let run = job.run_dir();
    assert_eq!(json_array_ids(&run.join("final.json")), ids);
    let text = std::fs::read_to_string(run.join("final.json")).expect("final.json");
    let records: Vec<serde_json::Value> = serde_json::from_str(&text).expect("a JSON array");
    for record in &records {
        assert_eq!(record["draft"], "done", "{record}");
        assert_eq!(record["check"], "done", "{record}");
        assert!(
            record["prompt"].is_string(),
            "the item's own fields: {record}"
        );
    }
    for name in ["draft", "check"] {
        let dir = stage(&run, name);
        assert_eq!(json_array_ids(&dir.join("final.json")), ids, "{name}");
        assert!(dir.join("plan.json").exists() && dir.join("segment_01.jsonl").exists());
        assert_eq!(calls(&job, name).len(), ids.len(), "{name}: once per item");
    }
    // The commands that read a run work per stage.
    let status = job.nightshift(&["status", "run", "--json"]);
    status.expect_code(0);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(status["state"], "finished", "{status}");
    assert_eq!(status["items"]["done"], 10, "{status}");
    let names: Vec<&str> = status["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["draft", "check"]);
    assert_eq!(status["stages"][1]["items"]["done"], 10, "{status}");
    assert_eq!(status["stages"][1]["items"]["in"], 10, "{status}");
    job.nightshift(&["validate", "run"])
        .expect_saying(0, "stage 2/2: check");
    std::fs::remove_file(run.join("final.json")).expect("remove final.json");
    job.nightshift(&["merge", "run"]).expect_code(0);
    assert_eq!(json_array_ids(&run.join("final.json")), ids, "merged again");
}

#[test]
fn a_stage_starts_once_its_upstream_stage_is_merged() {
    let job = JobDir::new();
    job.items(6);
    two_stage_job(&job, "0", true);
    job.nightshift(&["run", "job.toml", "--run-dir", "run"])
        .expect_code(0);
    let run = job.run_dir();
    let upstream_end = events(&stage(&run, "draft"))
        .into_iter()
        .find(|e| e["event"] == "run-finished")
        .and_then(|e| e["ts"].as_str().map(str::to_owned))
        .expect("draft finished");
    let first_launch = events(&stage(&run, "check"))
        .into_iter()
        .find(|e| e["event"] == "launched")
        .and_then(|e| e["ts"].as_str().map(str::to_owned))
        .expect("check launched");
    // RFC 3339 UTC timestamps of one format compare as text.
    assert!(
        first_launch >= upstream_end,
        "{first_launch} < {upstream_end}"
    );
}

/// When a stage's first agent launched and when its session finished.
fn launched_and_finished(stage_dir: &Path) -> (String, String) {
    let journal = events(stage_dir);
    let first = |name: &str| {
        journal
            .iter()
            .find(|e| e["event"] == name)
            .and_then(|e| e["ts"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("{}: no {name} event", stage_dir.display()))
    };
    (first("launched"), first("run-finished"))
}

/// The most agents alive at once over the stages' journals (an exit and a
/// launch at the same instant: the exit first).
fn most_running_at_once(stage_dirs: &[PathBuf]) -> usize {
    let mut changes: Vec<(String, i32)> = Vec::new();
    for dir in stage_dirs {
        for event in events(dir) {
            let step = match event["event"].as_str() {
                Some("launched") => 1,
                Some("exited") => -1,
                _ => continue,
            };
            changes.push((event["ts"].as_str().unwrap_or_default().to_owned(), step));
        }
    }
    changes.sort();
    let (mut now, mut most) = (0, 0);
    for (_, step) in changes {
        now += step;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

#[test]
fn a_stage_streams_while_its_upstream_stage_still_works() {
    let job = JobDir::new();
    let ids = job.items(8);
    two_stage_job(&job, "0.3", false);
    job.nightshift(&["run", "job.toml", "--run-dir", "run"])
        .expect_code(0);
    let run = job.run_dir();
    let (_, draft_finished) = launched_and_finished(&stage(&run, "draft"));
    let (check_launched, _) = launched_and_finished(&stage(&run, "check"));
    // RFC 3339 UTC timestamps of one format compare as text.
    assert!(
        check_launched < draft_finished,
        "check started at {check_launched}, after draft finished at {draft_finished}"
    );
    assert_eq!(json_array_ids(&run.join("final.json")), ids);
    // limits.max_parallel = 2 holds for both stages together.
    let most = most_running_at_once(&[stage(&run, "draft"), stage(&run, "check")]);
    assert!(
        (1..=2).contains(&most),
        "{most} agents at once, over max_parallel"
    );
    // The pipeline's page: both stages on one clock, a page for each.
    job.nightshift(&["report", "run", "--html", "page.html"])
        .expect_code(0);
    let page = std::fs::read_to_string(job.path().join("page.html")).expect("page.html");
    assert!(page.contains("Stages over time"), "{page}");
    for name in ["draft", "check"] {
        let own = format!("page_stage_{name}.html");
        assert!(page.contains(&own), "{name} is linked");
        assert!(job.path().join(&own).exists(), "{own}");
        assert!(
            page.contains(&format!(
                "<title>{name} segment_01/orch_01/agent_01 attempt 1"
            )),
            "{name}'s attempts are on the timeline"
        );
    }
}

#[test]
fn records_enter_the_next_stage_before_their_upstream_agent_is_done() {
    let job = JobDir::new();
    let ids = job.items(6);
    two_stage_job(&job, "0.3", false);
    // One agent per stage: without streaming by record, check could only
    // start once draft's one agent has done all six items.
    let text = std::fs::read_to_string(job.path().join("job.toml")).expect("job");
    job.write(
        "job.toml",
        &text
            .replace("items_per_agent = 2", "items_per_agent = 6")
            .replace("items_per_agent = 3", "items_per_agent = 6"),
    );
    job.nightshift(&["run", "job.toml", "--run-dir", "run"])
        .expect_code(0);
    let run = job.run_dir();
    let draft_exit = events(&stage(&run, "draft"))
        .into_iter()
        .find(|e| e["event"] == "exited")
        .and_then(|e| e["ts"].as_str().map(str::to_owned))
        .expect("draft's agent exited");
    let (check_launched, _) = launched_and_finished(&stage(&run, "check"));
    assert!(
        check_launched < draft_exit,
        "check started at {check_launched}, once draft's agent had exited at {draft_exit}"
    );
    assert_eq!(json_array_ids(&run.join("final.json")), ids);
    assert_eq!(calls(&job, "check").len(), ids.len(), "once per item");
}

#[test]
fn control_steers_every_stage_working_now() {
    let job = JobDir::new();
    let ids = job.items(6);
    two_stage_job(&job, "0.3", false);
    let child = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run"]);
    let run = job.run_dir();
    // Both stages' supervisors are up (their control sockets open before
    // they journal the start).
    assert!(
        wait_until(Duration::from_secs(30), || {
            ["draft", "check"].iter().all(|name| {
                events(&stage(&run, name))
                    .iter()
                    .any(|e| e["event"] == "run-started")
            })
        }),
        "both stages started"
    );
    let paused = job.nightshift(&["control", "run", "--pause"]);
    paused.expect_code(0);
    assert!(
        paused.stdout.contains("stage draft:") && paused.stdout.contains("stage check:"),
        "{}",
        paused.stdout
    );
    job.nightshift(&["control", "run", "--continue"])
        .expect_code(0);
    wait_with_deadline(child, Duration::from_secs(60)).expect_code(0);
    assert_eq!(json_array_ids(&run.join("final.json")), ids);
}

#[test]
fn an_item_that_fails_upstream_never_enters_the_next_stage() {
    let job = JobDir::new();
    let ids = job.items(4);
    two_stage_job(&job, "0", false);
    // item-002 fails in draft, every time.
    job.write(
        "draft.sh",
        "read -r line\ncase \"$line\" in *item-002*) exit 1 ;; esac\nprintf '%s' \"$line\" | sed 's/}$/, \"draft\": \"done\"}/'\n",
    );
    let text = std::fs::read_to_string(job.path().join("job.toml")).expect("job");
    job.write(
        "job.toml",
        &text.replace(
            "kill_grace = \"1s\"\n",
            "kill_grace = \"1s\"\nretries = 0\nitem_retries = 0\n",
        ),
    );
    let notify = "sh -c 'cat >> notified.jsonl'";
    let args = ["run", "job.toml", "--run-dir", "run", "--notify", notify];
    job.nightshift(&args).expect_code(1);
    // Told once, for the whole pipeline.
    let told = std::fs::read_to_string(job.path().join("notified.jsonl")).expect("told");
    let told: serde_json::Value = serde_json::from_str(&told).expect("one summary");
    assert_eq!(told["state"], "failed", "{told}");
    assert_eq!(told["items"]["total"], 4, "{told}");
    assert_eq!(told["items"]["done"], 3, "{told}");
    let status = job.nightshift(&["status", "run", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(status["stages"][1]["items"]["in"], 3, "{status}");
    // RUN/report.json sums the pipeline up, stage by stage.
    let report = std::fs::read_to_string(job.run_dir().join("report.json")).expect("report.json");
    let report: serde_json::Value = serde_json::from_str(&report).expect("report JSON");
    assert_eq!(report["exit_code"], 1, "{report}");
    assert_eq!(report["items"]["failed"], 1, "{report}");
    for (n, (name, items_in, done, failed)) in [("draft", 4, 3, 1), ("check", 3, 3, 0)]
        .into_iter()
        .enumerate()
    {
        let stage = &report["stages"][n];
        assert_eq!(stage["name"], name, "{report}");
        assert_eq!(stage["items"]["in"], items_in, "{report}");
        assert_eq!(stage["items"]["done"], done, "{report}");
        assert_eq!(stage["items"]["failed"], failed, "{report}");
        assert_eq!(
            stage["agents"]["running"],
            serde_json::Value::Null,
            "{report}"
        );
        assert!(stage["agents"]["total"].as_u64() > Some(0), "{report}");
        let own = job
            .run_dir()
            .join(stage["report"].as_str().expect("its report"));
        assert!(own.exists(), "{}", own.display());
    }
    let rest: Vec<String> = ids.iter().filter(|id| *id != "item-002").cloned().collect();
    assert_eq!(json_array_ids(&job.run_dir().join("final.json")), rest);
    assert!(!calls(&job, "check").contains(&"item-002".to_owned()));
    // Reported under the stage it failed in.
    let failures = job.nightshift(&["failures", "run"]);
    let text = &failures.stdout;
    let (draft, check) = text
        .split_once("stage 2/2: check")
        .unwrap_or_else(|| panic!("both stages listed: {text}"));
    assert!(
        draft.contains("stage 1/2: draft") && draft.contains("item-002"),
        "{text}"
    );
    assert!(!check.contains("item-002"), "{text}");
}

#[test]
fn a_killed_pipeline_resumes_to_the_same_output_without_redoing_saved_items() {
    let reference = JobDir::new();
    reference.items(12);
    two_stage_job(&reference, "0.2", false);
    reference
        .nightshift(&["run", "job.toml", "--run-dir", "run"])
        .expect_code(0);
    let expected = std::fs::read(reference.run_dir().join("final.json")).expect("final.json");

    let job = JobDir::new();
    let ids = job.items(12);
    two_stage_job(&job, "0.2", false);
    let child = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run"]);
    let run = job.run_dir();
    assert!(
        wait_until(Duration::from_secs(60), || saved(&stage(&run, "check"))
            .len()
            >= 2),
        "check saved some items"
    );
    // The supervisor's process group, then every agent (each in its own group).
    let supervisor = i32::try_from(child.id()).expect("pid");
    kill(Pid::from_raw(-supervisor), Signal::SIGKILL).expect("SIGKILL the supervisor");
    let _ = wait_with_deadline(child, Duration::from_secs(10));
    for name in ["draft", "check"] {
        for pid in run_processes(&stage(&run, name)) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    assert!(wait_until(Duration::from_secs(10), || {
        run_processes(&stage(&run, "check")).is_empty()
    }));
    let before: Vec<(String, Vec<String>)> = ["draft", "check"]
        .iter()
        .map(|name| ((*name).to_owned(), saved(&stage(&run, name))))
        .collect();
    for name in ["draft", "check"] {
        std::fs::remove_file(job.path().join(format!("calls_{name}.log"))).expect("reset");
    }

    job.nightshift(&["resume", "run"]).expect_code(0);
    for (name, saved_before) in &before {
        let after = calls(&job, name);
        for id in saved_before {
            assert!(!after.contains(id), "{name}: {id} was saved, yet redone");
        }
        assert_eq!(
            after.len() + saved_before.len(),
            ids.len(),
            "{name}: {after:?}"
        );
    }
    let resumed = std::fs::read(run.join("final.json")).expect("final.json");
    assert!(
        resumed == expected,
        "final.json differs from an uninterrupted run"
    );
    job.nightshift(&["resume", "run"])
        .expect_saying(0, "already finished");
}

/// Runs a job file text; returns stderr of a refusal (exit 2) that started nothing.
fn refused(text: &str) -> String {
    let job = JobDir::new();
    job.items(2);
    job.write("job.toml", text);
    let refused = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    refused.expect_code(2);
    assert!(!job.run_dir().exists(), "nothing was made");
    refused.stderr
}

const HEAD: &str = "[input]\npath = \"items.jsonl\"\n";
const DEMO: &str = "[stage.agent]\nbackend = \"demo\"\n";

#[test]
fn bad_stage_tables_are_refused_naming_line_and_key() {
    let both = refused(&format!(
        "{HEAD}[agent]\nbackend = \"demo\"\n[[stage]]\nname = \"a\"\n{DEMO}"
    ));
    assert!(
        both.contains("job.toml:3:") && both.contains("key `agent`"),
        "{both}"
    );
    assert!(both.contains("either [agent] or [[stage]]"), "{both}");

    let unknown = refused(&format!(
        "{HEAD}[[stage]]\nname = \"a\"\n{DEMO}[[stage]]\nname = \"b\"\nafter = \"nope\"\n{DEMO}"
    ));
    assert!(
        unknown.contains("job.toml:9:") && unknown.contains("stage.after"),
        "{unknown}"
    );
    assert!(unknown.contains("no stage is named \"nope\""), "{unknown}");

    let cycle = refused(&format!(
        "{HEAD}[[stage]]\nname = \"a\"\n{DEMO}[[stage]]\nname = \"b\"\nafter = \"c\"\n{DEMO}[[stage]]\nname = \"c\"\nafter = \"b\"\n{DEMO}"
    ));
    assert!(
        cycle.contains("stage.after") && cycle.contains("cycle"),
        "{cycle}"
    );

    let twice = refused(&format!(
        "{HEAD}[[stage]]\nname = \"a\"\n{DEMO}[[stage]]\nname = \"a\"\nafter = \"a\"\n{DEMO}"
    ));
    assert!(
        twice.contains("job.toml:8:") && twice.contains("stage.name"),
        "{twice}"
    );
    assert!(twice.contains("two stages are named \"a\""), "{twice}");

    let missing = refused(&format!(
        "{HEAD}[[stage]]\nname = \"a\"\n{DEMO}[[stage]]\nname = \"b\"\nafter = \"a\"\n[stage.agent]\nbackend = \"exec\"\ncommand = [\"no-such-checker\"]\n"
    ));
    assert!(
        missing.contains("no-such-checker") && missing.contains("was not found"),
        "{missing}"
    );

    let stage_key = refused(&format!(
        "{HEAD}[[stage]]\nname = \"a\"\n{DEMO}timeout = \"soon\"\n"
    ));
    assert!(
        stage_key.contains("job.toml:7:") && stage_key.contains("stage.agent.timeout"),
        "{stage_key}"
    );
}
