//! Platform calls with `unsafe` inside: starting a child in its own session,
//! signalling process groups, and the local clock.

use std::ffi::CString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Makes the child call setsid() before exec: it leads a new session and a new
/// process group whose id is its pid, so the whole group can be signalled
/// without touching the supervisor. With `cgroup_procs`, the child first moves
/// itself into that cgroup (by writing "0" to its cgroup.procs), so everything
/// it starts is born inside it.
pub fn start_in_new_session(command: &mut Command, cgroup_procs: Option<CString>) {
    // SAFETY: between fork and exec the closure only makes async-signal-safe
    // system calls (open, write, close, setsid) on memory prepared beforehand;
    // it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if let Some(path) = &cgroup_procs {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            nix::unistd::setsid().map(drop).map_err(io::Error::from)
        });
    }
}

/// Sends `signal` to every process of the group `pgid`. Returns false when the
/// group is empty (no process left).
pub fn signal_group(pgid: i32, signal: Signal) -> bool {
    !matches!(
        killpg(Pid::from_raw(pgid), signal),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Local wall-clock time as (year, month, day, hour, minute, second).
pub fn local_time_now() -> (i32, u32, u32, u32, u32, u32) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let seconds = libc::time_t::try_from(now).unwrap_or(0);
    // SAFETY: localtime_r writes only into the tm we own; a zeroed tm is valid.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&seconds, &mut tm).is_null() {
            return (1970, 1, 1, 0, 0, 0);
        }
        tm
    };
    (
        tm.tm_year + 1900,
        u32::try_from(tm.tm_mon + 1).unwrap_or(1),
        u32::try_from(tm.tm_mday).unwrap_or(1),
        u32::try_from(tm.tm_hour).unwrap_or(0),
        u32::try_from(tm.tm_min).unwrap_or(0),
        u32::try_from(tm.tm_sec).unwrap_or(0),
    )
}

/// `YYYYMMDD-HHMMSS` in local time, for default run directory names.
pub fn local_timestamp() -> String {
    let (y, mo, d, h, mi, s) = local_time_now();
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}
