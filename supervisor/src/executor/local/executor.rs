//! The local executor: every attempt is a child process of the supervisor,
//! leading its own session and process group (in its memory cgroup, in cgroup
//! mode). Its tree is tracked through the process table, orphans that escape
//! it are adopted as subreaper, and what is left of ended attempts is swept at
//! the segment's end.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shared::plan::AgentPlan;

use super::launch::Launcher;
use super::reaper::ExitHow;
use super::sweep::{EndedTree, Leftovers};
use super::tree::Tree;
use crate::executor::{Adopted, AttemptKey, Change, Ended, Executor, Started, Swept, Usage};
use crate::platform::cgroup::{AgentCgroup, CgroupRoot};
use crate::platform::{self, ProcessTable};

/// One running attempt's processes.
struct LocalAttempt {
    agent: String,
    leader_start: u64,
    tree: Tree,
    /// The attempt's memory cgroup, in cgroup mode.
    cgroup: Option<AgentCgroup>,
}

pub struct LocalExecutor<'a> {
    launcher: Launcher<'a>,
    /// Memory cgroups, in cgroup mode, and the hard limit of each agent's.
    cgroups: Option<CgroupRoot>,
    per_agent_limit: Option<u64>,
    attempts: HashMap<i32, LocalAttempt>,
    leftovers: Leftovers,
    run_root: PathBuf,
    grace: Duration,
    /// The supervisor's own pid: orphans are re-parented to it.
    me: i32,
    /// Samples since the whole process table was last read, under the
    /// portable implementation; None: it is to be read at the next one.
    samples_since_listing: Option<u32>,
}

/// Under the portable implementation a sample reads the known members of the
/// trees only (their memory, whether they are gone): sysinfo reads three
/// /proc files per process on Linux, and listing the whole machine at every
/// sample cost twice as much again. New descendants are found in the whole
/// table, read on the first sample after a start (an agent's first children),
/// on the one after a member went (the tree is changing), and at least every
/// this many samples (children an agent starts later: their memory counts
/// from then on). Killing a tree, and the sweeps, always read the whole table.
const LIST_EVERY_SAMPLES: u32 = 16;

impl<'a> LocalExecutor<'a> {
    pub fn new(
        launcher: Launcher<'a>,
        cgroups: Option<CgroupRoot>,
        per_agent_limit: Option<u64>,
        grace: Duration,
    ) -> Self {
        // Orphaned descendants of agents become our children: reaped by us, and
        // still in view to be counted and killed.
        if let Err(error) = platform::become_subreaper() {
            tracing::warn!("cannot become a child subreaper ({error}); daemonised descendants are found by the segment-end scan only");
        }
        let open_files = platform::files::raise_open_file_limit();
        tracing::debug!("open files: up to {open_files}");
        Self {
            run_root: launcher.run.root().to_path_buf(),
            launcher,
            cgroups,
            per_agent_limit,
            attempts: HashMap::new(),
            leftovers: Leftovers::default(),
            grace,
            me: i32::try_from(std::process::id()).unwrap_or(0),
            samples_since_listing: None,
        }
    }

    /// A memory cgroup for this attempt, in cgroup mode (None when the cgroup
    /// cannot be made: the attempt then runs under sampling alone).
    fn agent_cgroup(&self, agent: &AgentPlan, attempt: u32) -> Option<AgentCgroup> {
        let root = self.cgroups.as_ref()?;
        let name = format!(
            "s{:02}-o{:02}-a{:02}-{attempt}",
            agent.at.segment, agent.at.orchestrator, agent.at.agent
        );
        match root.agent_group(&name, self.per_agent_limit) {
            Ok(group) => Some(group),
            Err(error) => {
                tracing::warn!("no cgroup for {}: {error}", agent.name);
                None
            }
        }
    }

    /// The pids of every process known to belong to an attempt or to what is
    /// left of one.
    fn known_pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self.attempts.values().flat_map(|a| a.tree.pids()).collect();
        pids.extend(self.leftovers.pids());
        pids
    }

    fn attempt(&self, key: AttemptKey) -> Option<&LocalAttempt> {
        key.pid().and_then(|pid| self.attempts.get(&pid))
    }

    /// Children of the supervisor that are not agents are orphans it adopted
    /// as subreaper: each joins the tree of the agent it came from (by process
    /// group or session, else by its inherited NIGHTSHIFT_AGENT).
    fn adopt_orphans(&mut self, table: &ProcessTable) {
        for pid in table.own_children(self.me) {
            if self.attempts.contains_key(&pid)
                || self.attempts.values().any(|a| a.tree.contains(pid))
                || self.leftovers.knows(pid)
            {
                continue;
            }
            let Some(stat) = table.stat(pid).filter(|s| !s.is_gone()) else {
                continue;
            };
            let agent_name = platform::environ_var(pid, "NIGHTSHIFT_AGENT");
            let from = |(leader, a): &(&i32, &mut LocalAttempt)| {
                stat.pgid == **leader
                    || stat.sid == **leader
                    || agent_name.as_deref() == Some(a.agent.as_str())
            };
            match self.attempts.iter_mut().find(from) {
                Some((_, attempt)) => attempt.tree.adopt(&stat),
                None => self.leftovers.adopt(stat, agent_name.as_deref()),
            }
        }
    }
}

impl Executor for LocalExecutor<'_> {
    fn discover(&mut self, _resumed: bool) -> Result<(), String> {
        // A dead supervisor's agents are found by the resume's sweep of the
        // process table (they carry the run directory in their environment).
        Ok(())
    }

    fn adopt(&mut self, _agent: &AgentPlan) -> Option<Adopted> {
        None
    }

    fn start(&mut self, agent: &AgentPlan, attempt: u32) -> Result<Started, String> {
        let cgroup = self.agent_cgroup(agent, attempt);
        match self.launcher.launch(agent, attempt) {
            Ok(pid) => {
                let cgroup = cgroup.and_then(|group| match group.join(pid) {
                    Ok(()) => Some(group),
                    Err(error) => {
                        tracing::warn!("{} runs outside its memory cgroup: {error}", agent.name);
                        group.remove();
                        None
                    }
                });
                let leader_start = platform::process(pid).map_or(0, |s| s.start);
                self.samples_since_listing = None;
                self.attempts.insert(
                    pid,
                    LocalAttempt {
                        agent: agent.name.clone(),
                        leader_start,
                        tree: Tree::new(pid),
                        cgroup,
                    },
                );
                Ok(Started {
                    key: AttemptKey::Local { pid },
                    start_ticks: Some(leader_start),
                })
            }
            Err(error) => {
                if let Some(cgroup) = cgroup {
                    cgroup.remove();
                }
                Err(error.to_string())
            }
        }
    }

    fn soft_kill(&mut self, key: AttemptKey) -> usize {
        let pid = key.pid().unwrap_or(0);
        self.attempts
            .get_mut(&pid)
            .map_or(0, |a| a.tree.signal(Signal::SIGTERM))
    }

    fn hard_kill(&mut self, key: AttemptKey) {
        let pid = key.pid().unwrap_or(0);
        if let Some(attempt) = self.attempts.get_mut(&pid) {
            attempt.tree.signal(Signal::SIGKILL);
        }
    }

    fn is_gone(&self, key: AttemptKey) -> bool {
        self.attempt(key).is_none_or(|a| a.tree.is_empty())
    }

    fn is_queued(&self, _key: AttemptKey) -> bool {
        false
    }

    fn reaped(&mut self, pid: i32, how: ExitHow) -> Option<Ended> {
        if self.attempts.contains_key(&pid) {
            return Some(Ended::of_process(AttemptKey::Local { pid }, how));
        }
        // An adopted orphan, reaped: nothing to account for.
        self.leftovers.strays.retain(|s| s.pid != pid);
        None
    }

    fn poll(&mut self, _now: Instant) -> Vec<Change> {
        // Exits arrive from the reaper as they happen.
        Vec::new()
    }

    fn next_poll(&self) -> Option<Instant> {
        None
    }

    fn sample(&mut self, deep: bool) -> Usage {
        // Under Linux both tables are the live one (children are found at
        // every sample); under the portable one, see LIST_EVERY_SAMPLES.
        let table = match self.samples_since_listing {
            Some(n) if n + 1 < LIST_EVERY_SAMPLES => {
                self.samples_since_listing = Some(n + 1);
                ProcessTable::of_known(|| self.known_pids())
            }
            _ => {
                self.samples_since_listing = Some(0);
                ProcessTable::now()
            }
        };
        self.adopt_orphans(&table);
        let mut usage = Usage::default();
        let mut total = 0;
        for (pid, attempt) in &mut self.attempts {
            // A cgroup keeps every descendant, however it daemonised.
            if let Some(cgroup) = attempt.cgroup.as_ref().filter(|_| deep) {
                for member in cgroup.pids() {
                    if !attempt.tree.contains(member) {
                        if let Some(stat) = table.stat(member) {
                            attempt.tree.adopt(&stat);
                        }
                    }
                }
            }
            let known = attempt.tree.known_members();
            let live = attempt.tree.refresh(&table);
            if live.len() < known {
                self.samples_since_listing = None;
            }
            let bytes: u64 = live.iter().map(|s| s.rss).sum();
            total += bytes;
            usage
                .attempts
                .push((AttemptKey::Local { pid: *pid }, bytes));
        }
        usage.total = total + self.leftovers.rss(&table);
        usage
    }

    fn oom_struck(&self, key: AttemptKey) -> bool {
        self.attempt(key)
            .and_then(|a| a.cgroup.as_ref())
            .is_some_and(|c| c.oom_kills() > 0)
    }

    fn writes_elsewhere(&self) -> bool {
        false
    }

    fn release(&mut self, key: AttemptKey) {
        let Some(attempt) = key.pid().and_then(|pid| self.attempts.remove(&pid)) else {
            return;
        };
        self.leftovers.ended.push(EndedTree {
            agent: attempt.agent,
            leader_start: attempt.leader_start,
            tree: attempt.tree,
            cgroup: attempt.cgroup,
        });
    }

    fn sweep(&mut self, agents: &HashSet<String>) -> Vec<Swept> {
        self.adopt_orphans(&ProcessTable::now());
        self.leftovers
            .sweep(&self.run_root, agents, self.grace)
            .into_iter()
            .flatten()
            .map(|(agent, processes)| Swept {
                agent,
                processes: Some(processes),
                job_id: None,
            })
            .collect()
    }

    fn close(&mut self) {
        if let Some(root) = &self.cgroups {
            root.remove();
        }
    }
}
