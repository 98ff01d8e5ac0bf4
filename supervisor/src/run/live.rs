//! RUN/live.json: which agent processes are alive right now, each with its
//! start time and the boot it belongs to, so a later supervisor (resume) can
//! end a dead supervisor's leftovers without ever signalling a reused pid.
//!
//! The file is rewritten in place (not replaced), at most once per pass of the
//! event loop: replacing a file per launch churns inodes, which on some
//! filesystems makes every later file creation slow. Not fsynced either: the
//! file matters only while the machine that runs those processes stays up, and
//! then the page cache has it. A torn file (a supervisor killed mid-write)
//! reads as unknown, and resume falls back to its scan of the process table.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

use shared::rundir::RunDir;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LiveAgents {
    pub supervisor_pid: i32,
    pub boot_id: String,
    /// When this was written (RFC 3339).
    #[serde(default)]
    pub updated: String,
    pub agents: Vec<LiveAgent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveAgent {
    pub agent: String,
    /// 0 (and start_ticks 0) for an agent that runs as a Slurm job.
    pub pid: i32,
    pub start_ticks: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<u32>,
    pub attempt: u32,
    /// Records saved in its file, of `items`, at the last look.
    #[serde(default)]
    pub done: usize,
    #[serde(default)]
    pub items: usize,
    /// Resident memory of its whole tree at the last sample.
    #[serde(default)]
    pub rss: u64,
}

fn path(run: &RunDir) -> std::path::PathBuf {
    run.root().join("live.json")
}

impl LiveAgents {
    pub fn read(run: &RunDir) -> io::Result<Option<Self>> {
        match std::fs::read(path(run)) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The open live.json of a running supervisor.
pub struct LiveFile {
    file: File,
    buffer: Vec<u8>,
}

impl LiveFile {
    pub fn create(run: &RunDir) -> io::Result<Self> {
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path(run))?;
        Ok(Self {
            file,
            buffer: Vec::new(),
        })
    }

    pub fn write(&mut self, live: &LiveAgents) -> io::Result<()> {
        self.buffer.clear();
        serde_json::to_writer_pretty(&mut self.buffer, live)?;
        self.buffer.push(b'\n');
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&self.buffer)?;
        self.file.set_len(self.buffer.len() as u64)
    }
}
