//! Process-tree tracking: an agent's tree is every process it started, directly
//! or not. Members are found by walking /proc children from every known member
//! (so a daemon that double-forks or calls setsid stays known once seen), and
//! remembered by (pid, start time) so a reused pid is never taken for a member.

use std::collections::HashMap;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::executor::local::proc_table::{self, ProcStat};
use crate::executor::local::unix::signal_group;

#[derive(Debug, Clone)]
pub struct Tree {
    /// The agent process: also its process group and session id.
    pub leader: i32,
    /// pid → start time, leader included.
    members: HashMap<i32, u64>,
}

impl Tree {
    pub fn new(leader: i32) -> Self {
        let mut members = HashMap::new();
        if let Some(stat) = proc_table::stat(leader) {
            members.insert(leader, stat.start_ticks);
        }
        Self { leader, members }
    }

    pub fn contains(&self, pid: i32) -> bool {
        self.members.contains_key(&pid)
    }

    /// Adds a process found some other way (an orphan adopted by the supervisor).
    pub fn adopt(&mut self, stat: &ProcStat) {
        self.members.insert(stat.pid, stat.start_ticks);
    }

    /// The live member with this pid, if it is still the same process.
    fn live(&self, pid: i32, start_ticks: u64) -> Option<ProcStat> {
        proc_table::stat(pid).filter(|s| s.start_ticks == start_ticks && !s.is_gone())
    }

    /// Walks children from every live member, adds new descendants, and forgets
    /// members that are gone. Returns the live members.
    pub fn refresh(&mut self) -> Vec<ProcStat> {
        let mut live = Vec::new();
        let mut queue: Vec<i32> = self.members.keys().copied().collect();
        let mut seen: HashMap<i32, u64> = HashMap::with_capacity(self.members.len());
        while let Some(pid) = queue.pop() {
            if seen.contains_key(&pid) {
                continue;
            }
            let Some(stat) = proc_table::stat(pid) else {
                continue;
            };
            match self.members.get(&pid) {
                // A known pid that now names another process: not ours.
                Some(start) if *start != stat.start_ticks => continue,
                _ => {}
            }
            if stat.is_gone() {
                continue;
            }
            seen.insert(pid, stat.start_ticks);
            live.push(stat);
            // The stat just read says how many threads to look under.
            if stat.threads <= 1 {
                queue.extend(proc_table::thread_children(pid, pid));
            } else {
                queue.extend(proc_table::children(pid));
            }
        }
        self.members = seen;
        // Keep the leader's identity even after it is gone, for the record.
        live
    }

    /// Live members, without looking for new ones.
    pub fn live_members(&self) -> Vec<ProcStat> {
        self.members
            .iter()
            .filter_map(|(pid, start)| self.live(*pid, *start))
            .collect()
    }

    /// True when no member is alive and the process group is empty.
    pub fn is_empty(&self) -> bool {
        self.live_members().is_empty() && !group_has_live_members(self.leader)
    }

    /// Signals the process group and every known member (those that left the
    /// group too). Refreshes first, so members that appeared since are included.
    pub fn signal(&mut self, signal: Signal) -> usize {
        let live = self.refresh();
        signal_group(self.leader, signal);
        for member in &live {
            if member.pgid != self.leader {
                let _ = kill(Pid::from_raw(member.pid), signal);
            }
        }
        live.len()
    }
}

/// The group exists as long as any process (zombies included) is in it; a
/// group of zombies only is as good as empty.
fn group_has_live_members(pgid: i32) -> bool {
    if !signal_group_probe(pgid) {
        return false;
    }
    proc_table::all_pids()
        .into_iter()
        .filter_map(proc_table::stat)
        .any(|s| s.pgid == pgid && !s.is_gone())
}

fn signal_group_probe(pgid: i32) -> bool {
    // Signal 0 checks existence without sending anything.
    !matches!(
        nix::sys::signal::killpg(Pid::from_raw(pgid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}
