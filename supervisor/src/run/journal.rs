//! events.jsonl: the run's append-only journal. One JSON object per line with
//! `ts` (RFC 3339, UTC, milliseconds), `event`, `agent` where one is concerned,
//! and the event's own fields.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::SystemTime;

use serde_json::{Map, Value};

pub struct EventLog {
    file: File,
    line: Vec<u8>,
}

impl EventLog {
    /// Opens the journal for appending; a torn last line (a supervisor killed
    /// mid-write) is cut off first, so the next event starts a line of its own.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        let bytes = std::fs::read(path)?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        if complete < bytes.len() {
            file.set_len(complete as u64)?;
        }
        Ok(Self {
            file,
            line: Vec::new(),
        })
    }

    /// Appends one event. Each event is one write(2) of a whole line, so a
    /// crash can tear at most the last line, which readers ignore.
    pub fn record(&mut self, event: &str, agent: Option<&str>, fields: Value) -> io::Result<()> {
        let mut object = Map::new();
        object.insert(
            "ts".into(),
            Value::String(humantime::format_rfc3339_millis(SystemTime::now()).to_string()),
        );
        object.insert("event".into(), Value::String(event.to_owned()));
        if let Some(agent) = agent {
            object.insert("agent".into(), Value::String(agent.to_owned()));
        }
        if let Value::Object(extra) = fields {
            object.extend(extra);
        }
        self.line.clear();
        serde_json::to_writer(&mut self.line, &Value::Object(object))?;
        self.line.push(b'\n');
        self.file.write_all(&self.line)
    }

    /// Makes everything recorded so far durable (at segment ends and the end
    /// of the run, the points a resume starts from).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Every readable event of a journal, in order. A line that is not JSON (a
/// torn last line after a crash) is skipped; a missing journal has no events.
pub fn read_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_torn_last_line_is_cut_off_before_the_next_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "{\"event\":\"launched\"}\n{\"event\":\"exi").expect("write");
        let mut log = EventLog::open(&path).expect("open");
        log.record("resumed", None, json!({"n": 1}))
            .expect("record");
        let events = read_events(&path);
        assert_eq!(
            events.len(),
            2,
            "the torn line is gone, the new event whole"
        );
        assert_eq!(events[1]["event"], "resumed");
        assert_eq!(events[1]["n"], 1);
        assert!(events[1]["ts"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
