//! RUN/supervisor.lock: one supervisor per run directory. An flock, so it is
//! released by the kernel when its holder dies, however it dies — a resume
//! can tell a live supervisor from a dead one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

use nix::fcntl::{Flock, FlockArg};

use shared::rundir::RunDir;

use crate::error::{Result, SupervisorError};

pub struct RunLock {
    _lock: Flock<File>,
}

impl RunLock {
    pub fn acquire(run: &RunDir) -> Result<Self> {
        let path = run.root().join("supervisor.lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(SupervisorError::io(format!(
                "cannot open {}",
                path.display()
            )))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, _)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(SupervisorError::Busy(
                    run.root().to_owned(),
                    holder.trim().to_owned(),
                ));
            }
        };
        let me = std::process::id().to_string();
        let written = lock
            .set_len(0)
            .and_then(|()| lock.seek(SeekFrom::Start(0)))
            .and_then(|_| lock.write_all(me.as_bytes()));
        written.map_err(SupervisorError::io(format!(
            "cannot write {}",
            path.display()
        )))?;
        Ok(Self { _lock: lock })
    }
}

/// The pid of the supervisor holding the run's lock, if one is alive.
pub fn holder(run: &RunDir) -> Option<i32> {
    let path = run.root().join("supervisor.lock");
    let file = OpenOptions::new().read(true).open(&path).ok()?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        // Nobody holds it (released when this lock is dropped).
        Ok(_free) => None,
        Err((mut file, _)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Some(pid.trim().parse().unwrap_or(0))
        }
    }
}
