//! Process-tree tracking: an agent's tree is every process it started, directly
//! or not. Members are found by walking the process table's children from every known member
//! (so a daemon that double-forks or calls setsid stays known once seen), and
//! remembered by (pid, start time) so a reused pid is never taken for a member.

use std::collections::HashMap;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::executor::local::unix::signal_group;
use crate::platform::{self, ProcStat, ProcessTable};

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
        if let Some(stat) = platform::process(leader) {
            members.insert(leader, stat.start);
        }
        Self { leader, members }
    }

    pub fn contains(&self, pid: i32) -> bool {
        self.members.contains_key(&pid)
    }

    /// The known members' pids (some may be gone since).
    pub fn pids(&self) -> impl Iterator<Item = i32> + '_ {
        self.members.keys().copied()
    }

    /// How many members are known (some may be gone since).
    pub fn known_members(&self) -> usize {
        self.members.len()
    }

    /// Adds a process found some other way (an orphan adopted by the supervisor).
    pub fn adopt(&mut self, stat: &ProcStat) {
        self.members.insert(stat.pid, stat.start);
    }

    /// Walks children from every live member, adds new descendants, and forgets
    /// members that are gone. Returns the live members.
    pub fn refresh(&mut self, table: &ProcessTable) -> Vec<ProcStat> {
        let mut live = Vec::new();
        let mut queue: Vec<i32> = self.members.keys().copied().collect();
        let mut seen: HashMap<i32, u64> = HashMap::with_capacity(self.members.len());
        while let Some(pid) = queue.pop() {
            if seen.contains_key(&pid) {
                continue;
            }
            let Some(stat) = table.stat(pid) else {
                continue;
            };
            match self.members.get(&pid) {
                // A known pid that now names another process: not ours.
                Some(start) if *start != stat.start => continue,
                _ => {}
            }
            if stat.is_gone() {
                continue;
            }
            seen.insert(pid, stat.start);
            live.push(stat);
            table.push_children(&stat, &mut queue);
        }
        self.members = seen;
        // Keep the leader's identity even after it is gone, for the record.
        live
    }

    /// True when no member is alive and the process group is empty.
    pub fn is_empty(&self) -> bool {
        let table = ProcessTable::now();
        let member_alive = self.members.iter().any(|(pid, start)| {
            table
                .stat(*pid)
                .is_some_and(|s| s.start == *start && !s.is_gone())
        });
        !member_alive && !group_has_live_members(&table, self.leader)
    }

    /// Signals the process group and every known member (those that left the
    /// group too). Refreshes first, so members that appeared since are included.
    pub fn signal(&mut self, signal: Signal) -> usize {
        let live = self.refresh(&ProcessTable::now());
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
fn group_has_live_members(table: &ProcessTable, pgid: i32) -> bool {
    if !signal_group_probe(pgid) {
        return false;
    }
    table
        .pids()
        .into_iter()
        .filter_map(|pid| table.stat(pid))
        .any(|s| s.pgid == pgid && !s.is_gone())
}

fn signal_group_probe(pgid: i32) -> bool {
    // Signal 0 checks existence without sending anything.
    !matches!(
        nix::sys::signal::killpg(Pid::from_raw(pgid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}
