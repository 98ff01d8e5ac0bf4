//! Runs the built nightshift-agent on a task in a temporary folder, the way
//! the supervisor does: environment variables in, files and exit code out.

#![allow(dead_code)] // each test file uses its own part of these helpers

pub mod llm_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

pub const AGENT: &str = env!("CARGO_BIN_EXE_nightshift-agent");

pub struct Agent {
    pub dir: tempfile::TempDir,
}

impl Agent {
    pub fn new(items: &Value, settings: &Value) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder for the agent");
        let task = json!({
            "agent": "segment_01/orch_01/agent_01",
            "id_field": "id",
            "items": items,
            "settings": settings,
        });
        std::fs::write(dir.path().join("agent_01.task.json"), task.to_string())
            .expect("write the task file");
        Self { dir }
    }

    /// The task of a job with limits (`[rate]`, or an LLM backend): every
    /// call takes a permit from the first one on.
    pub fn taking_permits(self) -> Self {
        let path = self.path("agent_01.task.json");
        let text = std::fs::read_to_string(&path).expect("read the task file");
        let mut task: Value = serde_json::from_str(&text).expect("the task file is JSON");
        task["permits"] = json!(true);
        std::fs::write(&path, task.to_string()).expect("write the task file");
        self
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn output(&self) -> PathBuf {
        self.path("agent_01.jsonl")
    }

    pub fn failures(&self) -> PathBuf {
        self.path("agent_01.failures.jsonl")
    }

    /// Runs the agent in its folder, without a rate broker.
    pub fn run(&self) -> Output {
        self.command().output().expect("run nightshift-agent")
    }

    /// Runs the agent with NIGHTSHIFT_SOCKET set to `socket`.
    pub fn run_with_socket(&self, socket: &Path) -> Output {
        self.command()
            .env("NIGHTSHIFT_SOCKET", socket)
            .output()
            .expect("run nightshift-agent")
    }

    /// Runs the agent without a rate broker, with `vars` set.
    pub fn run_with_env(&self, vars: &[(&str, &str)]) -> Output {
        let mut command = self.command();
        for (name, value) in vars {
            command.env(name, value);
        }
        command.output().expect("run nightshift-agent")
    }

    fn command(&self) -> Command {
        let mut command = Command::new(AGENT);
        command
            .current_dir(self.dir.path())
            .env("NIGHTSHIFT_TASK", self.path("agent_01.task.json"))
            .env("NIGHTSHIFT_OUTPUT", self.output())
            .env("NIGHTSHIFT_AGENT", "segment_01/orch_01/agent_01")
            .env_remove("NIGHTSHIFT_ATTEMPT")
            .env_remove("NIGHTSHIFT_SOCKET");
        command
    }
}

/// The JSON lines of a file (none when it does not exist).
pub fn lines(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// How many lines a text file has (0 when it does not exist).
pub fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
