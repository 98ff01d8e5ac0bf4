//! The `exec` backend: runs one command of agent.command per item, with the
//! item JSON on its stdin and the result on its stdout, under the per-item
//! timeout. Exit code 75 or the NIGHTSHIFT_RATE_LIMITED marker is a rate-limit
//! answer, not a result. Each call is its own process, in the agent's process
//! group, so calls from several workers run side by side and a tree kill of
//! the agent reaches all of them.

use std::os::unix::process::ExitStatusExt;

use serde_json::{Map, Value};
use shared::job::{AgentSettings, HumanDuration};

use super::rate_limit;
use super::{AttemptError, Backend, Call, CallFuture, Meter, Said};
use crate::process::{self, Stderr};
use crate::setup::SetupError;

/// How much of the end of stdout a failure reason quotes.
const TAIL_BYTES: usize = 200;

/// Every command of agent.command, in the order they are tried.
pub struct ExecBackend {
    commands: Vec<ExecCommand>,
}

impl ExecBackend {
    pub fn new(settings: &AgentSettings) -> Result<Self, SetupError> {
        let commands = settings
            .command
            .as_ref()
            .map(|c| c.list())
            .unwrap_or_default();
        if commands.is_empty() {
            return Err(SetupError::NoCommand);
        }
        let commands = commands
            .into_iter()
            .map(|command| ExecCommand::new(command, settings.item_timeout))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { commands })
    }
}

impl Backend for ExecBackend {
    fn choices(&self) -> usize {
        self.commands.len()
    }

    fn label(&self, choice: usize) -> String {
        self.commands
            .get(choice)
            .map(ExecCommand::label)
            .unwrap_or_default()
    }

    /// The command runs to its end here, on the worker's own thread.
    fn call<'a>(&'a self, call: Call<'a>, choice: usize, _meter: &'a mut Meter) -> CallFuture<'a> {
        let result = self
            .commands
            .get(choice)
            .ok_or(AttemptError::Lost)
            .and_then(|command| command.call(call));
        Box::pin(std::future::ready(result))
    }
}

/// One command of the list.
pub struct ExecCommand {
    program: String,
    args: Vec<String>,
    item_timeout: Option<HumanDuration>,
}

impl ExecCommand {
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

    /// The command as a person would type it, for produced_by and messages.
    pub fn label(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn call(&self, call: Call<'_>) -> Result<Map<String, Value>, AttemptError> {
        let mut line = serde_json::to_vec(call.item).map_err(|e| AttemptError::Io {
            what: "encoding the item",
            error: e.into(),
        })?;
        line.push(b'\n');
        let done = process::run(
            &self.program,
            &self.args,
            line,
            Stderr::Tail,
            self.item_timeout,
        )?;
        let status = done.status;
        if let Some(limit) = rate_limit::detect(status.code(), &done.stdout) {
            return Err(AttemptError::RateLimited(limit));
        }
        let stdout = String::from_utf8_lossy(&done.stdout);
        let text = stdout.trim();
        if !status.success() {
            let stderr = String::from_utf8_lossy(&done.stderr);
            let said = Said {
                // One line in the failures file: the last lines, joined.
                stderr: stderr.trim().lines().collect::<Vec<_>>().join(" / "),
                stdout: tail(text).to_owned(),
            };
            return Err(match (status.code(), status.signal()) {
                (Some(code), _) => AttemptError::ExitCode { code, said },
                (None, Some(signal)) => AttemptError::Signal { signal, said },
                (None, None) => AttemptError::ExitCode { code: -1, said },
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
            ExecCommand::new(&[], None),
            Err(SetupError::NoCommand)
        ));
    }

    #[test]
    fn label_joins_the_argv_with_spaces() {
        let command = ["python3".to_owned(), "local.py".to_owned()];
        let exec = ExecCommand::new(&command, None).expect("a command");
        assert_eq!(exec.label(), "python3 local.py");
    }
}
