//! POSIX calls with `unsafe` inside: signalling process groups and the local
//! clock (the process table and memory are the `platform` module's).

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

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
