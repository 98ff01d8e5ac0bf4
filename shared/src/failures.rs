//! `agent_NN.failures.jsonl`, beside each agent file: one line per item that
//! failed every attempt, `{"id": …, "reason": "…", "attempts": N}`, so a
//! person can see why. The shape and the reading live here; a line that
//! cannot be read (a torn last line) is skipped.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::IdKey;
use crate::records::Lines;

/// One failed item, as its agent wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureLine {
    pub id: Value,
    pub reason: String,
    #[serde(default)]
    pub attempts: u32,
}

/// `agent_01.jsonl` → `agent_01.failures.jsonl`; any other name gets the
/// suffix appended.
pub fn failures_path(output: &Path) -> PathBuf {
    crate::rundir::beside_agent_file(output, "failures")
}

/// Every readable failure of one failures file with its id's key, in file
/// order; a later line for the same id (a later attempt) wins. A missing file
/// has none.
pub fn read_failures(path: &Path) -> Vec<(IdKey, FailureLine)> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let lines = Lines::new(&bytes);
    let mut found: Vec<(IdKey, FailureLine)> = Vec::new();
    for (_, range) in lines.iter() {
        let Ok(line) = serde_json::from_slice::<FailureLine>(&bytes[range]) else {
            continue;
        };
        let Some(key) = IdKey::from_value(&line.id) else {
            continue;
        };
        found.retain(|(seen, _)| *seen != key);
        found.push((key, line));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_sits_beside_the_agent_file() {
        assert_eq!(
            failures_path(Path::new("RUN/s/o/agent_01.jsonl")),
            Path::new("RUN/s/o/agent_01.failures.jsonl")
        );
    }

    #[test]
    fn lines_are_read_the_last_one_per_id_winning_and_a_torn_one_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent_01.failures.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"reason\":\"exit code 1\",\"attempts\":2}\n{\"id\":7,\"reason\":\"timeout after 5s\",\"attempts\":3}\n{\"id\":\"a\",\"reason\":\"validation: missing field\",\"attempts\":1}\n{\"id\":\"b\",\"rea",
        )
        .expect("write");
        let read = read_failures(&path);
        let reasons: Vec<(&str, &str)> = read
            .iter()
            .map(|(key, line)| (key.as_str(), line.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("7", "timeout after 5s"),
                ("\"a\"", "validation: missing field")
            ]
        );
        assert!(read_failures(&dir.path().join("none")).is_empty());
    }
}
