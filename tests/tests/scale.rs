//! Scale: the supervisor's own threads and memory stay bounded by design, not
//! by the number of agents alive or of items. Read from /proc while the run
//! goes; these are resource bounds, not timings.

use std::time::{Duration, Instant};

use std::path::Path;
use std::process::Child;

use nightshift_tests::litellm::files_under;
use nightshift_tests::{events, json_array_ids, Job, JobDir};

const MIB: u64 = 1024 * 1024;

/// A field of /proc/PID/status (kB fields in bytes), if the process is there.
fn status_field(pid: u32, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    let value: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(if line.ends_with("kB") {
        value * 1024
    } else {
        value
    })
}

/// The most agents alive at once, from events.jsonl.
fn most_alive(run: &std::path::Path) -> usize {
    let (mut alive, mut most) = (0usize, 0usize);
    for event in events(run) {
        match event["event"].as_str() {
            Some("launched") => alive += 1,
            Some("exited") => alive = alive.saturating_sub(1),
            _ => {}
        }
        most = most.max(alive);
    }
    most
}

#[test]
fn a_thousand_agents_at_once_keep_the_supervisor_under_64_threads_and_30_mib() {
    let job = JobDir::new();
    let ids = job.items(1000);
    // One item per agent: sleep, then save the item's record (its id, read
    // from the task file, whose items are the input lines verbatim).
    let agent = r#"sleep 4; id=$(sed -n 's/.*"items":\[{"id": "\([^"]*\)".*/\1/p' "$NIGHTSHIFT_TASK"); printf '{"id": "%s", "done": true}\n' "$id" >> "$NIGHTSHIFT_OUTPUT""#;
    Job::new("items.jsonl")
        .layout(1, 1, 1000)
        .program(["sh", "-c", agent])
        .max_parallel(1000)
        .write(job.path());
    let mut child = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run", "-q"]);
    let pid = child.id();
    let (mut threads, mut rss) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for nightshift") {
            break status;
        }
        threads = threads.max(status_field(pid, "Threads:").unwrap_or(0));
        rss = rss.max(status_field(pid, "VmRSS:").unwrap_or(0));
        assert!(Instant::now() < deadline, "the run took too long");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0));
    assert_eq!(json_array_ids(&job.run_dir().join("final.json")), ids);
    let alive = most_alive(&job.run_dir());
    assert!(alive >= 900, "most agents alive at once: {alive}");
    assert!(threads > 0 && threads < 64, "supervisor threads: {threads}");
    assert!(
        rss > 0 && rss < 30 * MIB,
        "supervisor RSS: {} MiB",
        rss / MIB
    );
}

/// Waits for a supervisor while sampling its peak RSS (VmHWM); its exit code
/// and the peak seen.
fn peak_rss_until_exit(mut child: Child) -> (Option<i32>, u64) {
    let pid = child.id();
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = child.try_wait().expect("wait for nightshift") {
            return (status.code(), peak);
        }
        peak = peak.max(status_field(pid, "VmHWM:").unwrap_or(0));
        assert!(Instant::now() < deadline, "the run took too long");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn supervisor_memory_goes_with_agents_not_items_in_a_run_and_its_resume() {
    // 150,000 items of ~170 bytes: 25 MB of input. Held whole (as before the
    // plan kept counts and the input was streamed) they took over 120 MiB.
    const ITEMS: usize = 150_000;
    let job = JobDir::new();
    let filler = "x".repeat(120);
    let text: String = (0..ITEMS)
        .map(|i| format!("{{\"id\": \"item-{i:06}\", \"prompt\": \"{filler}\"}}\n"))
        .collect();
    job.write("items.jsonl", &text);
    drop(text);
    Job::new("items.jsonl")
        .items_per_agent(5000)
        .demo()
        .latency("0ms")
        .max_parallel(4)
        .write(job.path());
    let run = job.run_dir();
    let started = job.spawn_nightshift(&["run", "job.toml", "--run-dir", "run", "-q"]);
    let (code, peak) = peak_rss_until_exit(started);
    assert_eq!(code, Some(0));
    assert!(
        peak > 0 && peak < 64 * MIB,
        "run: supervisor peak RSS {} MiB",
        peak / MIB
    );
    let expected = std::fs::read(run.join("final.json")).expect("final.json");

    // Lose the last agent's records and every merged file, then resume.
    let last = last_agent_output(&run);
    std::fs::write(&last, b"").expect("empty the last agent file");
    std::fs::remove_file(run.join("final.json")).expect("remove final.json");
    let resumed = job.spawn_nightshift(&["resume", "run", "-q"]);
    let (code, peak) = peak_rss_until_exit(resumed);
    assert_eq!(code, Some(0));
    assert!(
        peak > 0 && peak < 64 * MIB,
        "resume: supervisor peak RSS {} MiB",
        peak / MIB
    );
    assert_eq!(
        std::fs::read(run.join("final.json")).expect("final.json"),
        expected,
        "the resumed run's final.json is the uninterrupted one"
    );
}

/// The agent file that comes last in plan order.
fn last_agent_output(run: &Path) -> std::path::PathBuf {
    let mut files: Vec<_> = files_under(run)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("agent_") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    files.pop().expect("an agent file")
}
