//! The platform seam: every OS-specific call the supervisor makes about
//! processes and memory goes through here — the process table (a process's
//! parent, group, session, start time and resident memory, its children, its
//! environment), the machine's available memory, the boot's identity, the
//! child subreaper, and memory cgroups.
//!
//! Two implementations, chosen once per process by [`select`]:
//! - `linux`: /proc and cgroup files read directly (the fast path);
//! - `portable`: `sysinfo` and POSIX calls only (getpgid, getsid), what macOS
//!   and the BSDs have. No subreaper and no memory cgroups: escaped daemons are
//!   found by process group, session and environment; memory is sampled only.
//!
//! On Linux `NIGHTSHIFT_PLATFORM=portable` selects the portable one, so its
//! behaviour is tested here; elsewhere it is the only one compiled.

#[cfg(target_os = "linux")]
pub mod cgroup;
#[cfg(not(target_os = "linux"))]
#[path = "no_cgroup.rs"]
pub mod cgroup;
pub mod files;
#[cfg(target_os = "linux")]
mod linux;
mod portable;
mod table;

use std::sync::OnceLock;

pub use table::ProcessTable;

/// The environment variable that picks the implementation.
pub const ENV_VAR: &str = "NIGHTSHIFT_PLATFORM";

/// Which implementation answers the process and memory calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    /// /proc and cgroups (Linux only).
    Linux,
    /// sysinfo and POSIX calls (every Unix).
    Portable,
}

impl Implementation {
    /// The name used by NIGHTSHIFT_PLATFORM, the start message, events.jsonl
    /// and report.json.
    pub fn name(self) -> &'static str {
        match self {
            Self::Linux => "linux",
            Self::Portable => "portable",
        }
    }

    /// The run's start message about it: what it reads, and what holds less
    /// than under the Linux implementation.
    pub fn describe(self) -> String {
        match self {
            Self::Linux => "platform: linux (/proc, memory cgroups where allowed, child subreaper)".to_owned(),
            Self::Portable => format!(
                "platform: portable (sysinfo and POSIX calls{}): no subreaper (daemons that escape an agent's tree are found at segment end by process group, session and NIGHTSHIFT_RUN_DIR where readable) and no memory cgroups (memory limits are enforced by sampling only)",
                if cfg!(target_os = "linux") { ", selected by NIGHTSHIFT_PLATFORM" } else { "" }
            ),
        }
    }

    /// The default of this build: Linux where it is compiled.
    fn native() -> Self {
        if cfg!(target_os = "linux") {
            Self::Linux
        } else {
            Self::Portable
        }
    }
}

/// An unusable NIGHTSHIFT_PLATFORM.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(
        "{ENV_VAR}={0:?}: unknown platform implementation (expected \"linux\" or \"portable\")"
    )]
    Unknown(String),
    #[error("{ENV_VAR}=linux: the Linux implementation is not built for this operating system (only \"portable\" is)")]
    NotBuilt,
}

static CHOSEN: OnceLock<Implementation> = OnceLock::new();

/// Reads NIGHTSHIFT_PLATFORM (unset or empty: the native implementation) and
/// fixes the choice for the rest of the process. Called once at start, before
/// any process or memory call; a later call returns the same choice.
pub fn select() -> Result<Implementation, PlatformError> {
    let wanted = match std::env::var(ENV_VAR) {
        Ok(value) if !value.is_empty() => parse(&value)?,
        _ => Implementation::native(),
    };
    Ok(*CHOSEN.get_or_init(|| wanted))
}

fn parse(value: &str) -> Result<Implementation, PlatformError> {
    match value {
        "portable" => Ok(Implementation::Portable),
        "linux" if cfg!(target_os = "linux") => Ok(Implementation::Linux),
        "linux" => Err(PlatformError::NotBuilt),
        other => Err(PlatformError::Unknown(other.to_owned())),
    }
}

/// The implementation in use (the native one if [`select`] was not called,
/// as in unit tests).
pub fn current() -> Implementation {
    *CHOSEN.get_or_init(Implementation::native)
}

/// What the process table says about one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// A zombie or dead process: it holds no memory and runs no code.
    pub gone: bool,
    /// When the process started, in the implementation's unit (Linux: clock
    /// ticks after boot; portable: seconds since the epoch). Only compared
    /// with start times read by the same implementation in the same boot
    /// (see [`boot_id`]): a pid reused by another process has another one.
    pub start: u64,
    /// Resident memory, bytes.
    pub rss: u64,
    /// Threads (Linux: which /proc task lists hold its children).
    pub threads: u32,
}

impl ProcStat {
    pub fn is_gone(&self) -> bool {
        self.gone
    }
}

/// One process, read now.
pub fn process(pid: i32) -> Option<ProcStat> {
    match current() {
        #[cfg(target_os = "linux")]
        Implementation::Linux => linux::stat(pid),
        _ => portable::stat(pid),
    }
}

/// True while `stat` is alive and still the same process (not a reused pid).
pub fn still_alive(stat: &ProcStat) -> bool {
    process(stat.pid).is_some_and(|now| now.start == stat.start && !now.is_gone())
}

/// The value of one variable in a process's environment, where readable
/// (a process of another user's is not).
pub fn environ_var(pid: i32, name: &str) -> Option<String> {
    match current() {
        #[cfg(target_os = "linux")]
        Implementation::Linux => linux::environ_var(pid, name),
        _ => portable::environ_var(pid, name),
    }
}

/// This boot's identity, and the implementation's: start times compare only
/// within one boot and one implementation (their units differ).
pub fn boot_id() -> String {
    match current() {
        #[cfg(target_os = "linux")]
        Implementation::Linux => linux::boot_id(),
        _ => portable::boot_id(),
    }
}

/// What the machine can still give without swapping, bytes.
pub fn mem_available() -> Option<u64> {
    match current() {
        #[cfg(target_os = "linux")]
        Implementation::Linux => linux::mem_available(),
        _ => portable::mem_available(),
    }
}

/// Makes orphaned descendants of our agents (double forks, daemons) our
/// children instead of init's, so they are reaped by us and stay in view.
/// Linux only: elsewhere an error says why not.
pub fn become_subreaper() -> std::io::Result<()> {
    match current() {
        #[cfg(target_os = "linux")]
        Implementation::Linux => linux::become_subreaper(),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "no child subreaper under the portable platform implementation",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_ones_are_refused() {
        assert_eq!(parse("portable").ok(), Some(Implementation::Portable));
        assert!(matches!(parse("windows"), Err(PlatformError::Unknown(v)) if v == "windows"));
        #[cfg(target_os = "linux")]
        assert_eq!(parse("linux").ok(), Some(Implementation::Linux));
    }

    #[test]
    fn both_implementations_read_this_process_alike() {
        let me = i32::try_from(std::process::id()).expect("pid");
        let portable = portable::stat(me).expect("portable stat");
        assert_eq!(portable.pgid, nix::unistd::getpgrp().as_raw());
        assert!(!portable.is_gone() && portable.rss > 0);
        assert!(portable::environ_var(me, "PATH").is_some());
        #[cfg(target_os = "linux")]
        {
            let linux = linux::stat(me).expect("linux stat");
            assert_eq!(
                (linux.ppid, linux.pgid, linux.sid),
                (portable.ppid, portable.pgid, portable.sid)
            );
            assert_eq!(
                linux::environ_var(me, "PATH"),
                portable::environ_var(me, "PATH")
            );
        }
    }
}
