//! Reading a job file: TOML into [`JobSettings`], then the checks that span
//! several keys. Every error names the file, the line and column, and the key.

use std::fmt;
use std::path::{Path, PathBuf};

use super::llm;
use super::settings::{Backend, JobSettings};

/// A job file ready to run: its settings and where it came from.
#[derive(Debug, Clone)]
pub struct Job {
    /// Absolute path of the job file.
    pub path: PathBuf,
    /// The job file's folder: relative paths and agents' working folder.
    pub dir: PathBuf,
    pub name: String,
    pub settings: JobSettings,
    /// The file's text, frozen into the run directory as job.toml.
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cannot read job file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Box<JobFileError>),
    #[error("{}: agent.llm.api_key_env names {}, not set in this environment (or empty); export {} and start again", .path.display(), quoted(.vars), if .vars.len() == 1 { "it" } else { "them" })]
    MissingApiKeys { path: PathBuf, vars: Vec<String> },
}

fn quoted(vars: &[String]) -> String {
    vars.iter()
        .map(|var| format!("${var}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A bad job file: where, which key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFileError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for JobFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.path.display(), self.line, self.column)?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl Job {
    /// Reads and checks a job file.
    pub fn load(path: &Path) -> Result<Self, JobError> {
        let text = std::fs::read_to_string(path).map_err(|source| JobError::Read {
            path: path.to_owned(),
            source,
        })?;
        let absolute = std::path::absolute(path).map_err(|source| JobError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_text(&absolute, text)
    }

    /// Parses job file text; `path` is used for messages and relative paths.
    pub fn from_text(path: &Path, text: String) -> Result<Self, JobError> {
        let settings: JobSettings = toml::from_str(&text)
            .map_err(|error| JobError::Invalid(Box::new(locate_toml_error(path, &text, error))))?;
        let dir = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        let name = match &settings.name {
            Some(name) => name.clone(),
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "job".to_owned()),
        };
        let mut job = Self {
            path: path.to_owned(),
            dir,
            name,
            settings,
            text,
        };
        job.check()?;
        if let Some(llm) = job.settings.agent.llm.as_mut() {
            llm::load_files(llm, &job.dir).map_err(|p| {
                JobError::Invalid(Box::new(locate_key(
                    &job.path, &job.text, &p.table, p.key, p.message,
                )))
            })?;
        }
        Ok(job)
    }

    /// A path from the job file, resolved against the job file's folder.
    pub fn resolve(&self, relative: &Path) -> PathBuf {
        self.dir.join(relative)
    }

    /// Checks that involve more than one key, or facts TOML types cannot express.
    fn check(&self) -> Result<(), JobError> {
        let s = &self.settings;
        let invalid = |table: &str, key: &str, message: String| {
            JobError::Invalid(Box::new(locate_key(
                &self.path, &self.text, table, key, message,
            )))
        };
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            return Err(invalid(
                "",
                "name",
                format!(
                    "{:?} cannot name a run folder; use letters, digits, '-' and '_'",
                    self.name
                ),
            ));
        }
        if s.input.id.is_empty() {
            return Err(invalid(
                "input",
                "id",
                "the id field name cannot be empty".into(),
            ));
        }
        if self.is_pipeline() {
            // Each stage is checked as the one-stage job it runs as.
            return super::stages::check(self);
        }
        let l = &s.layout;
        if l.segments.is_some()
            && l.orchestrators.is_some()
            && l.agents.is_some()
            && l.items_per_agent.is_some()
        {
            return Err(invalid(
                "layout",
                "items_per_agent",
                "give the three counts (segments, orchestrators, agents) or items_per_agent with at most two of them, not all four".into(),
            ));
        }
        let a = &s.agent;
        if let Some(program) = &a.program {
            if program.is_empty() || program[0].is_empty() {
                return Err(invalid(
                    "agent",
                    "program",
                    "the program list is empty; write it like [\"my-agent\", \"--flag\"]".into(),
                ));
            }
        } else if a.backend == Backend::Exec {
            match &a.command {
                None => {
                    return Err(invalid(
                        "agent",
                        "backend",
                        "the exec backend needs agent.command, a list like [\"python3\", \"gen.py\"] (or set backend = \"demo\", or agent.program)".into(),
                    ))
                }
                Some(commands) if commands.list().is_empty() || commands.list().iter().any(|c| c.is_empty() || c[0].is_empty()) => {
                    return Err(invalid(
                        "agent",
                        "command",
                        "a command is empty; write it like [\"python3\", \"gen.py\"], or a list of such commands".into(),
                    ))
                }
                Some(_) => {}
            }
        }
        if let (Some(limit), Some(estimate)) = (a.memory_limit, a.memory_estimate) {
            if estimate > limit {
                return Err(invalid(
                    "agent",
                    "memory_estimate",
                    format!("memory_estimate ({estimate}) is above memory_limit ({limit})"),
                ));
            }
        }
        let env_names: Vec<&String> = a.env.keys().collect();
        llm::check(a.backend, a.llm.as_ref(), &env_names)
            .and_then(|()| super::price::check(s))
            .map_err(|p| {
                JobError::Invalid(Box::new(locate_key(
                    &self.path, &self.text, &p.table, p.key, p.message,
                )))
            })?;
        if let Some(rate) = &s.rate {
            let limits = [
                rate.requests_per_minute.is_some(),
                rate.tokens_per_minute.is_some(),
                rate.requests_per_day.is_some(),
                rate.tokens_per_day.is_some(),
            ];
            if !limits.contains(&true) {
                return Err(invalid(
                    "rate",
                    "",
                    "[rate] needs at least one of requests_per_minute, tokens_per_minute, requests_per_day, tokens_per_day".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Turns a TOML/serde error into file:line:column plus the key it concerns.
fn locate_toml_error(path: &Path, text: &str, mut error: toml::de::Error) -> JobFileError {
    let (line, column) = error
        .span()
        .map(|span| line_column(text, span.start))
        .unwrap_or((1, 1));
    let message = error.message().trim().to_owned();
    // Without its input, toml's Display appends "in `table.key`": the key path.
    error.set_input(None);
    let rendered = error.to_string();
    let toml_key = rendered
        .lines()
        .find_map(|l| {
            l.strip_prefix("in `")
                .and_then(|rest| rest.strip_suffix('`'))
        })
        .map(str::to_owned);
    // For an unknown key toml names only its table; the line names the key itself.
    let line_key = key_at_line(text, line);
    let key = match (toml_key, line_key) {
        (Some(t), Some(l)) if l.starts_with(&t) => Some(l),
        (Some(t), _) => Some(t),
        (None, l) => l,
    };
    JobFileError {
        path: path.to_owned(),
        line,
        column,
        key,
        message,
    }
}

/// 1-based line and column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

/// The dotted key defined on a line: the table header above it plus the key.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let mut table = String::new();
    for (index, content) in text.lines().enumerate() {
        let trimmed = content.trim();
        if let Some(header) = table_header(trimmed) {
            table = header.to_owned();
        }
        if index + 1 == line {
            if table_header(trimmed).is_some() {
                return Some(table);
            }
            let key = trimmed.split_once('=')?.0.trim().trim_matches('"');
            return Some(if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            });
        }
    }
    None
}

fn table_header(trimmed: &str) -> Option<&str> {
    let inner = trimmed.strip_prefix('[')?;
    let end = inner.find(']')?;
    Some(inner[..end].trim_matches(['[', ' ']))
}

/// An error about a whole table (`[agent]`), located at its header.
pub(super) fn locate_table(path: &Path, text: &str, table: &str, message: String) -> JobFileError {
    locate_key(path, text, table, "", message)
}

/// An error about `table.key` of the `stage`-th (0-based) `[[stage]]` entry:
/// `table` is `stage` or one of its subtables (`stage.agent`). Located at the
/// key's line, or the subtable's header, or the entry's `[[stage]]` header.
pub(super) fn locate_in_stage(
    path: &Path,
    text: &str,
    stage: usize,
    table: &str,
    key: &str,
    message: String,
) -> JobFileError {
    let mut entries = 0usize;
    let mut current = String::new();
    let (mut entry_line, mut table_line, mut found) = (None, None, None);
    for (index, content) in text.lines().enumerate() {
        let trimmed = content.trim();
        if let Some(header) = table_header(trimmed) {
            current = header.to_owned();
            if trimmed.starts_with("[[") && header == "stage" {
                entries += 1;
                if entries == stage + 1 {
                    entry_line = Some(index + 1);
                }
            }
            if entries == stage + 1 && current == table {
                table_line.get_or_insert(index + 1);
            }
            continue;
        }
        if entries == stage + 1 && current == table && !key.is_empty() {
            if let Some((k, _)) = trimmed.split_once('=') {
                if k.trim().trim_matches('"') == key {
                    let column = content.len() - content.trim_start().len() + 1;
                    found = Some((index + 1, column));
                    break;
                }
            }
        }
    }
    let (line, column) = found
        .or(table_line.map(|l| (l, 1)))
        .or(entry_line.map(|l| (l, 1)))
        .unwrap_or((1, 1));
    JobFileError {
        path: path.to_owned(),
        line,
        column,
        key: Some(if key.is_empty() {
            table.to_owned()
        } else {
            format!("{table}.{key}")
        }),
        message,
    }
}

/// An error about `table.key`, located at the key's line (or the table's header,
/// or the top of the file when the key is not written).
fn locate_key(path: &Path, text: &str, table: &str, key: &str, message: String) -> JobFileError {
    let mut current = String::new();
    let mut header_line = None;
    let mut found = None;
    for (index, content) in text.lines().enumerate() {
        let trimmed = content.trim();
        if let Some(header) = table_header(trimmed) {
            current = header.to_owned();
            if current == table {
                header_line.get_or_insert(index + 1);
            }
            continue;
        }
        if current == table && !key.is_empty() {
            if let Some((k, _)) = trimmed.split_once('=') {
                if k.trim().trim_matches('"') == key {
                    let column = content.len() - content.trim_start().len() + 1;
                    found = Some((index + 1, column));
                    break;
                }
            }
        }
    }
    let (line, column) = found.or(header_line.map(|l| (l, 1))).unwrap_or((1, 1));
    let dotted = match (table.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (false, true) => table.to_owned(),
        (false, false) => format!("{table}.{key}"),
    };
    JobFileError {
        path: path.to_owned(),
        line,
        column,
        key: Some(dotted),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Job, JobError> {
        Job::from_text(Path::new("/jobs/job.toml"), text.to_owned())
    }

    fn invalid(text: &str) -> JobFileError {
        match load(text) {
            Err(JobError::Invalid(e)) => *e,
            other => panic!("expected an invalid job, got {other:?}"),
        }
    }

    #[test]
    fn minimal_job_gets_defaults() {
        let job =
            load("[input]\npath = \"items.jsonl\"\n[agent]\nbackend = \"demo\"\n").expect("valid");
        assert_eq!(job.name, "job");
        assert_eq!(job.settings.input.id, "id");
        assert_eq!(job.settings.agent.kill_grace.get().as_secs(), 10);
        assert_eq!(job.settings.agent.concurrency.get(), 1);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = invalid("[input]\npath = \"x\"\n\n[agent]\nbackend = \"demo\"\ntimout = \"5m\"\n");
        assert_eq!(e.line, 6);
        assert_eq!(e.key.as_deref(), Some("agent.timout"), "{e}");
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn bad_duration_names_line_and_key() {
        let e = invalid(
            "[input]\npath = \"x\"\n[agent]\nbackend = \"demo\"\nstall_timeout = \"5 parsecs\"\n",
        );
        assert_eq!(e.line, 5);
        assert_eq!(e.key.as_deref(), Some("agent.stall_timeout"), "{e}");
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let e = invalid("[input]\npath = \"x\"\n[limits]\nmax_parallel = \"many\"\n");
        assert_eq!(e.line, 4);
        assert_eq!(e.key.as_deref(), Some("limits.max_parallel"), "{e}");
    }

    #[test]
    fn concurrency_defaults_to_one_and_zero_is_refused_by_key() {
        let job = load("[input]\npath = \"x\"\n[agent]\nbackend = \"demo\"\nconcurrency = 4\n")
            .expect("valid");
        assert_eq!(job.settings.agent.concurrency.get(), 4);
        // Task files carry it only when it is not the default, so they stay
        // as they were for jobs that do not set it.
        let task_settings = |job: &Job| serde_json::to_value(&job.settings.agent).expect("JSON");
        assert_eq!(task_settings(&job)["concurrency"], 4);
        let default = load("[input]\npath = \"x\"\n[agent]\nbackend = \"demo\"\n").expect("valid");
        assert!(task_settings(&default).get("concurrency").is_none());
        let e = invalid("[input]\npath = \"x\"\n[agent]\nbackend = \"demo\"\nconcurrency = 0\n");
        assert_eq!(e.line, 5);
        assert_eq!(e.key.as_deref(), Some("agent.concurrency"), "{e}");
        assert!(e.message.contains("at least 1"), "{e}");
    }

    #[test]
    fn exec_without_command_is_refused() {
        let e = invalid("[input]\npath = \"x\"\n[agent]\nbackend = \"exec\"\n");
        assert_eq!(e.line, 4);
        assert_eq!(e.key.as_deref(), Some("agent.backend"));
    }

    #[test]
    fn all_four_layout_keys_are_refused() {
        let e = invalid("[input]\npath = \"x\"\n[agent]\nbackend = \"demo\"\n[layout]\nsegments = 1\norchestrators = 1\nagents = 1\nitems_per_agent = 3\n");
        assert_eq!(e.line, 9);
    }
}
