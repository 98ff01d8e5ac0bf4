//! RUN/rate.log: one JSON line per grant, backoff, change of a key's pace and
//! hold. Created at the first line (a run without limits takes no permits and
//! writes none), and bounded like an agent's log (`BoundedLog`).

use std::path::PathBuf;

use crate::bounded_log::BoundedLog;

/// Lines are written together once this many bytes wait.
const BATCH: usize = 64 * 1024;

pub struct RateLog {
    log: BoundedLog,
    /// Whole lines not written yet: the broker's thread writes them when it
    /// has answered what it was woken for (`flush`), so a burst of permits
    /// costs one write, not one per line.
    pending: Vec<u8>,
    /// A write failed: said once, then lines are dropped.
    failed: bool,
}

impl RateLog {
    pub fn new(path: PathBuf, limit: u64) -> Self {
        Self {
            log: BoundedLog::new(path, limit),
            pending: Vec::new(),
            failed: false,
        }
    }

    /// Adds one line; it is written, whole, at the next `flush`.
    pub fn write<T: serde::Serialize + ?Sized>(&mut self, line: &T) {
        if self.failed {
            return;
        }
        // Serialized straight into the pending bytes: no string per line.
        if serde_json::to_writer(&mut self.pending, line).is_ok() {
            self.pending.push(b'\n');
        }
        if self.pending.len() >= BATCH {
            self.flush();
        }
    }

    /// Writes the pending lines in one write (`tail -f rate.log` and a
    /// crash both see whole lines). The log is a record, not a duty: a full
    /// disk must not stop permits, so an error is reported once and lines
    /// are dropped from then on.
    pub fn flush(&mut self) {
        if self.pending.is_empty() || self.failed {
            self.pending.clear();
            return;
        }
        if let Err(error) = self.log.append(&self.pending) {
            self.failed = true;
            tracing::warn!(
                "{}: {error}; no more rate.log lines",
                self.log.path().display()
            );
        }
        self.pending.clear();
    }
}

impl Drop for RateLog {
    fn drop(&mut self) {
        self.flush();
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
            log.flush();
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
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    }
}
