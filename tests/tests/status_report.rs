//! `nightshift status` on a live, a killed and a finished run, and `nightshift
//! report --html` rendered by headless Chromium.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nightshift_tests::{wait_until, wait_with_deadline, Job, JobDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

fn slow_job(job: &JobDir) {
    job.items(8);
    Job::new("items.jsonl")
        .layout(1, 1, 2)
        .demo()
        .kill_grace("1s")
        .latency("400ms")
        .max_parallel(2)
        .write(job.path());
}

/// `status --json`, exiting with `code` (0 live or finished, 1 finished with
/// failures, 3/4/5/130 for the stops of `run`).
fn status_json(job: &JobDir, code: i32) -> Value {
    let finished = job.nightshift(&["status", "run", "--json"]);
    finished.expect_code(code);
    serde_json::from_str(&finished.stdout).expect("status --json is JSON")
}

/// Status once the run directory exists (Null before).
fn try_status_json(job: &JobDir) -> Value {
    let finished = job.nightshift(&["status", "run", "--json"]);
    serde_json::from_str(&finished.stdout).unwrap_or(Value::Null)
}

#[test]
fn status_follows_a_run_from_live_to_killed_to_finished() {
    let job = JobDir::new();
    slow_job(&job);
    let child = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run", "-q"]);
    let mut live = Value::Null;
    let partly_done = wait_until(Duration::from_secs(30), || {
        live = try_status_json(&job);
        live["agents"].as_array().is_some_and(|agents| {
            agents.iter().any(|a| {
                let (done, total) = (
                    a["done"].as_u64().unwrap_or(0),
                    a["total"].as_u64().unwrap_or(0),
                );
                a["state"] == "running" && 0 < done && done < total
            })
        })
    });
    assert!(
        partly_done,
        "a running agent with 0 < done < total: {live:#}"
    );
    assert_eq!(live["state"], "running");
    for agent in live["agents"].as_array().expect("agents") {
        if agent["state"] == "running" {
            assert!(agent["pid"].as_i64().is_some_and(|p| p > 0), "{agent}");
            assert!(agent["rss"].as_u64().is_some(), "{agent}");
        }
    }
    let text = job.nightshift(&["status", "run"]);
    assert!(
        text.stdout.contains(": running (supervisor pid"),
        "{}",
        text.stdout
    );

    // SIGKILL: no supervisor, no run-finished: interrupted.
    kill(
        Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        Signal::SIGKILL,
    )
    .expect("SIGKILL");
    let _ = wait_with_deadline(child, Duration::from_secs(10));
    let dead = status_json(&job, 130);
    assert_eq!(dead["state"], "interrupted", "{dead:#}");
    assert!(
        dead["resume"]["agents_to_run"].as_u64().unwrap_or(0) > 0,
        "{dead:#}"
    );
    let text = job.nightshift(&["status", "run"]);
    assert!(
        text.stdout.contains("`nightshift resume"),
        "{}",
        text.stdout
    );

    job.nightshift(&["resume", "run", "-q"]).expect_code(0);
    let finished = status_json(&job, 0);
    assert_eq!(finished["state"], "finished");
    assert_eq!(finished["items"]["done"], 8);
    assert_eq!(finished["items"]["total"], 8);
    assert_eq!(finished["resume"]["would_do_nothing"], true);
}

/// Opens the page in headless Chromium and returns its DOM after load.
fn rendered_dom(page: &Path, profile: &Path) -> String {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("Chromium is installed (Debian package chromium; .ci/run installs it)");
    // `timeout` (coreutils): a browser that hangs fails the test instead of the suite.
    let output = Command::new("timeout")
        .args(["120", chromium])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_html_report_renders_a_bar_per_attempt() {
    let job = JobDir::new();
    job.items(12);
    Job::new("items.jsonl")
        .layout(2, 2, 2)
        .demo()
        .retries(0)
        .latency("20ms")
        .crash_rate(0.2)
        .ram_ceiling("1GiB")
        .sample_interval("50ms")
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"]);
    let page = job.path().join("report.html");
    let report = job.nightshift(&["report", "run", "--html", "report.html"]);
    report.expect_code(0);
    let html = std::fs::read_to_string(&page).expect("report.html");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "self-contained"
    );
    let attempts = html.matches("<rect class=\"bar ").count();
    assert_eq!(attempts, 8, "one bar per attempt");
    assert!(
        html.contains("class=\"bar crashed\""),
        "crashed attempts are coloured as such"
    );
    assert!(
        html.contains("<polyline class=\"total\""),
        "memory over time"
    );
    assert!(html.contains("ceiling 1.0 GiB"), "against the ceiling");
    assert!(html.contains("<table class=\"failures\">"));
    let dom = rendered_dom(&page, &job.path().join("chromium-profile"));
    assert!(
        dom.contains(&format!("data-rendered-bars=\"{attempts}\"")),
        "Chromium laid out every bar: {}",
        dom.lines()
            .find(|l| l.contains("<body"))
            .unwrap_or("no body")
    );
}

#[test]
fn the_html_report_lists_failed_items_by_reason_linking_to_their_attempts() {
    let job = JobDir::new();
    job.items(6);
    Job::new("items.jsonl")
        .items_per_agent(3)
        .exec([
            "sh",
            "-c",
            "item=$(cat); case $item in *item-002*|*item-005*) exit 4;; *item-003*) sleep 30;; esac; echo \"$item\"",
        ])
        .item_timeout("1s")
        .item_retries(0)
        .retries(0)
        .kill_grace("1s")
        .write(job.path());
    job.nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(1);
    let page = job.path().join("failed.html");
    let written = job.nightshift(&["report", "run", "--html", "failed.html"]);
    written.expect_code(0);
    assert_eq!(
        written.stdout, "report page: failed.html\n",
        "--html prints only where the page went"
    );
    let dom = rendered_dom(&page, &job.path().join("chromium-profile"));
    assert!(
        dom.contains("command exited with code 4 (2)"),
        "grouped by reason with counts: {dom}"
    );
    assert_eq!(dom.matches("<table class=\"failed-items\">").count(), 2);
    for id in ["item-002", "item-003", "item-005"] {
        assert!(dom.contains(&format!("<td>{id}</td>")), "{id} listed");
    }
    // Every row links to a bar that exists on the timeline.
    let links: Vec<&str> = dom
        .split("href=\"#")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(links.len(), 3, "{dom}");
    for link in links {
        assert!(
            dom.contains(&format!("id=\"{link}\"")),
            "{link} has its bar"
        );
    }
}

#[test]
fn a_resumed_runs_memory_chart_and_timeline_share_one_axis_with_the_resume_marked() {
    let job = JobDir::new();
    slow_job(&job);
    let child = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run", "-q"]);
    let run = job.run_dir();
    assert!(
        wait_until(Duration::from_secs(30), || {
            std::fs::read_to_string(run.join("segment_01/orch_01/agent_01.jsonl"))
                .is_ok_and(|t| !t.is_empty())
        }),
        "the first run saves something"
    );
    kill(
        Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        Signal::SIGKILL,
    )
    .expect("SIGKILL");
    let _ = wait_with_deadline(child, Duration::from_secs(10));
    job.nightshift(&["resume", "run", "-q"]).expect_code(0);
    job.nightshift(&["report", "run", "--html", "resumed.html"])
        .expect_code(0);
    let html = std::fs::read_to_string(job.path().join("resumed.html")).expect("page");
    let resumed_at: Vec<f64> = html
        .split("<line class=\"resumed\" x1=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next()?.parse().ok())
        .collect();
    assert_eq!(
        resumed_at.len(),
        2,
        "the resume marked on both charts: {html}"
    );
    assert!(
        (resumed_at[0] - resumed_at[1]).abs() < 0.5,
        "at the same place: one axis ({resumed_at:?})"
    );
    // The memory samples are the resumed session's: they start at the mark.
    let first_sample: f64 = html
        .split("<polyline class=\"total\" points=\"")
        .nth(1)
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .expect("a memory polyline");
    assert!(
        first_sample >= resumed_at[0] - 1.0,
        "samples of the resumed session sit after the mark ({first_sample} < {})",
        resumed_at[0]
    );
}
