//! Running Slurm's commands: sbatch, squeue, scontrol, sacct, scancel.
//!
//! Each runs while the reaper's spawn lock is held: the supervisor reaps every
//! child with waitpid(-1), and must not take the exit status std waits for.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::batch::Submission;
use super::state::{JobEnd, JobState};
use crate::executor::local::reaper::SPAWN_LOCK;

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error(
        "cannot run {command} ({source}); is Slurm's client (slurm-client) installed and on PATH?"
    )]
    Spawn {
        command: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {message}")]
    Refused {
        command: &'static str,
        message: String,
    },
    #[error("cannot write the batch script: {0}")]
    Script(#[source] std::io::Error),
}

/// A job of this user as squeue shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    pub id: u32,
    pub name: String,
    pub state: JobState,
    /// Time it has run so far.
    pub elapsed: Duration,
}

fn run<I, S>(command: &'static str, args: I) -> Result<Output, SlurmError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let _spawning = SPAWN_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Command::new(command)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SlurmError::Spawn { command, source })
}

/// Runs `command`; its stdout when it succeeded.
fn run_ok<I, S>(command: &'static str, args: I) -> Result<String, SlurmError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = run(command, args)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(SlurmError::Refused {
            command,
            message: format!("{} ({})", stderr.trim(), output.status),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Writes the batch script and submits it; the new job's id.
pub fn submit(submission: &Submission) -> Result<u32, SlurmError> {
    submission.write_script().map_err(SlurmError::Script)?;
    let stdout = run_ok("sbatch", submission.sbatch_args())?;
    // --parsable prints "id" or "id;cluster".
    let first = stdout.trim().split(';').next().unwrap_or("");
    first.parse().map_err(|_| SlurmError::Refused {
        command: "sbatch",
        message: format!("unexpected output {stdout:?}"),
    })
}

/// Asks Slurm whether a job with these resources would be accepted
/// (`sbatch --test-only`: nothing is submitted), so a wrong partition,
/// account or argument is found before the run starts.
pub fn test_submission(resources: Vec<std::ffi::OsString>) -> Result<(), SlurmError> {
    let mut args = vec![std::ffi::OsString::from("--test-only")];
    args.extend(resources);
    args.push("--wrap=true".into());
    run_ok("sbatch", args).map(|_| ())
}

/// This user's jobs whose names start with `prefix`, finished ones included
/// while Slurm still lists them (MinJobAge).
pub fn our_jobs(prefix: &str) -> Result<Vec<QueuedJob>, SlurmError> {
    let stdout = run_ok(
        "squeue",
        ["--me", "--states=all", "--noheader", "--format=%i|%j|%T|%M"],
    )?;
    Ok(stdout
        .lines()
        .filter_map(parse_queue_line)
        .filter(|job| job.name.starts_with(prefix))
        .collect())
}

fn parse_queue_line(line: &str) -> Option<QueuedJob> {
    let mut fields = line.trim().split('|');
    let id = fields.next()?.parse().ok()?;
    let name = fields.next()?.to_owned();
    let state = JobState::parse(fields.next()?);
    let elapsed = parse_elapsed(fields.next().unwrap_or(""));
    Some(QueuedJob {
        id,
        name,
        state,
        elapsed,
    })
}

/// squeue's %M: "S", "M:SS", "H:MM:SS" or "D-HH:MM:SS" (or "INVALID").
fn parse_elapsed(text: &str) -> Duration {
    let (days, clock) = match text.split_once('-') {
        Some((days, clock)) => (days.parse().unwrap_or(0), clock),
        None => (0, text),
    };
    let seconds = clock
        .split(':')
        .try_fold(0u64, |total, part| {
            part.parse::<u64>().ok().map(|p| total * 60 + p)
        })
        .unwrap_or(0);
    Duration::from_secs(days * 86_400 + seconds)
}

/// How a job that has left the running states ended: from `scontrol show
/// job`, else `sacct`, else the job-completion log (`sacct -c`). None while
/// it is not final, or when no source knows it.
pub fn final_state(id: u32) -> Option<JobEnd> {
    let id_text = id.to_string();
    if let Ok(stdout) = run_ok("scontrol", ["show", "job", "--oneliner", &id_text]) {
        let field = |key: &str| {
            stdout
                .split_whitespace()
                .find_map(|word| word.strip_prefix(key))
                .map(str::to_owned)
        };
        if let (Some(state), Some(exit)) = (field("JobState="), field("ExitCode=")) {
            let end = JobEnd::new(JobState::parse(&state), &exit);
            return end.state.is_final().then_some(end);
        }
    }
    let accounting = [
        "--noheader",
        "--parsable2",
        "--allocations",
        "--format=State,ExitCode",
        "--jobs",
        &id_text,
    ];
    let completion_log = [
        "--completion",
        "--noheader",
        "--parsable2",
        "--format=State,ExitCode",
        "--jobs",
        &id_text,
    ];
    for args in [&accounting[..], &completion_log[..]] {
        let Ok(stdout) = run_ok("sacct", args) else {
            continue;
        };
        let last = stdout.lines().rev().find_map(|line| line.split_once('|'));
        if let Some((state, exit)) = last {
            let end = JobEnd::new(JobState::parse(state), exit);
            if end.state.is_final() {
                return Some(end);
            }
        }
    }
    None
}

/// `scancel`: with `signal`, that signal to every process of the job (its
/// batch step and children); without, the job is cancelled outright.
pub fn cancel(id: u32, signal: Option<&str>) -> Result<(), SlurmError> {
    let mut args = Vec::new();
    if let Some(signal) = signal {
        args.push(format!("--signal={signal}"));
        args.push("--full".to_owned());
    }
    args.push(id.to_string());
    run_ok("scancel", args).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines() {
        let job = parse_queue_line("42|nightshift.1.s01o01a01|RUNNING|1:05").expect("parses");
        assert_eq!(job.id, 42);
        assert_eq!(job.state, JobState::Running);
        assert_eq!(job.elapsed, Duration::from_secs(65));
        assert_eq!(parse_elapsed("1-02:00:03"), Duration::from_secs(93_603));
        assert_eq!(parse_elapsed("INVALID"), Duration::ZERO);
        assert!(parse_queue_line("garbage").is_none());
    }
}
