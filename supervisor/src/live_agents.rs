//! RUN/live.json: which agent processes are alive right now, each with its
//! start time and the boot it belongs to, so a later supervisor (resume) can
//! end a dead supervisor's leftovers without ever signalling a reused pid.
//!
//! Written by rename but not fsynced: the file matters only while the machine
//! that runs those processes stays up, and then the page cache has it.

use std::io;

use serde::{Deserialize, Serialize};

use shared::rundir::RunDir;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LiveAgents {
    pub supervisor_pid: i32,
    pub boot_id: String,
    pub agents: Vec<LiveAgent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveAgent {
    pub agent: String,
    pub pid: i32,
    pub start_ticks: u64,
    pub attempt: u32,
}

impl LiveAgents {
    pub fn write(&self, run: &RunDir) -> io::Result<()> {
        let path = run.root().join("live.json");
        let temp = run.root().join(".live.json.tmp");
        std::fs::write(&temp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(temp, path)
    }

    pub fn read(run: &RunDir) -> io::Result<Option<Self>> {
        match std::fs::read(run.root().join("live.json")) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}
