//! agent_NN.log: an agent's stdout and stderr, through a pipe read by a small
//! thread of its own, so a child that floods its output, or closes it early,
//! never stalls the supervisor. The log is bounded: past the limit it is
//! rotated to agent_NN.log.1 (replacing the older one) and started afresh.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The write end goes to the child as stdout and stderr; the read end to the
/// log thread.
pub fn open_pipe() -> io::Result<(File, OwnedFd)> {
    // Close-on-exec, so agents started later do not hold this pipe open.
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    Ok((File::from(read), write))
}

/// Copies everything from `pipe` into the log at `path` until every writer has
/// closed it (the agent and anything it started with the same stdout).
pub fn spawn_log_thread(pipe: File, path: PathBuf, limit: u64) -> io::Result<()> {
    std::thread::Builder::new()
        .name("agent-log".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            if let Err(error) = copy_bounded(pipe, &path, limit) {
                tracing::warn!("agent log {}: {error}", path.display());
            }
        })
        .map(drop)
}

fn open_log(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

fn copy_bounded(mut pipe: File, path: &Path, limit: u64) -> io::Result<()> {
    let (mut log, mut written) = open_log(path)?;
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match pipe.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if written + n as u64 > limit.max(1) && written > 0 {
            drop(log);
            let mut rotated = path.as_os_str().to_owned();
            rotated.push(".1");
            std::fs::rename(path, PathBuf::from(rotated))?;
            (log, written) = open_log(path)?;
        }
        log.write_all(&buffer[..n])?;
        written += n as u64;
    }
}
