//! The portable implementation: `sysinfo` for the process list (pid, parent,
//! start time, resident memory, state, environment) and the machine's memory,
//! POSIX getpgid/getsid for a process's group and session. What macOS and the
//! BSDs have; on Linux it is selected with NIGHTSHIFT_PLATFORM=portable.
//!
//! sysinfo keeps one `System` per process (it caches per-process state between
//! refreshes), behind a mutex: only the supervisor's main thread asks, so the
//! lock is never contended, and no caller holds it across another call.

use std::sync::{Mutex, MutexGuard, OnceLock};

use nix::unistd::{getpgid, getsid, Pid as NixPid};
use sysinfo::{
    MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System,
    UpdateKind,
};

use super::ProcStat;

fn system() -> Option<MutexGuard<'static, System>> {
    static SYSTEM: OnceLock<Option<Mutex<System>>> = OnceLock::new();
    let lock = SYSTEM
        .get_or_init(|| System::new().ok().map(Mutex::new))
        .as_ref()?;
    Some(lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

/// What a refresh reads of every process: memory, nothing costlier (no CPU
/// times, no command lines, threads not listed as processes).
fn basic() -> ProcessRefreshKind {
    ProcessRefreshKind::nothing().with_memory().without_tasks()
}

/// One process of a snapshot: what sysinfo read (group and session are asked
/// of the kernel only for the processes looked at).
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub pid: i32,
    pub ppid: i32,
    pub start: u64,
    pub rss: u64,
    pub gone: bool,
}

impl Entry {
    fn of(process: &sysinfo::Process) -> Option<Self> {
        Some(Self {
            pid: i32::try_from(process.pid().as_u32()).ok()?,
            ppid: process
                .parent()
                .and_then(|p| i32::try_from(p.as_u32()).ok())
                .unwrap_or(0),
            start: process.start_time(),
            rss: process.memory(),
            gone: matches!(
                process.status(),
                ProcessStatus::Zombie | ProcessStatus::Dead
            ),
        })
    }

    /// With its group and session (POSIX calls; 0 when the process is gone
    /// or will not say).
    pub fn stat(&self) -> ProcStat {
        let pid = NixPid::from_raw(self.pid);
        ProcStat {
            pid: self.pid,
            ppid: self.ppid,
            pgid: getpgid(Some(pid)).map_or(0, NixPid::as_raw),
            sid: getsid(Some(pid)).map_or(0, NixPid::as_raw),
            gone: self.gone,
            start: self.start,
            rss: self.rss,
            threads: 1,
        }
    }
}

/// Every process, read now.
pub fn snapshot() -> Vec<Entry> {
    let Some(mut system) = system() else {
        return Vec::new();
    };
    system.refresh_processes_specifics(ProcessesToUpdate::All, true, basic());
    system.processes().values().filter_map(Entry::of).collect()
}

/// These processes only, read now (those that are gone are left out): one
/// refresh for all of them, without listing the rest of the machine.
pub fn some(pids: &[i32]) -> Vec<Entry> {
    let wanted: Vec<Pid> = pids
        .iter()
        .filter_map(|pid| u32::try_from(*pid).ok().map(Pid::from_u32))
        .collect();
    let Some(mut system) = system() else {
        return Vec::new();
    };
    system.refresh_processes_specifics(ProcessesToUpdate::Some(&wanted), true, basic());
    wanted
        .iter()
        .filter_map(|pid| Entry::of(system.process(*pid)?))
        .collect()
}

/// One process, read now.
pub fn stat(pid: i32) -> Option<ProcStat> {
    let wanted = Pid::from_u32(u32::try_from(pid).ok()?);
    let mut system = system()?;
    system.refresh_processes_specifics(ProcessesToUpdate::Some(&[wanted]), true, basic());
    let entry = Entry::of(system.process(wanted)?)?;
    drop(system);
    Some(entry.stat())
}

pub fn environ_var(pid: i32, name: &str) -> Option<String> {
    let wanted = Pid::from_u32(u32::try_from(pid).ok()?);
    let mut system = system()?;
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[wanted]),
        true,
        basic().with_environ(UpdateKind::Always),
    );
    let prefix = format!("{name}=");
    system.process(wanted)?.environ().iter().find_map(|entry| {
        entry
            .to_str()
            .and_then(|e| e.strip_prefix(&prefix))
            .map(str::to_owned)
    })
}

pub fn boot_id() -> String {
    format!("portable, booted at {}", System::boot_time().unwrap_or(0))
}

pub fn mem_available() -> Option<u64> {
    let mut system = system()?;
    system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
    Some(system.available_memory()).filter(|a| *a > 0)
}
