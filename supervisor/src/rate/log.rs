//! RUN/rate.log: one JSON line per grant, backoff, change of a key's pace and
//! hold. Created at the first line (a run without limits takes no permits and
//! writes none), and bounded like an agent's log (`BoundedLog`).

use std::path::PathBuf;

use serde_json::Value;

use crate::bounded_log::BoundedLog;

pub struct RateLog {
    log: BoundedLog,
    /// A write failed: said once, then lines are dropped.
    failed: bool,
}

impl RateLog {
    pub fn new(path: PathBuf, limit: u64) -> Self {
        Self {
            log: BoundedLog::new(path, limit),
            failed: false,
        }
    }

    /// Writes one line, whole, in one write (`tail -f rate.log` and a crash
    /// both see it whole). The log is a record, not a duty: a full disk must
    /// not stop permits, so an error is reported once and the line is dropped.
    pub fn write(&mut self, line: &Value) {
        if self.failed {
            return;
        }
        let mut text = line.to_string();
        text.push('\n');
        if let Err(error) = self.log.append(text.as_bytes()) {
            self.failed = true;
            tracing::warn!(
                "{}: {error}; no more rate.log lines",
                self.log.path().display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_created_before_the_first_line_and_the_log_rotates_at_its_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rate.log");
        let mut log = RateLog::new(path.clone(), 100);
        assert!(!path.exists());
        for n in 0..10 {
            log.write(&serde_json::json!({"op": "grant", "n": n}));
        }
        let rotated = dir.path().join("rate.log.1");
        let now = std::fs::read_to_string(&path).expect("rate.log");
        let before = std::fs::read_to_string(&rotated).expect("rate.log.1");
        assert!(
            now.len() <= 100 && before.len() <= 100,
            "{now:?} {before:?}"
        );
        assert!(now.ends_with("{\"n\":9,\"op\":\"grant\"}\n"), "{now:?}");
        let lines: Vec<&str> = before.lines().chain(now.lines()).collect();
        assert!(lines.len() >= 4, "both files hold whole lines: {lines:?}");
        assert!(lines
            .iter()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()));
    }
}
