//! What an agent launch is given: the environment variables of the agent
//! contract and the task file they point to, checked before any work starts.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

use shared::ids::IdKey;
use shared::records::record_id;
use shared::task::TaskFile;

pub const TASK_VAR: &str = "NIGHTSHIFT_TASK";
pub const OUTPUT_VAR: &str = "NIGHTSHIFT_OUTPUT";
pub const AGENT_VAR: &str = "NIGHTSHIFT_AGENT";
pub const ATTEMPT_VAR: &str = "NIGHTSHIFT_ATTEMPT";
pub use crate::permit::SOCKET_VAR;

/// Why the agent cannot start: every one of these means exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("environment variable {0} is not set")]
    MissingVar(&'static str),
    #[error("environment variable {var} is {value:?}, expected {expected}")]
    BadVar {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("cannot read the task file {path} (from {TASK_VAR})")]
    ReadTask {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the task file {path} is not a valid task")]
    ParseTask {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("item {index} of the task file {path} has no valid id under {field:?} (a string or an integer)")]
    BadItemId {
        path: PathBuf,
        index: usize,
        field: String,
    },
    #[error(
        "backend \"exec\" needs agent.command, a non-empty list like [\"python3\", \"gen.py\"]"
    )]
    NoCommand,
    #[error("cannot open the output file {path} (from {OUTPUT_VAR})")]
    OpenOutput {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot allocate agent.demo.memory ({bytes} bytes)")]
    DemoMemory { bytes: u64 },
    #[error(
        "agent.validate.reject has a pattern that is not a valid regular expression: {pattern:?}"
    )]
    BadPattern {
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error("agent.validate.command must be a non-empty list like [\"python3\", \"check.py\"]")]
    NoValidatorCommand,
    /// The LLM backends' settings or environment cannot work.
    #[error("{0}")]
    Llm(String),
}

/// Everything one launch of the agent works from.
#[derive(Debug)]
pub struct Setup {
    pub task: TaskFile,
    /// The id of each task item, in task order.
    pub ids: Vec<IdKey>,
    pub output: PathBuf,
    /// The agent's name, for messages.
    pub agent: String,
    /// Which launch of this agent this is, from 1: a relaunch after a crash
    /// must not replay the same demo decisions.
    pub attempt: u32,
    /// The rate broker's socket (NIGHTSHIFT_SOCKET); `None`: no permits.
    pub socket: Option<PathBuf>,
}

impl Setup {
    /// Reads the contract's variables from the process environment.
    pub fn from_env() -> Result<Self, SetupError> {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// Reads the contract's variables through `lookup`, so tests need not
    /// touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Self, SetupError> {
        let required = |var: &'static str| lookup(var).ok_or(SetupError::MissingVar(var));
        let task_path = PathBuf::from(required(TASK_VAR)?);
        let output = PathBuf::from(required(OUTPUT_VAR)?);
        let agent = required(AGENT_VAR)?.to_string_lossy().into_owned();
        let attempt = match lookup(ATTEMPT_VAR) {
            None => 1,
            Some(value) => parse_attempt(&value)?,
        };
        // An empty value is as good as none: there is no socket to reach.
        let socket = lookup(SOCKET_VAR)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from);
        let (task, ids) = load_task(task_path)?;
        Ok(Self {
            task,
            ids,
            output,
            agent,
            attempt,
            socket,
        })
    }
}

fn parse_attempt(value: &OsString) -> Result<u32, SetupError> {
    let text = value.to_string_lossy();
    match text.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(SetupError::BadVar {
            var: ATTEMPT_VAR,
            value: text.into_owned(),
            expected: "a whole number of at least 1",
        }),
    }
}

/// Loads the task and finds every item's id up front, so a bad task is
/// refused before anything is written.
fn load_task(path: PathBuf) -> Result<(TaskFile, Vec<IdKey>), SetupError> {
    // Read through a buffer, not whole: the items are kept as their text,
    // and the file's bytes would double that while it is parsed.
    let file = match std::fs::File::open(&path) {
        Ok(file) => std::io::BufReader::new(file),
        Err(source) => return Err(SetupError::ReadTask { path, source }),
    };
    let task: TaskFile = match serde_json::from_reader(file) {
        Ok(task) => task,
        Err(source) => return Err(SetupError::ParseTask { path, source }),
    };
    let mut ids = Vec::with_capacity(task.items.len());
    for (index, item) in task.items.iter().enumerate() {
        match record_id(item.get().as_bytes(), &task.id_field) {
            Ok(id) => ids.push(id),
            Err(_) => {
                return Err(SetupError::BadItemId {
                    path,
                    index: index + 1,
                    field: task.id_field.clone(),
                })
            }
        }
    }
    Ok((task, ids))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup<'a>(
        vars: &'a HashMap<&'static str, OsString>,
    ) -> impl Fn(&str) -> Option<OsString> + 'a {
        |name| vars.get(name).cloned()
    }

    #[test]
    fn missing_variables_are_named() {
        let vars = HashMap::new();
        let err = Setup::from_lookup(lookup(&vars)).expect_err("no variables set");
        assert!(err.to_string().contains(TASK_VAR), "{err}");
    }

    #[test]
    fn task_is_loaded_with_ids_and_attempt_defaults_to_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let task = dir.path().join("agent_01.task.json");
        std::fs::write(
            &task,
            r#"{"agent": "a", "id_field": "key", "items": [{"key": "x"}, {"key": 2}],
                "settings": {"backend": "demo"}}"#,
        )
        .expect("write task");
        let vars = HashMap::from([
            (TASK_VAR, task.into_os_string()),
            (OUTPUT_VAR, OsString::from("out.jsonl")),
            (AGENT_VAR, OsString::from("segment_01/orch_01/agent_01")),
        ]);
        let setup = Setup::from_lookup(lookup(&vars)).expect("valid setup");
        assert_eq!(setup.attempt, 1);
        assert_eq!(setup.socket, None);
        let ids: Vec<&str> = setup.ids.iter().map(IdKey::as_str).collect();
        assert_eq!(ids, ["\"x\"", "2"]);
    }

    #[test]
    fn items_without_ids_and_bad_attempts_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let task = dir.path().join("task.json");
        std::fs::write(
            &task,
            r#"{"agent": "a", "id_field": "id", "items": [{"id": 1}, {"id": 1.5}], "settings": {}}"#,
        )
        .expect("write task");
        let mut vars = HashMap::from([
            (TASK_VAR, task.into_os_string()),
            (OUTPUT_VAR, OsString::from("out.jsonl")),
            (AGENT_VAR, OsString::from("a")),
        ]);
        let err = Setup::from_lookup(lookup(&vars)).expect_err("float id");
        assert!(
            matches!(err, SetupError::BadItemId { index: 2, .. }),
            "{err}"
        );
        vars.insert(ATTEMPT_VAR, OsString::from("0"));
        let err = Setup::from_lookup(lookup(&vars)).expect_err("attempt 0");
        assert!(err.to_string().contains(ATTEMPT_VAR), "{err}");
    }
}
