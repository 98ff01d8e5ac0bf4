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

use crate::platform::{self, ProcStat, ProcessTable};

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
    // A group id names our agent's group only while the group is that agent's:
    // its leader is the recorded process, or gone (the kernel does not reuse a
    // pid while a process group of that id still has members).
    let table = ProcessTable::now();
    let groups: Vec<&Group> = groups
        .iter()
        .filter(|g| {
            table
                .stat(g.pgid)
                .is_none_or(|leader| leader.start == g.leader_start)
        })
        .collect();
    let mut found = Vec::new();
    for pid in table.pids() {
        if pid == me {
            continue;
        }
        let Some(stat) = table.stat(pid) else {
            continue;
        };
        if stat.is_gone() {
            continue;
        }
        let by_group = groups
            .iter()
            .find(|g| (stat.pgid == g.pgid || stat.sid == g.pgid) && stat.start >= g.leader_start);
        if let Some(group) = by_group {
            found.push((group.agent.clone(), stat));
            continue;
        }
        if platform::environ_var(pid, "NIGHTSHIFT_RUN_DIR").as_deref() != Some(run_root.as_ref()) {
            continue;
        }
        if let Some(agent) = platform::environ_var(pid, "NIGHTSHIFT_AGENT") {
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

fn signal_all(targets: &[ProcStat], signal: Signal) {
    for target in targets {
        if platform::still_alive(target) {
            let _ = kill(Pid::from_raw(target.pid), signal);
        }
    }
}

/// Waits until none of `targets` is alive, polling, up to `limit`.
fn wait_gone(targets: &[ProcStat], limit: Duration) -> Vec<ProcStat> {
    let started = Instant::now();
    loop {
        let alive: Vec<ProcStat> = targets
            .iter()
            .filter(|t| platform::still_alive(t))
            .copied()
            .collect();
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

/// The tree of an attempt that has ended; its leftovers are swept at segment end.
pub struct EndedTree {
    pub agent: String,
    pub leader_start: u64,
    pub tree: crate::executor::local::tree::Tree,
    pub cgroup: Option<crate::platform::cgroup::AgentCgroup>,
}

/// What may outlive the agents of the current segment: the trees of ended
/// attempts, and orphans the supervisor adopted that no agent could claim.
#[derive(Default)]
pub struct Leftovers {
    pub ended: Vec<EndedTree>,
    pub strays: Vec<ProcStat>,
}

impl Leftovers {
    /// Resident memory of every leftover process still alive, bytes.
    pub fn rss(&mut self, table: &ProcessTable) -> u64 {
        let ended: u64 = self
            .ended
            .iter_mut()
            .flat_map(|e| e.tree.refresh(table))
            .map(|s| s.rss)
            .sum();
        ended + self.strays.iter().map(|s| s.rss).sum::<u64>()
    }

    /// The pids of every leftover known (ended trees' members and strays).
    pub fn pids(&self) -> impl Iterator<Item = i32> + '_ {
        self.ended
            .iter()
            .flat_map(|e| e.tree.pids())
            .chain(self.strays.iter().map(|s| s.pid))
    }

    pub fn knows(&self, pid: i32) -> bool {
        self.ended.iter().any(|e| e.tree.contains(pid)) || self.strays.iter().any(|s| s.pid == pid)
    }

    /// Gives an adopted orphan to the ended tree it came from, or keeps it as a stray.
    pub fn adopt(&mut self, stat: ProcStat, agent_name: Option<&str>) {
        let from = |e: &&mut EndedTree| {
            stat.pgid == e.tree.leader
                || stat.sid == e.tree.leader
                || agent_name == Some(e.agent.as_str())
        };
        match self.ended.iter_mut().find(from) {
            Some(ended) => ended.tree.adopt(&stat),
            None => self.strays.push(stat),
        }
    }

    /// Finds everything left of `agents` (known trees, strays, and a scan of the
    /// whole process table) and ends it. Returns (agent, processes) per agent
    /// that had leftovers, for the journal, round by round.
    pub fn sweep(
        &mut self,
        run_root: &Path,
        agents: &HashSet<String>,
        grace: Duration,
    ) -> Vec<Vec<(String, usize)>> {
        let groups: Vec<Group> = self
            .ended
            .iter()
            .map(|e| Group {
                agent: e.agent.clone(),
                pgid: e.tree.leader,
                leader_start: e.leader_start,
            })
            .collect();
        let mut rounds = Vec::new();
        for _ in 0..SWEEP_ROUNDS {
            let mut targets: std::collections::HashMap<i32, (String, ProcStat)> =
                std::collections::HashMap::new();
            let table = ProcessTable::now();
            for ended in &mut self.ended {
                for stat in ended.tree.refresh(&table) {
                    targets.insert(stat.pid, (ended.agent.clone(), stat));
                }
            }
            for stray in self.strays.drain(..) {
                targets.insert(stray.pid, ("(unknown agent)".into(), stray));
            }
            for (agent, stat) in find_leftovers(run_root, &Agents::Named(agents), &groups) {
                targets.entry(stat.pid).or_insert((agent, stat));
            }
            if targets.is_empty() {
                break;
            }
            let mut per_agent: std::collections::BTreeMap<String, usize> =
                std::collections::BTreeMap::new();
            for (agent, _) in targets.values() {
                *per_agent.entry(agent.clone()).or_default() += 1;
            }
            rounds.push(per_agent.into_iter().collect());
            let stats: Vec<ProcStat> = targets.values().map(|(_, s)| *s).collect();
            let left = end_processes(&stats, grace);
            if !left.is_empty() {
                let pids: Vec<i32> = left.iter().map(|s| s.pid).collect();
                tracing::warn!("processes {pids:?} survived SIGKILL (stuck in the kernel?)");
            }
        }
        for ended in self.ended.drain(..) {
            if let Some(cgroup) = ended.cgroup {
                cgroup.remove();
            }
        }
        rounds
    }
}

/// Rounds of "scan the process table, end what is found" in one sweep: a
/// process being ended may start another.
const SWEEP_ROUNDS: usize = 3;
