//! A fluent builder for job files: a test says what its job is, the `toml`
//! crate writes it, so paths and commands with quotes or backslashes survive.
//!
//! ```no_run
//! # let dir = std::path::Path::new(".");
//! use nightshift_tests::Job;
//! Job::new("items.jsonl")
//!     .layout(2, 1, 2)
//!     .exec(["sh", "-c", "cat"])
//!     .kill_grace("1s")
//!     .max_parallel(2)
//!     .write(dir);
//! ```
//!
//! Tests of bad job files keep their literal text: there the text is the point.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// A job file being built. Every setter names the key it writes, as DESIGN.md
/// spells it, so a test reads like the job file it stands for.
#[derive(Debug, Clone)]
#[must_use]
pub struct Job {
    doc: Table,
}

impl Job {
    /// A job over this input file (`[input] path`), relative to the job's folder.
    pub fn new(input: impl AsRef<Path>) -> Self {
        Self { doc: Table::new() }.set(&["input"], "path", path_text(input.as_ref()))
    }

    /// `name` (the run's name; default: the job file's stem).
    pub fn name(self, name: &str) -> Self {
        self.set(&[], "name", name)
    }

    /// A key of `[input]` besides its path: `format`, `id`.
    pub fn input(self, key: &str, value: impl Into<Value>) -> Self {
        self.set(&["input"], key, value)
    }

    /// `[layout]` as its three counts.
    pub fn layout(self, segments: u32, orchestrators: u32, agents: u32) -> Self {
        self.set(&["layout"], "segments", segments)
            .set(&["layout"], "orchestrators", orchestrators)
            .set(&["layout"], "agents", agents)
    }

    /// `[layout] items_per_agent` (with the other counts left to the planner).
    pub fn items_per_agent(self, items: u32) -> Self {
        self.set(&["layout"], "items_per_agent", items)
    }

    /// `backend = "demo"`: nightshift-agent's built-in generator.
    pub fn demo(self) -> Self {
        self.agent("backend", "demo")
    }

    /// `[agent.demo] latency`, per item.
    pub fn latency(self, latency: &str) -> Self {
        self.set(&["agent", "demo"], "latency", latency)
    }

    /// `[agent.demo] fail_rate`: the share of items whose generation fails.
    pub fn fail_rate(self, rate: f64) -> Self {
        self.set(&["agent", "demo"], "fail_rate", rate)
    }

    /// `[agent.demo] crash_rate`: the share of items at which the agent aborts.
    pub fn crash_rate(self, rate: f64) -> Self {
        self.set(&["agent", "demo"], "crash_rate", rate)
    }

    /// `[agent.demo] memory`: what a demo agent holds while it works.
    pub fn demo_memory(self, size: &str) -> Self {
        self.set(&["agent", "demo"], "memory", size)
    }

    /// `backend = "exec"` running this command once per item.
    pub fn exec<S: AsRef<str>>(self, command: impl IntoIterator<Item = S>) -> Self {
        self.agent("backend", "exec")
            .agent("command", strings(command))
    }

    /// `backend = "exec"` with fallbacks: each command is tried after the one before.
    pub fn exec_fallbacks<S: AsRef<str>, C: IntoIterator<Item = S>>(
        self,
        commands: impl IntoIterator<Item = C>,
    ) -> Self {
        let commands: Vec<Value> = commands.into_iter().map(strings).collect();
        self.agent("backend", "exec").agent("command", commands)
    }

    /// `program`: this program instead of nightshift-agent.
    pub fn program<S: AsRef<str>>(self, command: impl IntoIterator<Item = S>) -> Self {
        self.agent("program", strings(command))
    }

    /// One variable of `[agent] env`.
    pub fn env(self, name: &str, value: &str) -> Self {
        self.set(&["agent", "env"], name, value)
    }

    /// Any key of `[agent]`; the setters below cover the common ones.
    pub fn agent(self, key: &str, value: impl Into<Value>) -> Self {
        self.set(&["agent"], key, value)
    }

    pub fn timeout(self, timeout: &str) -> Self {
        self.agent("timeout", timeout)
    }

    pub fn stall_timeout(self, timeout: &str) -> Self {
        self.agent("stall_timeout", timeout)
    }

    pub fn item_timeout(self, timeout: &str) -> Self {
        self.agent("item_timeout", timeout)
    }

    pub fn kill_grace(self, grace: &str) -> Self {
        self.agent("kill_grace", grace)
    }

    pub fn memory_limit(self, size: &str) -> Self {
        self.agent("memory_limit", size)
    }

    pub fn memory_estimate(self, size: &str) -> Self {
        self.agent("memory_estimate", size)
    }

    pub fn retries(self, retries: u32) -> Self {
        self.agent("retries", retries)
    }

    pub fn retry_backoff(self, backoff: &str) -> Self {
        self.agent("retry_backoff", backoff)
    }

    pub fn item_retries(self, retries: u32) -> Self {
        self.agent("item_retries", retries)
    }

    /// A key of `[agent.validate]`: `required`, `reject`, …
    pub fn validate(self, key: &str, value: impl Into<Value>) -> Self {
        self.set(&["agent", "validate"], key, value)
    }

    /// `backend = "openai"` against `base_url` (…/v1) asking for `model`.
    pub fn openai(self, base_url: &str, model: &str) -> Self {
        self.agent("backend", "openai")
            .llm("base_url", base_url)
            .llm("model", model)
    }

    /// `backend = "anthropic"` against `base_url` (…/v1) asking for `model`.
    pub fn anthropic(self, base_url: &str, model: &str) -> Self {
        self.agent("backend", "anthropic")
            .llm("base_url", base_url)
            .llm("model", model)
    }

    /// Any key of `[agent.llm]`: `api_key_env`, `prompt`, `request_timeout`, …
    pub fn llm(self, key: &str, value: impl Into<Value>) -> Self {
        self.set(&["agent", "llm"], key, value)
    }

    /// `[agent] concurrency`: requests in flight in each agent process.
    pub fn concurrency(self, requests: u32) -> Self {
        self.agent("concurrency", requests)
    }

    /// Any key of `[limits]`; the setters below cover the common ones.
    pub fn limit(self, key: &str, value: impl Into<Value>) -> Self {
        self.set(&["limits"], key, value)
    }

    pub fn max_parallel(self, agents: u32) -> Self {
        self.limit("max_parallel", agents)
    }

    pub fn sample_interval(self, interval: &str) -> Self {
        self.limit("sample_interval", interval)
    }

    pub fn ram_ceiling(self, size: &str) -> Self {
        self.limit("ram_ceiling", size)
    }

    pub fn memory_enforcement(self, how: &str) -> Self {
        self.limit("memory_enforcement", how)
    }

    /// A key of `[schedule]`: `warmup`, `wave_size`, `drain`, …
    pub fn schedule(self, key: &str, value: impl Into<Value>) -> Self {
        self.set(&["schedule"], key, value)
    }

    /// A key of `[rate]`: `requests_per_minute`, `burst`, …
    pub fn rate(self, key: &str, value: impl Into<Value>) -> Self {
        self.set(&["rate"], key, value)
    }

    /// `[output]`: a copy of the final output at `path`, in `format`.
    pub fn output(self, path: impl AsRef<Path>, format: &str) -> Self {
        self.set(&["output"], "path", path_text(path.as_ref()))
            .set(&["output"], "format", format)
    }

    /// A key of `[executor]`: `kind`, `poll_interval`, `partition`, …
    pub fn executor(self, key: &str, value: impl Into<Value>) -> Self {
        self.set(&["executor"], key, value)
    }

    /// `[notify] command`: run once when the run ends, the summary on stdin.
    pub fn notify<S: AsRef<str>>(self, command: impl IntoIterator<Item = S>) -> Self {
        self.set(&["notify"], "command", strings(command))
    }

    /// `[notify] timeout`: how long the notify command may take.
    pub fn notify_timeout(self, timeout: &str) -> Self {
        self.set(&["notify"], "timeout", timeout)
    }

    /// The escape hatch for a key no setter names: `line` is TOML (`key = value`)
    /// added to the dotted `section` ("" for the top level).
    pub fn raw(self, section: &str, line: &str) -> Self {
        let parsed: Table = line
            .parse()
            .unwrap_or_else(|e| panic!("raw job line `{line}` is not TOML: {e}"));
        let path: Vec<&str> = section.split('.').filter(|s| !s.is_empty()).collect();
        parsed
            .into_iter()
            .fold(self, |job, (key, value)| job.set(&path, &key, value))
    }

    /// The job file's text.
    pub fn render(&self) -> String {
        toml::to_string(&self.doc).expect("a job table renders as TOML")
    }

    /// Writes `dir/job.toml` and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        self.write_as(dir, "job.toml")
    }

    /// Writes the job under another file name in `dir`.
    pub fn write_as(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.render())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Sets `key` in the table at `path`, creating the tables on the way.
    fn set(mut self, path: &[&str], key: &str, value: impl Into<Value>) -> Self {
        let mut table = &mut self.doc;
        for name in path {
            let entry = table
                .entry((*name).to_owned())
                .or_insert_with(|| Value::Table(Table::new()));
            table = match entry {
                Value::Table(inner) => inner,
                other => panic!("job key `{name}` is {other}, not a table"),
            };
        }
        table.insert(key.to_owned(), value.into());
        self
    }
}

fn strings<S: AsRef<str>>(words: impl IntoIterator<Item = S>) -> Value {
    Value::Array(
        words
            .into_iter()
            .map(|w| Value::String(w.as_ref().to_owned()))
            .collect(),
    )
}

fn path_text(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("test path {} is not UTF-8", path.display()))
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_backslashes_survive() {
        let tricky = r#"C:\dir "quoted"\agent"#;
        let text = Job::new(tricky).program([tricky, "--flag"]).render();
        let back: Table = text.parse().expect("valid TOML");
        assert_eq!(back["input"]["path"].as_str(), Some(tricky));
        assert_eq!(back["agent"]["program"][0].as_str(), Some(tricky));
    }

    #[test]
    fn raw_lines_join_their_section() {
        let text = Job::new("items.jsonl")
            .max_parallel(2)
            .raw("limits", "agent_log_limit = \"1MiB\"")
            .render();
        let back: Table = text.parse().expect("valid TOML");
        assert_eq!(back["limits"]["max_parallel"].as_integer(), Some(2));
        assert_eq!(back["limits"]["agent_log_limit"].as_str(), Some("1MiB"));
    }
}
