//! The agent side of the contract for the misbehaving helper programs in
//! src/bin: their arguments, their task, their agent file, and how they fail.
//! A helper never panics on what the OS can refuse: it says what failed and
//! exits with [`HELPER_FAILED`], so a test sees a message, not a backtrace.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Map, Value};

/// The exit code of a helper that could not do its job (not a chosen crash).
pub const HELPER_FAILED: i32 = 111;

/// Says what failed and exits with [`HELPER_FAILED`].
pub fn fail(what: impl std::fmt::Display) -> ! {
    let program = std::env::args().next().unwrap_or_default();
    let name = Path::new(&program)
        .file_name()
        .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned());
    eprintln!("{name}: {what}");
    std::process::exit(HELPER_FAILED)
}

/// The value of a result, or [`fail`] naming `what` was being done.
pub fn or_fail<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|e| fail(format!("{what}: {e}")))
}

/// A required environment variable of the agent contract.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| fail(format!("{name} is not set: run me as an agent")))
}

/// How long a stalled helper waits to be killed before it gives up by itself,
/// so one that a failed test left behind does not live on for ever.
pub const STALL_LIMIT: Duration = Duration::from_secs(600);

/// Sleeps until killed: what a stalled or hanging helper does last.
pub fn stall() -> ! {
    std::thread::sleep(STALL_LIMIT);
    fail(format!("nobody killed me in {STALL_LIMIT:?}"))
}

/// `--name value` options and `--name` flags; anything else is refused.
pub struct Args {
    pairs: Vec<(String, Option<String>)>,
}

impl Args {
    /// Parses this process's arguments: `flags` stand alone, `options` take a value.
    pub fn parse(flags: &[&str], options: &[&str]) -> Self {
        let mut pairs = Vec::new();
        let mut words = std::env::args().skip(1);
        while let Some(word) = words.next() {
            if flags.contains(&word.as_str()) {
                pairs.push((word, None));
            } else if options.contains(&word.as_str()) {
                let value = words
                    .next()
                    .unwrap_or_else(|| fail(format!("{word} needs a value")));
                pairs.push((word, Some(value)));
            } else {
                fail(format!(
                    "unknown argument `{word}` (flags: {flags:?}, options: {options:?})"
                ));
            }
        }
        Self { pairs }
    }

    pub fn flag(&self, name: &str) -> bool {
        self.pairs.iter().any(|(n, _)| n == name)
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The option's value parsed, or None when it is not given.
    pub fn value<T: FromStr>(&self, name: &str) -> Option<T> {
        self.text(name).map(|text| {
            text.parse()
                .unwrap_or_else(|_| fail(format!("{name}: cannot read `{text}`")))
        })
    }
}

/// The task file of this agent (NIGHTSHIFT_TASK).
pub struct Task {
    pub id_field: String,
    pub items: Vec<Value>,
}

impl Task {
    pub fn load() -> Self {
        let path = env("NIGHTSHIFT_TASK");
        let text = or_fail(std::fs::read_to_string(&path), &format!("read {path}"));
        let task: Value = or_fail(serde_json::from_str(&text), &format!("parse {path}"));
        let id_field = task["id_field"].as_str().unwrap_or("id").to_owned();
        let items = task["items"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| fail(format!("{path} holds no items")));
        Self { id_field, items }
    }

    /// The ids `output` does not hold yet, in task order.
    pub fn remaining(&self, output: &Output) -> Vec<Value> {
        self.items
            .iter()
            .map(|item| self.id(item).clone())
            .filter(|id| !output.is_saved(id))
            .collect()
    }

    /// The item's id (a string or a number, as the input had it).
    pub fn id<'i>(&self, item: &'i Value) -> &'i Value {
        &item[self.id_field.as_str()]
    }
}

/// This agent's record file (NIGHTSHIFT_OUTPUT), opened for appending.
pub struct Output {
    file: File,
    saved: HashSet<String>,
}

impl Output {
    /// Opens the file, remembering the ids of the complete lines it holds:
    /// a retried agent does only what is left.
    pub fn open(task: &Task) -> Self {
        let path = env("NIGHTSHIFT_OUTPUT");
        let saved = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter(|line| line.ends_with('\n'))
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .map(|record| record[task.id_field.as_str()].to_string())
            .collect();
        let file = or_fail(
            OpenOptions::new().create(true).append(true).open(&path),
            &format!("open {path}"),
        );
        Self { file, saved }
    }

    pub fn is_saved(&self, id: &Value) -> bool {
        self.saved.contains(&id.to_string())
    }

    /// Appends the record `{id_field: id}` as one line.
    pub fn save(&mut self, task: &Task, id: &Value) {
        let mut record = Map::new();
        record.insert(task.id_field.clone(), id.clone());
        let line = format!("{}\n", Value::Object(record));
        or_fail(self.file.write_all(line.as_bytes()), "append a record");
        self.saved.insert(id.to_string());
    }
}

/// An id as plain text: a string without its quotes, a number as written.
pub fn id_text(id: &Value) -> String {
    match id {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Logs a call for `id` to the `--calls FILE` option, when given: tests count
/// the lines to see that no item is generated twice.
pub fn log_call(args: &Args, id: &Value) {
    if let Some(calls) = args.text("--calls") {
        append_line(calls, id_text(id));
    }
}

/// Appends a line to a plain file (a pid list, a call log).
pub fn append_line(path: &str, line: impl std::fmt::Display) {
    let mut file = or_fail(
        OpenOptions::new().create(true).append(true).open(path),
        &format!("open {path}"),
    );
    or_fail(writeln!(file, "{line}"), &format!("append to {path}"));
}

/// Starts this same program again with `args`: how a helper gets children
/// and daemons without a shell in between.
pub fn spawn_self(args: &[&str], configure: impl FnOnce(&mut Command)) -> Child {
    let exe = or_fail(std::env::current_exe(), "find my own program");
    let mut command = Command::new(exe);
    command.args(args).stdin(Stdio::null());
    configure(&mut command);
    or_fail(command.spawn(), "start a child")
}

/// Starts this same program again and lets it go, returning its pid: for a
/// child that outlives this process or stalls beside it until both are killed.
pub fn start_self(args: &[&str], configure: impl FnOnce(&mut Command)) -> u32 {
    #[expect(
        clippy::zombie_processes,
        reason = "the child outlives us or is killed with us; nobody is left to wait"
    )]
    let child = spawn_self(args, configure);
    child.id()
}
