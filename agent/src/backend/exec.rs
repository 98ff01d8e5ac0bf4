//! The `exec` backend: runs agent.command once per item, with the item JSON on
//! its stdin and the result on its stdout, under the per-item timeout.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{Map, Value};
use shared::job::HumanDuration;

use super::{AttemptError, Call};
use crate::setup::SetupError;

/// How much of the end of stdout a failure reason quotes.
const TAIL_BYTES: usize = 200;

pub struct ExecBackend {
    program: String,
    args: Vec<String>,
    item_timeout: Option<HumanDuration>,
}

/// What the helper threads of one call report.
enum Event {
    Exited(std::io::Result<ExitStatus>),
    Stdout(std::io::Result<Vec<u8>>),
}

impl ExecBackend {
    pub fn new(
        command: &[String],
        item_timeout: Option<HumanDuration>,
    ) -> Result<Self, SetupError> {
        let (program, args) = command.split_first().ok_or(SetupError::NoCommand)?;
        if program.is_empty() {
            return Err(SetupError::NoCommand);
        }
        Ok(Self {
            program: program.clone(),
            args: args.to_vec(),
            item_timeout,
        })
    }

    pub fn call(&self, call: Call<'_>) -> Result<Map<String, Value>, AttemptError> {
        let (status, stdout) = self.run(call.item)?;
        let stdout = String::from_utf8_lossy(&stdout);
        let text = stdout.trim();
        if !status.success() {
            let stdout_tail = tail(text).to_owned();
            return Err(match (status.code(), status.signal()) {
                (Some(code), _) => AttemptError::ExitCode { code, stdout_tail },
                (None, Some(signal)) => AttemptError::Signal {
                    signal,
                    stdout_tail,
                },
                (None, None) => AttemptError::ExitCode {
                    code: -1,
                    stdout_tail,
                },
            });
        }
        if text.is_empty() {
            return Err(AttemptError::EmptyOutput);
        }
        if let Ok(Value::Object(record)) = serde_json::from_str::<Value>(text) {
            return Ok(record);
        }
        // Plain text (or JSON that is not an object) is the output itself.
        let mut record = Map::new();
        record.insert(call.id_field.to_owned(), call.id.to_value());
        record.insert("output".to_owned(), Value::String(text.to_owned()));
        Ok(record)
    }

    /// Runs the command on one item: its exit status and its whole stdout.
    fn run(&self, item: &Value) -> Result<(ExitStatus, Vec<u8>), AttemptError> {
        let mut line = serde_json::to_vec(item).map_err(|e| AttemptError::Io {
            what: "encoding the item",
            error: e.into(),
        })?;
        line.push(b'\n');
        // No shell and no new process group: the item never reaches a command
        // line, and killing the agent's group kills the command too.
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|error| AttemptError::Spawn {
                program: self.program.clone(),
                error,
            })?;
        let started = Instant::now();
        let pid = Pid::from_raw(child.id() as i32);
        let (sender, events) = mpsc::channel();
        if let Some(stdin) = child.stdin.take() {
            feed_stdin(stdin, line);
        }
        if let Some(stdout) = child.stdout.take() {
            read_stdout(stdout, sender.clone());
        } else {
            // Cannot happen with Stdio::piped(); report it as empty stdout.
            let _ = sender.send(Event::Stdout(Ok(Vec::new())));
        }
        wait_in_thread(child, sender);

        let mut status = None;
        let mut stdout = None;
        while status.is_none() || stdout.is_none() {
            let event = match self.item_timeout {
                None => events.recv().map_err(|_| AttemptError::Lost)?,
                Some(limit) => {
                    let left = limit.get().saturating_sub(started.elapsed());
                    match events.recv_timeout(left) {
                        Ok(event) => event,
                        Err(RecvTimeoutError::Disconnected) => return Err(AttemptError::Lost),
                        Err(RecvTimeoutError::Timeout) => {
                            let exited = status.is_some();
                            if !exited {
                                kill_and_reap(pid, &events);
                            }
                            return Err(AttemptError::Timeout {
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
                    return Err(AttemptError::Io {
                        what: "waiting for the command",
                        error,
                    })
                }
                Event::Stdout(Ok(bytes)) => stdout = Some(bytes),
                Event::Stdout(Err(error)) => {
                    return Err(AttemptError::Io {
                        what: "reading the command's stdout",
                        error,
                    })
                }
            }
        }
        match (status, stdout) {
            (Some(status), Some(stdout)) => Ok((status, stdout)),
            _ => Err(AttemptError::Lost),
        }
    }
}

/// Writes the item from its own thread: a command that reads nothing, or
/// exits early, must not block the agent. Its errors (EPIPE above all) do not
/// matter: the exit status and stdout tell whether the command did its work.
fn feed_stdin(mut stdin: ChildStdin, line: Vec<u8>) {
    thread::spawn(move || {
        let _ = stdin.write_all(&line);
        // Dropping stdin closes it: the command sees the end of its input.
    });
}

fn read_stdout(mut stdout: ChildStdout, sender: Sender<Event>) {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let result = stdout.read_to_end(&mut bytes).map(|_| bytes);
        // The receiver is gone when the call already ended (a timeout).
        let _ = sender.send(Event::Stdout(result));
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
            Ok(Event::Stdout(_)) => continue,
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

/// The last bytes of a text, cut at a character boundary.
fn tail(text: &str) -> &str {
    let mut start = text.len().saturating_sub(TAIL_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("short"), "short");
        let long = format!("{}é{}", "a".repeat(10), "b".repeat(199));
        let end = tail(&long);
        assert!(end.len() <= TAIL_BYTES);
        assert!(end.ends_with('b'));
    }

    #[test]
    fn empty_command_is_refused() {
        assert!(matches!(
            ExecBackend::new(&[], None),
            Err(SetupError::NoCommand)
        ));
    }
}
