//! RUN/rate.log: one JSON line per grant, backoff, change of a key's pace and
//! hold. Created at the first line (a run without limits takes no permits and
//! writes none), and bounded like an agent's log: past the limit it is
//! rotated to rate.log.1 (replacing the older one) and started afresh.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use serde_json::Value;

pub struct RateLog {
    path: PathBuf,
    limit: u64,
    open: Option<(BufWriter<File>, u64)>,
    /// A write failed: said once, then lines are dropped.
    failed: bool,
}

impl RateLog {
    pub fn new(path: PathBuf, limit: u64) -> Self {
        Self {
            path,
            limit: limit.max(1),
            open: None,
            failed: false,
        }
    }

    /// Writes one line. The log is a record, not a duty: a full disk must not
    /// stop permits, so an error is reported once and the line is dropped.
    pub fn write(&mut self, line: &Value) {
        if self.failed {
            return;
        }
        if let Err(error) = self.append(line) {
            self.failed = true;
            self.open = None;
            tracing::warn!("{}: {error}; no more rate.log lines", self.path.display());
        }
    }

    fn append(&mut self, line: &Value) -> io::Result<()> {
        let mut text = line.to_string();
        text.push('\n');
        let (mut writer, mut written) = match self.open.take() {
            Some(open) => open,
            None => self.open_log()?,
        };
        if written > 0 && written + text.len() as u64 > self.limit {
            writer.flush()?;
            drop(writer);
            let mut rotated = self.path.as_os_str().to_owned();
            rotated.push(".1");
            std::fs::rename(&self.path, PathBuf::from(rotated))?;
            (writer, written) = self.open_log()?;
        }
        writer.write_all(text.as_bytes())?;
        // Flushed per line: `tail -f rate.log` and a crash both see it whole.
        writer.flush()?;
        self.open = Some((writer, written + text.len() as u64));
        Ok(())
    }

    fn open_log(&self) -> io::Result<(BufWriter<File>, u64)> {
        let file = File::options().create(true).append(true).open(&self.path)?;
        let len = file.metadata()?.len();
        Ok((BufWriter::new(file), len))
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
