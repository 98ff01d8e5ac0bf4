//! Telling someone the run is over: the notify command (`[notify] command`, or
//! `--notify` for one run) is run once when a session ends, for any reason,
//! with the run's summary as JSON on its standard input. It runs in the job
//! file's folder, in a process group of its own, its output appended to
//! RUN/notify.log. Whatever happens to it is logged and journaled; it never
//! changes the run's exit code.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Serialize;

use shared::exit_codes;
use shared::job::{default_notify_timeout, Job};
use shared::journal::Event;
use shared::plan::Plan;
use shared::rundir::RunDir;
use shared::validate::check_jsonl;

use crate::error::SupervisorError;
use crate::executor::local::reaper::SPAWN_LOCK;
use crate::outcome::Outcome;
use crate::reporting::report::AttemptRecord;
use crate::run::journal::EventLog;
use crate::run::resume::{scan_progress, Missing};

/// How often a running notify command is looked at.
const POLL: Duration = Duration::from_millis(20);

/// `--notify COMMAND`: split into words like a shell would (quotes and
/// backslashes, no variables or globs), so `--notify 'notify-send "run over"'`
/// works as well as `--notify ./tell.sh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyCommand(pub Vec<String>);

impl FromStr for NotifyCommand {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match shlex::split(text) {
            Some(words) if words.first().is_some_and(|w| !w.is_empty()) => Ok(Self(words)),
            Some(_) => Err("the notify command is empty".to_owned()),
            None => Err(format!(
                "cannot split {text:?} into words (an unclosed quote or a trailing backslash)"
            )),
        }
    }
}

/// The JSON the notify command gets on stdin.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// finished | failed | interrupted | deadline | halted | stopped | error
    pub state: String,
    pub exit_code: i32,
    pub items: ItemCounts,
    /// Agent attempts of this session that failed (crashed, exited non-zero,
    /// killed for a timeout, a stall or memory, could not start).
    pub failures: usize,
    pub duration_seconds: f64,
    /// USD spent, once nightshift counts money; null until then.
    pub cost: Option<f64>,
    pub run_dir: String,
    pub job: String,
    /// What went wrong, when the supervisor itself failed (state "error").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ItemCounts {
    pub total: usize,
    pub done: usize,
    /// Missing items of agents whose last attempt failed.
    pub failed: usize,
    pub missing: usize,
}

impl RunSummary {
    /// The summary of a session the supervisor itself failed (state "error",
    /// the error's exit code), from what the agent files hold.
    pub fn error(
        run: &RunDir,
        job: &Job,
        plan: &Plan,
        started: Instant,
        error: &SupervisorError,
    ) -> Self {
        // Best effort: the error may be the very reason the files cannot be read.
        let (done, missing) = scan_progress(run, plan, Missing::Count)
            .map_or((0, plan.items_total), |p| (p.saved, p.missing));
        Self {
            state: "error".to_owned(),
            exit_code: error.exit_code(),
            items: ItemCounts {
                total: plan.items_total,
                done,
                failed: 0,
                missing,
            },
            failures: 0,
            duration_seconds: started.elapsed().as_secs_f64(),
            cost: None,
            run_dir: run.root().display().to_string(),
            job: job.name.clone(),
            error: Some(error.to_string()),
        }
    }
}

/// The command to run at the end of this session, if any.
#[derive(Debug, Clone)]
pub struct Notifier {
    command: Vec<String>,
    folder: PathBuf,
    timeout: Duration,
}

/// Why a notify command did not do its job.
#[derive(Debug, thiserror::Error)]
enum NotifyError {
    #[error("cannot start it: {0}")]
    Start(#[source] io::Error),
    #[error("cannot wait for it: {0}")]
    Wait(#[source] io::Error),
    #[error("it exited with code {0}")]
    Exit(i32),
    #[error("it was killed by signal {0}")]
    Signal(i32),
    #[error("it ran longer than {0:?} and was killed")]
    Timeout(Duration),
}

impl Notifier {
    /// `--notify` replaces the job's `[notify] command` for this run.
    pub fn for_run(job: &Job, cli: Option<&NotifyCommand>) -> Option<Self> {
        let settings = job.settings.notify.as_ref();
        let command = match (cli, settings) {
            (Some(cli), _) => cli.0.clone(),
            (None, Some(settings)) => settings.command.clone(),
            (None, None) => return None,
        };
        Some(Self {
            command,
            folder: job.dir.clone(),
            timeout: settings
                .map_or(default_notify_timeout(), |s| s.timeout)
                .get(),
        })
    }

    /// Runs the command with `summary`; logs and journals how it went.
    pub fn send(&self, run: &RunDir, summary: &RunSummary) {
        let started = Instant::now();
        let result = self.run_command(run.root(), summary);
        let seconds = started.elapsed().as_secs_f64();
        let shown = self.command.join(" ");
        let event = match result {
            Ok(()) => {
                tracing::info!("notified `{shown}` ({seconds:.1}s)");
                Event::Notified {
                    command: self.command.clone(),
                    seconds,
                }
            }
            Err(error) => {
                tracing::warn!(
                    "notify command `{shown}` failed: {error} (its output: {}); the run's exit code stands",
                    log_path(run.root()).display()
                );
                Event::NotifyFailed {
                    command: self.command.clone(),
                    error: error.to_string(),
                    seconds,
                }
            }
        };
        let journaled = EventLog::open(&run.events()).and_then(|mut log| log.record(None, &event));
        if let Err(error) = journaled {
            tracing::warn!("cannot journal the notify command in events.jsonl: {error}");
        }
    }

    fn run_command(&self, run_root: &Path, summary: &RunSummary) -> Result<(), NotifyError> {
        let mut json = serde_json::to_vec(summary).map_err(|e| NotifyError::Start(e.into()))?;
        json.push(b'\n');
        let log = open_log(run_root).map_err(NotifyError::Start)?;
        // The session's signal thread may outlive it and reaps any child with
        // waitpid(-1); while this lock is held it reaps nothing, so the exit
        // status of the command is ours to collect.
        let _no_reaping = SPAWN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .current_dir(&self.folder)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().map_err(NotifyError::Start)?)
            .stderr(log)
            // Its own group: a Ctrl-C at the terminal does not reach it, and a
            // timeout kills everything it started.
            .process_group(0)
            .spawn()
            .map_err(NotifyError::Start)?;
        // Written from a thread: a command that never reads its stdin must not
        // hold the supervisor past the timeout.
        let stdin = child.stdin.take();
        let writer = std::thread::spawn(move || {
            if let Some(mut stdin) = stdin {
                // A command that ignores its input closes the pipe: not an error.
                let _ = stdin.write_all(&json);
            }
        });
        let status = wait_or_kill(&mut child, self.timeout);
        // The writer ends once the child is gone (its pipe is closed).
        let _ = writer.join();
        let status = status?;
        match (status.code(), status.signal()) {
            (Some(0), _) => Ok(()),
            (Some(code), _) => Err(NotifyError::Exit(code)),
            (None, signal) => Err(NotifyError::Signal(signal.unwrap_or(0))),
        }
    }
}

/// Waits for the command; past `timeout` its whole process group is killed.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> Result<ExitStatus, NotifyError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(NotifyError::Wait)? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait();
            return Err(NotifyError::Timeout(timeout));
        }
        std::thread::sleep(POLL);
    }
}

fn log_path(run_root: &Path) -> PathBuf {
    run_root.join("notify.log")
}

fn open_log(run_root: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(run_root))
}

/// Attempts of this session that count as failures: not a success, not a kill
/// that stops the run or makes room, not an agent saying the run cannot go on.
pub fn is_failure(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Succeeded => false,
        Outcome::Killed(reason) => !(reason.makes_room() || reason.stops_run()),
        Outcome::Failed(code) => {
            *code != exit_codes::CANNOT_GO_ON && *code != exit_codes::BUDGET_SPENT
        }
        Outcome::Crashed(_) | Outcome::LaunchFailed(_) | Outcome::Slurm(_) => true,
    }
}

/// The summary's counts from what the session knows.
pub fn count(
    run: &RunDir,
    plan: &Plan,
    done: usize,
    missing: usize,
    attempts: &[AttemptRecord],
) -> (ItemCounts, usize) {
    let mut last: HashMap<&str, &Outcome> = HashMap::new();
    for attempt in attempts {
        last.insert(attempt.agent.as_str(), &attempt.outcome);
    }
    // The items of agents whose last attempt failed that none of their
    // attempts saved: one agent's ids at a time, from its task file.
    let failed = plan
        .agents()
        .filter(|agent| last.get(agent.name.as_str()).is_some_and(|o| is_failure(o)))
        .map(|agent| {
            let saved = run.agent_ids(agent.at).and_then(|ids| {
                check_jsonl(&run.agent_output(agent.at), &ids, &plan.id_field, false)
            });
            saved.map_or(agent.items, |checked| {
                agent.items.saturating_sub(checked.records.len())
            })
        })
        .sum();
    let failures = attempts.iter().filter(|a| is_failure(&a.outcome)).count();
    let counts = ItemCounts {
        total: plan.items_total,
        done,
        failed,
        missing,
    };
    (counts, failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_value_is_split_like_a_shell_would() {
        let parsed: NotifyCommand = "notify-send 'run over' \"at night\"".parse().expect("ok");
        assert_eq!(parsed.0, ["notify-send", "run over", "at night"]);
        assert_eq!(
            "./tell.sh".parse::<NotifyCommand>().expect("ok").0,
            ["./tell.sh"]
        );
        assert!("".parse::<NotifyCommand>().is_err());
        assert!("say 'unclosed".parse::<NotifyCommand>().is_err());
    }

    #[test]
    fn kills_that_stop_the_run_or_make_room_are_not_failures() {
        use shared::journal::KillReason;
        assert!(!is_failure(&Outcome::Killed(KillReason::Shutdown)));
        assert!(!is_failure(&Outcome::Killed(KillReason::Ceiling)));
        assert!(!is_failure(&Outcome::Failed(exit_codes::CANNOT_GO_ON)));
        assert!(is_failure(&Outcome::Killed(KillReason::Timeout)));
        assert!(is_failure(&Outcome::Failed(1)));
    }
}
