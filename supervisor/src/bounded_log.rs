//! An append-only log file bounded in size: past its limit it is rotated to
//! NAME.1 (replacing the older one) and started afresh, so a chatty agent or
//! a long run never fills the disk with one file. Agent logs (agent_NN.log)
//! and the rate broker's rate.log are both kept this way.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub struct BoundedLog {
    path: PathBuf,
    limit: u64,
    /// The file and its length, once opened (appending: an earlier attempt's
    /// or session's lines are kept).
    open: Option<(File, u64)>,
}

impl BoundedLog {
    /// The log at `path`, created at its first write.
    pub fn new(path: PathBuf, limit: u64) -> Self {
        Self {
            path,
            limit: limit.max(1),
            open: None,
        }
    }

    /// The log at `path`, created (or opened) now.
    pub fn create(path: PathBuf, limit: u64) -> io::Result<Self> {
        let mut log = Self::new(path, limit);
        log.open = Some(open_log(&log.path)?);
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes` in one write (a line stays whole in one file),
    /// rotating first when they would take the file past its limit.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let (mut file, mut written) = match self.open.take() {
            Some(open) => open,
            None => open_log(&self.path)?,
        };
        if written > 0 && written + bytes.len() as u64 > self.limit {
            let mut rotated = self.path.as_os_str().to_owned();
            rotated.push(".1");
            std::fs::rename(&self.path, PathBuf::from(rotated))?;
            // The old file (now NAME.1) is closed as the new one takes its place.
            (file, written) = open_log(&self.path)?;
        }
        file.write_all(bytes)?;
        self.open = Some((file, written + bytes.len() as u64));
        Ok(())
    }
}

fn open_log(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let len = file.metadata()?.len();
    Ok((file, len))
}
