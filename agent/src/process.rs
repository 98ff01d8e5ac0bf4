//! Runs one external command to its end: input on stdin, stdout (and, when
//! asked, stderr) captured, under an optional time limit. Shared by the exec
//! backend and the validator command.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shared::job::HumanDuration;

/// What a command left behind once it ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// Empty unless stderr was captured.
    pub stderr: Vec<u8>,
}

/// Why a command could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {program:?}: {error}")]
    Spawn {
        program: String,
        error: std::io::Error,
    },
    #[error("timeout after {after}{}", if *.exited { " (the command exited but its stdout stayed open)" } else { "" })]
    Timeout { after: HumanDuration, exited: bool },
    #[error("{what} failed: {error}")]
    Io {
        what: &'static str,
        error: std::io::Error,
    },
    #[error("lost track of the command (a helper thread stopped)")]
    Lost,
}

/// Where the command's stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// To the agent's own stderr (its log).
    Inherit,
    /// Into `Finished::stderr`.
    Capture,
    /// To the agent's own stderr as it comes, and its last `TAIL` bytes
    /// into `Finished::stderr` too (a failure's reason quotes them).
    Tail,
}

/// How much of a command's stderr `Stderr::Tail` keeps.
pub const TAIL: usize = 400;

/// What the helper threads of one run report.
enum Event {
    Exited(std::io::Result<ExitStatus>),
    Stdout(std::io::Result<Vec<u8>>),
    Stderr(std::io::Result<Vec<u8>>),
}

/// Runs `program args…` with `input` on its stdin and waits for it to end
/// and close its output, killing it when `limit` passes first.
pub fn run(
    program: &str,
    args: &[String],
    input: Vec<u8>,
    stderr: Stderr,
    limit: Option<HumanDuration>,
) -> Result<Finished, RunError> {
    // No shell and no new process group: the input never reaches a command
    // line, and killing the agent's group kills the command too.
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(match stderr {
            Stderr::Inherit => Stdio::inherit(),
            Stderr::Capture | Stderr::Tail => Stdio::piped(),
        })
        .spawn()
        .map_err(|error| RunError::Spawn {
            program: program.to_owned(),
            error,
        })?;
    let started = Instant::now();
    let pid = Pid::from_raw(child.id() as i32);
    let (sender, events) = mpsc::channel();
    if let Some(stdin) = child.stdin.take() {
        feed_stdin(stdin, input);
    }
    // A pipe that is missing (it cannot be, with Stdio::piped()) reads as empty.
    read_all(child.stdout.take(), sender.clone(), Event::Stdout);
    let mut stderr_bytes = match stderr {
        Stderr::Inherit => Some(Vec::new()),
        Stderr::Capture => {
            read_all(child.stderr.take(), sender.clone(), Event::Stderr);
            None
        }
        Stderr::Tail => {
            tee_tail(child.stderr.take(), sender.clone());
            None
        }
    };
    wait_in_thread(child, sender);

    let mut status = None;
    let mut stdout = None;
    while status.is_none() || stdout.is_none() || stderr_bytes.is_none() {
        let event = match limit {
            None => events.recv().map_err(|_| RunError::Lost)?,
            Some(limit) => {
                let left = limit.get().saturating_sub(started.elapsed());
                match events.recv_timeout(left) {
                    Ok(event) => event,
                    Err(RecvTimeoutError::Disconnected) => return Err(RunError::Lost),
                    Err(RecvTimeoutError::Timeout) => {
                        let exited = status.is_some();
                        if !exited {
                            kill_and_reap(pid, &events);
                        }
                        return Err(RunError::Timeout {
                            after: limit,
                            exited,
                        });
                    }
                }
            }
        };
        match event {
            Event::Exited(Ok(s)) => status = Some(s),
            Event::Exited(Err(error)) => {
                return Err(RunError::Io {
                    what: "waiting for the command",
                    error,
                })
            }
            Event::Stdout(Ok(bytes)) => stdout = Some(bytes),
            Event::Stderr(Ok(bytes)) => stderr_bytes = Some(bytes),
            Event::Stdout(Err(error)) => {
                return Err(RunError::Io {
                    what: "reading the command's stdout",
                    error,
                })
            }
            Event::Stderr(Err(error)) => {
                return Err(RunError::Io {
                    what: "reading the command's stderr",
                    error,
                })
            }
        }
    }
    match (status, stdout, stderr_bytes) {
        (Some(status), Some(stdout), Some(stderr)) => Ok(Finished {
            status,
            stdout,
            stderr,
        }),
        _ => Err(RunError::Lost),
    }
}

/// Writes the input from its own thread: a command that reads nothing, or
/// exits early, must not block the agent. Its errors (EPIPE above all) do not
/// matter: the exit status and output tell whether the command did its work.
fn feed_stdin(mut stdin: ChildStdin, input: Vec<u8>) {
    thread::spawn(move || {
        let _ = stdin.write_all(&input);
        // Dropping stdin closes it: the command sees the end of its input.
    });
}

/// Reads a pipe to its end from its own thread, so stdout and stderr are
/// drained together and neither can fill up and stall the command.
fn read_all<R: Read + Send + 'static>(
    pipe: Option<R>,
    sender: Sender<Event>,
    wrap: fn(std::io::Result<Vec<u8>>) -> Event,
) {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let result = match pipe {
            Some(mut pipe) => pipe.read_to_end(&mut bytes).map(|_| bytes),
            None => Ok(bytes),
        };
        // The receiver is gone when the run already ended (a timeout).
        let _ = sender.send(wrap(result));
    });
}

/// Copies a pipe to the agent's stderr as it comes (bounded memory, however
/// much the command writes) and reports its last `TAIL` bytes.
fn tee_tail<R: Read + Send + 'static>(pipe: Option<R>, sender: Sender<Event>) {
    thread::spawn(move || {
        let mut tail: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 8192];
        let result = match pipe {
            Some(mut pipe) => loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break Ok(tail),
                    Ok(n) => {
                        // The log is best effort: a full disk must not stop the command.
                        let _ = std::io::stderr().write_all(&chunk[..n]);
                        tail.extend_from_slice(&chunk[..n]);
                        if tail.len() > TAIL {
                            tail.drain(..tail.len() - TAIL);
                        }
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(error) => break Err(error),
                }
            },
            None => Ok(tail),
        };
        let _ = sender.send(Event::Stderr(result));
    });
}

/// Waits for the command without polling: the waiting thread reports its exit.
fn wait_in_thread(mut child: Child, sender: Sender<Event>) {
    thread::spawn(move || {
        let _ = sender.send(Event::Exited(child.wait()));
    });
}

/// Kills a command that ran out of time and waits until it is reaped, so no
/// zombie is left behind.
///
/// The pid is only signalled when the waiting thread has not reported an exit:
/// that thread reaps the command, and a reaped pid could in principle be
/// reused. The remaining window (between its wait returning and our check) is
/// a few instructions long, far too short for the pid space to wrap around.
fn kill_and_reap(pid: Pid, events: &Receiver<Event>) {
    loop {
        match events.try_recv() {
            Ok(Event::Exited(_)) | Err(mpsc::TryRecvError::Disconnected) => return,
            Ok(Event::Stdout(_) | Event::Stderr(_)) => continue,
            Err(mpsc::TryRecvError::Empty) => break,
        }
    }
    // ESRCH (already gone) needs no handling: the wait below returns at once.
    let _ = kill(pid, Signal::SIGKILL);
    while let Ok(event) = events.recv() {
        if let Event::Exited(_) = event {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["-c".to_owned(), script.to_owned()]
    }

    #[test]
    fn input_goes_in_and_both_outputs_come_back() {
        let done = run(
            "sh",
            &sh("cat; echo oops >&2; exit 4"),
            b"hello".to_vec(),
            Stderr::Capture,
            None,
        )
        .expect("sh runs");
        assert_eq!(done.status.code(), Some(4));
        assert_eq!(done.stdout, b"hello");
        assert_eq!(done.stderr, b"oops\n");
    }

    #[test]
    fn a_command_past_its_limit_is_killed() {
        let started = Instant::now();
        let error = run(
            "sleep",
            &["5".to_owned()],
            Vec::new(),
            Stderr::Inherit,
            Some(HumanDuration::from_millis(100)),
        )
        .expect_err("sleep outlives the limit");
        assert!(matches!(error, RunError::Timeout { exited: false, .. }));
        assert!(started.elapsed().as_secs() < 3);
    }
}
