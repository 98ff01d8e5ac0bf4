//! A full disk is an input like any other: a run whose run directory sits on
//! a small tmpfs stops with exit code 5 (no panic, no process left, no item
//! counted as failed, saved records intact) and, once the tmpfs grows,
//! `resume` completes it to the same final.json as a run with room. Needs
//! root (mount), as CI and the developers' machines have.

use std::path::{Path, PathBuf};
use std::process::Command;

use nightshift_tests::{run_processes, Job, JobDir};

/// A tmpfs mounted for one test, unmounted however the test ends.
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).expect("mount point");
        let done = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            done.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        Self { at: at.to_owned() }
    }

    fn grow(&self, size: &str) {
        let done = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.at)
            .output()
            .expect("run mount");
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// Items of about 40 KB each: a few fill a small tmpfs.
fn big_items(job_dir: &JobDir, n: usize) {
    let filler = "x".repeat(40_000);
    let text: String = (1..=n)
        .map(|i| format!("{{\"id\": \"item-{i:03}\", \"prompt\": \"{filler}\"}}\n"))
        .collect();
    job_dir.write("items.jsonl", &text);
}

fn job() -> Job {
    Job::new("items.jsonl")
        .items_per_agent(5)
        .exec(["cat"])
        .max_parallel(2)
}

/// final.json of the same job on a disk with room.
fn reference(job: &Job) -> Vec<u8> {
    let job_dir = JobDir::new();
    big_items(&job_dir, 30);
    job.write(job_dir.path());
    job_dir
        .nightshift(&["run", "job.toml", "--run-dir", "run", "-q"])
        .expect_code(0);
    std::fs::read(job_dir.run_dir().join("final.json")).expect("final.json")
}

fn stopped_cleanly(run: &Path, finished: &nightshift_tests::Finished) {
    finished.expect_code(5);
    assert!(!finished.stderr.contains("panicked"), "{finished:?}");
    assert!(
        run_processes(run).is_empty(),
        "no process of the run is left"
    );
    // Every saved record is whole: each complete line of every agent file is
    // a JSON object (a torn last line, with no newline, is cut by resume).
    let agent_files = files_ending(run, ".jsonl")
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".failures.jsonl"));
    for file in agent_files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        for line in complete.lines() {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object()),
                "{} holds a broken record: {line:.80}",
                file.display()
            );
        }
    }
    for failures in files_ending(run, ".failures.jsonl") {
        let text = std::fs::read_to_string(&failures).unwrap_or_default();
        assert!(
            text.trim().is_empty(),
            "no item failed because of the disk: {text}"
        );
    }
}

/// Files under `run` whose name ends with `suffix`.
fn files_ending(run: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![run.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn a_full_disk_stops_the_run_with_exit_5_and_resume_completes_it_once_it_grows() {
    let job = job().limit("min_disk", "0B");
    let expected = reference(&job);
    let job_dir = JobDir::new();
    big_items(&job_dir, 30);
    job.write(job_dir.path());
    // Room for the task files (the items), not for the records too.
    let disk = Tmpfs::mount(&job_dir.path().join("disk"), "1600k");
    let run = disk.at.join("run");
    let run_arg = run.to_string_lossy().into_owned();

    let finished = job_dir.nightshift(&["run", "job.toml", "--run-dir", &run_arg, "-q"]);
    stopped_cleanly(&run, &finished);
    let said = format!("{}{}", finished.stdout, finished.stderr);
    assert!(
        said.contains("is full") || said.contains("No space left"),
        "the message says the disk is full: {finished:?}"
    );

    disk.grow("64m");
    job_dir
        .nightshift(&["resume", &run_arg, "-q"])
        .expect_code(0);
    assert!(
        std::fs::read(run.join("final.json")).expect("final.json") == expected,
        "the same final.json as a run with room"
    );
}

#[test]
fn below_min_disk_nothing_more_is_launched_and_the_run_stops_with_exit_5() {
    let job = job().limit("min_disk", "3MiB");
    let expected = reference(&job);
    let job_dir = JobDir::new();
    big_items(&job_dir, 30);
    job.write(job_dir.path());
    let disk = Tmpfs::mount(&job_dir.path().join("disk"), "4m");
    let run = disk.at.join("run");
    let run_arg = run.to_string_lossy().into_owned();

    let finished = job_dir.nightshift(&["run", "job.toml", "--run-dir", &run_arg, "-q"]);
    stopped_cleanly(&run, &finished);
    assert!(
        finished.stdout.contains("limits.min_disk") || finished.stderr.contains("limits.min_disk"),
        "the message names limits.min_disk: {finished:?}"
    );

    disk.grow("64m");
    job_dir
        .nightshift(&["resume", &run_arg, "-q"])
        .expect_code(0);
    assert!(std::fs::read(run.join("final.json")).expect("final.json") == expected);
}
