//! The failures file beside an agent file (`agent_01.failures.jsonl`): one
//! line per item that failed every attempt, so a run's report can say why.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use shared::ids::IdKey;
use shared::money::Spend;

pub use shared::failures::failures_path;

/// Appends to the failures file, which is only created at the first failure.
pub struct FailureLog {
    path: PathBuf,
    file: Option<File>,
}

impl FailureLog {
    pub fn beside(output: &Path) -> Self {
        Self {
            path: failures_path(output),
            file: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `{"id", "reason", "attempts"}` (and the `usage` and `cost` of
    /// the attempts' answers, when there were any) as one line and fsyncs it.
    pub fn record(
        &mut self,
        id: &IdKey,
        reason: &str,
        attempts: u32,
        spend: Option<Spend>,
    ) -> io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            ),
        };
        let mut fields = Map::new();
        fields.insert("id".into(), id.to_value());
        fields.insert("reason".into(), json!(reason));
        fields.insert("attempts".into(), json!(attempts));
        if let Some(spend) = spend {
            spend.stamp(&mut fields);
        }
        let mut line = serde_json::to_vec(&Value::Object(fields))?;
        line.push(b'\n');
        file.write_all(&line)?;
        file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_replaces_the_jsonl_suffix() {
        assert_eq!(
            failures_path(Path::new("run/segment_01/orch_01/agent_01.jsonl")),
            Path::new("run/segment_01/orch_01/agent_01.failures.jsonl")
        );
        assert_eq!(
            failures_path(Path::new("out.txt")),
            Path::new("out.txt.failures.jsonl")
        );
    }

    #[test]
    fn lines_are_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = FailureLog::beside(&dir.path().join("agent_01.jsonl"));
        let id = IdKey::from_value(&json!("x")).expect("string id");
        log.record(&id, "demo failure", 3, None)
            .expect("first line");
        log.record(&id, "again", 1, None).expect("second line");
        let text = std::fs::read_to_string(log.path()).expect("read back");
        assert_eq!(
            text,
            "{\"attempts\":3,\"id\":\"x\",\"reason\":\"demo failure\"}\n\
             {\"attempts\":1,\"id\":\"x\",\"reason\":\"again\"}\n"
        );
    }
}
