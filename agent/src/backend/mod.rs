//! Backends: what turns one item into one result record. `exec` runs a command
//! per item; `demo` is the built-in deterministic generator.

mod demo;
mod exec;

pub use demo::DemoBackend;
pub use exec::ExecBackend;

use serde_json::{Map, Value};
use shared::ids::IdKey;
use shared::job::{AgentSettings, Backend as BackendKind, HumanDuration};

use crate::setup::SetupError;

/// One backend call: an item, and which attempt at it this is.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub item: &'a Value,
    pub id: &'a IdKey,
    pub id_field: &'a str,
    /// The agent launch, from 1 (NIGHTSHIFT_ATTEMPT).
    pub launch_attempt: u32,
    /// The attempt at this item within this launch, from 1.
    pub item_attempt: u32,
}

/// Why one attempt at an item failed. The message is the reason written to
/// the failures file, so each variant carries its cause in its own text.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("cannot start {program:?}: {error}")]
    Spawn {
        program: String,
        error: std::io::Error,
    },
    #[error("item timeout after {after}{}", if *.exited { " (the command exited but its stdout stayed open)" } else { "" })]
    Timeout { after: HumanDuration, exited: bool },
    #[error("command exited with code {code}{}", quote_tail(.stdout_tail))]
    ExitCode { code: i32, stdout_tail: String },
    #[error("command was killed by signal {signal}{}", quote_tail(.stdout_tail))]
    Signal { signal: i32, stdout_tail: String },
    #[error("command printed nothing on stdout")]
    EmptyOutput,
    #[error("{what} failed: {error}")]
    Io {
        what: &'static str,
        error: std::io::Error,
    },
    #[error("lost track of the command (a helper thread stopped)")]
    Lost,
    #[error("demo failure")]
    Demo,
    #[error("the record has id {found} under {field:?}, expected {expected}")]
    WrongId {
        field: String,
        found: String,
        expected: IdKey,
    },
}

fn quote_tail(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; stdout ends with: {tail}")
    }
}

/// The backend chosen by agent.backend, ready to run.
pub enum Backend {
    Exec(ExecBackend),
    Demo(DemoBackend),
}

impl Backend {
    /// Checks the backend's settings and prepares it (the demo backend takes
    /// its memory here, at agent start).
    pub fn new(settings: &AgentSettings) -> Result<Self, SetupError> {
        match settings.backend {
            BackendKind::Exec => {
                let commands = settings
                    .command
                    .as_ref()
                    .map(|c| c.list())
                    .unwrap_or_default();
                let command = commands.first().copied().unwrap_or_default();
                ExecBackend::new(command, settings.item_timeout).map(Self::Exec)
            }
            BackendKind::Demo => DemoBackend::new(&settings.demo).map(Self::Demo),
        }
    }

    /// Runs one attempt at one item; the record is an object, its id not yet checked.
    pub fn call(&self, call: Call<'_>) -> Result<Map<String, Value>, AttemptError> {
        match self {
            Self::Exec(exec) => exec.call(call),
            Self::Demo(demo) => demo.call(call),
        }
    }
}
