//! Settings that would make the supervisor spin or hang (an interval of zero,
//! a timeout of zero, no agent at a time) are refused before anything starts:
//! exit 2, naming the file, the line and the key.

use nightshift_tests::JobDir;

/// A job whose line 6 is `line` in `[section]` (lines 1-4 are the input and
/// the agent).
fn job_with(section: &str, line: &str) -> String {
    let head = "[input]\npath = \"items.jsonl\"\n[agent]\nbackend = \"demo\"\n";
    if section == "agent" {
        format!("{head}# the line below is refused\n{line}\n")
    } else {
        format!("{head}[{section}]\n{line}\n")
    }
}

/// Runs the job; it must be refused with exit 2 at line 6, naming `key`.
fn refused(section: &str, line: &str, key: &str) {
    let job = JobDir::new();
    job.items(2);
    job.write("job.toml", &job_with(section, line));
    let finished = job.nightshift(&["run", "job.toml", "--run-dir", "run"]);
    finished.expect_code(2);
    assert!(
        finished.stderr.contains("job.toml:6:"),
        "line 6 named for `{line}`: {}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains(&format!("key `{key}`")),
        "key {key} named: {}",
        finished.stderr
    );
    assert!(!job.run_dir().exists(), "nothing started for `{line}`");
}

#[test]
fn zero_intervals_the_supervisor_waits_on_are_refused() {
    refused(
        "limits",
        "sample_interval = \"0s\"",
        "limits.sample_interval",
    );
    refused(
        "limits",
        "progress_interval = \"0ms\"",
        "limits.progress_interval",
    );
    refused(
        "executor",
        "poll_interval = \"0s\"",
        "executor.poll_interval",
    );
}

#[test]
fn negative_intervals_are_refused() {
    refused(
        "limits",
        "sample_interval = \"-1s\"",
        "limits.sample_interval",
    );
    refused("limits", "sample_interval = -1", "limits.sample_interval");
}

#[test]
fn zero_timeouts_are_refused() {
    refused("agent", "timeout = \"0s\"", "agent.timeout");
    refused("agent", "timeout = \"0%\"", "agent.timeout");
    refused("agent", "stall_timeout = \"0m\"", "agent.stall_timeout");
    refused("agent", "item_timeout = \"0s\"", "agent.item_timeout");
    refused("notify", "timeout = \"0s\"", "notify.timeout");
}

#[test]
fn no_agent_at_a_time_is_refused() {
    refused("limits", "max_parallel = 0", "limits.max_parallel");
    refused("agent", "concurrency = 0", "agent.concurrency");
}

#[test]
fn an_empty_or_unknown_notify_setting_is_refused() {
    refused("notify", "command = []", "notify.command");
    refused("notify", "comand = [\"notify-send\"]", "notify.comand");
}

#[test]
fn small_positive_values_still_run() {
    let job = JobDir::new();
    job.items(2);
    job.write(
        "job.toml",
        "[input]\npath = \"items.jsonl\"\n[agent]\nbackend = \"demo\"\nstall_timeout = \"30s\"\n\
         [limits]\nsample_interval = \"10ms\"\nprogress_interval = \"1s\"\n",
    );
    job.nightshift(&["run", "job.toml", "--run-dir", "run"])
        .expect_code(0);
}
