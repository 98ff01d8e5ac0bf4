//! Finding and ending what is left of agents: the whole process table is
//! scanned (not assumed) for processes in an agent's process group or session,
//! or that carry the run's environment (NIGHTSHIFT_RUN_DIR and the agent's
//! NIGHTSHIFT_AGENT, inherited by every descendant that kept its environment).
//! Used between segments, at shutdown, and by resume for a dead supervisor's agents.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::proc_table::{self, ProcStat};

/// An agent process group to look for: members started after its leader.
#[derive(Debug, Clone)]
pub struct Group {
    pub agent: String,
    pub pgid: i32,
    pub leader_start: u64,
}

/// Which agents' leftovers to find.
pub enum Agents<'a> {
    /// These agents' (by name).
    Named(&'a HashSet<String>),
    /// Every agent of the run.
    All,
}

/// Every live process (but this one) that belongs to the given agents.
pub fn find_leftovers(
    run_root: &Path,
    agents: &Agents<'_>,
    groups: &[Group],
) -> Vec<(String, ProcStat)> {
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    let run_root = run_root.to_string_lossy();
    let mut found = Vec::new();
    for pid in proc_table::all_pids() {
        if pid == me {
            continue;
        }
        let Some(stat) = proc_table::stat(pid) else {
            continue;
        };
        if stat.is_gone() {
            continue;
        }
        let by_group = groups.iter().find(|g| {
            (stat.pgid == g.pgid || stat.sid == g.pgid) && stat.start_ticks >= g.leader_start
        });
        if let Some(group) = by_group {
            found.push((group.agent.clone(), stat));
            continue;
        }
        if proc_table::environ_var(pid, "NIGHTSHIFT_RUN_DIR").as_deref() != Some(run_root.as_ref())
        {
            continue;
        }
        if let Some(agent) = proc_table::environ_var(pid, "NIGHTSHIFT_AGENT") {
            let wanted = match agents {
                Agents::Named(names) => names.contains(&agent),
                Agents::All => true,
            };
            if wanted {
                found.push((agent, stat));
            }
        }
    }
    found
}

fn still_alive(stat: &ProcStat) -> bool {
    proc_table::stat(stat.pid)
        .is_some_and(|now| now.start_ticks == stat.start_ticks && !now.is_gone())
}

fn signal_all(targets: &[ProcStat], signal: Signal) {
    for target in targets {
        if still_alive(target) {
            let _ = kill(Pid::from_raw(target.pid), signal);
        }
    }
}

/// Waits until none of `targets` is alive, polling, up to `limit`.
fn wait_gone(targets: &[ProcStat], limit: Duration) -> Vec<ProcStat> {
    let started = Instant::now();
    loop {
        let alive: Vec<ProcStat> = targets.iter().filter(|t| still_alive(t)).copied().collect();
        if alive.is_empty() || started.elapsed() >= limit {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// TERM, up to `grace` for them to go, then KILL. Returns the processes that
/// are still alive afterwards (stuck in the kernel, or not ours to kill).
pub fn end_processes(targets: &[ProcStat], grace: Duration) -> Vec<ProcStat> {
    if targets.is_empty() {
        return Vec::new();
    }
    signal_all(targets, Signal::SIGTERM);
    let left = wait_gone(targets, grace);
    if left.is_empty() {
        return left;
    }
    signal_all(&left, Signal::SIGKILL);
    wait_gone(&left, Duration::from_secs(5))
}
