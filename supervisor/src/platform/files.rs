//! File system calls whose system call differs by OS. Chosen when compiling,
//! not by NIGHTSHIFT_PLATFORM: they are not about processes or memory, and
//! each OS has one right call.

use std::fs::File;
use std::io;
use std::path::Path;

/// Writes everything cached for the filesystem holding `file` to disk.
/// Linux: syncfs (that filesystem only). Elsewhere: sync (every filesystem;
/// POSIX does not say it waits, macOS starts the writes and returns).
pub fn sync_filesystem(file: &File) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        nix::unistd::syncfs(file).map_err(io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        nix::unistd::sync();
        Ok(())
    }
}

/// True when `path` is on a tmpfs (memory only, this machine only).
pub fn is_tmpfs(path: &Path) -> bool {
    let Ok(stat) = nix::sys::statfs::statfs(path) else {
        return false;
    };
    #[cfg(target_os = "linux")]
    {
        stat.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC
    }
    #[cfg(not(target_os = "linux"))]
    {
        stat.filesystem_type_name() == "tmpfs"
    }
}

/// Raises this process's soft limit of open files to its hard limit: every
/// live agent holds a pipe and a log open, and every broker connection a
/// socket, so a thousand agents outgrow the usual soft limit of 1,024. Where
/// the system refuses the hard limit (macOS caps the soft one at OPEN_MAX),
/// 10,240 is asked for instead. Returns the limit in force.
pub fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    for wanted in [hard, hard.min(10_240)] {
        if wanted <= soft {
            return soft;
        }
        if setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).is_ok() {
            return wanted;
        }
    }
    soft
}
