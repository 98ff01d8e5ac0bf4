//! events.jsonl: appending to the run's journal, and reading it back with its
//! problems logged. The events, their encoding and the fold are
//! `shared::journal`, which the tests and every reader share.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::SystemTime;

use shared::journal::{self, Event, Journal, JournalError};

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
    pub fn record(&mut self, agent: Option<&str>, event: &Event) -> io::Result<()> {
        self.line.clear();
        journal::encode(SystemTime::now(), agent, event, &mut self.line)?;
        self.file.write_all(&self.line)
    }

    /// Makes everything recorded so far durable (at segment ends and the end
    /// of the run, the points a resume starts from).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// The journal of a run, read and folded once. What had to be skipped (a
/// damaged line, an event from a newer version) is logged as a warning.
pub fn read_journal(path: &Path) -> Result<Journal, JournalError> {
    let journal = Journal::read(path)?;
    for problem in &journal.problems {
        tracing::warn!("{problem}");
    }
    Ok(journal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_off_before_the_next_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        std::fs::write(
            &path,
            "{\"event\":\"sighup-ignored\",\"ts\":\"2024-01-01T00:00:00.000Z\"}\n{\"event\":\"exi",
        )
        .expect("write");
        let mut log = EventLog::open(&path).expect("open");
        log.record(None, &Event::SegmentDone { segment: 1 })
            .expect("record");
        let journal = read_journal(&path).expect("read");
        assert!(journal.problems.is_empty(), "{:?}", journal.problems);
        let events: Vec<&Event> = journal.entries.iter().map(|e| &e.event).collect();
        assert_eq!(
            events,
            [&Event::SighupIgnored, &Event::SegmentDone { segment: 1 }],
            "the torn line is gone, the new event whole"
        );
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.ends_with("Z\"}\n"), "{text}");
    }
}
