//! Watching running attempts: exits and signals as they arrive, and on the
//! clock the deadlines (timeout, stall, the KILL after a TERM), the periodic
//! look at every process tree, and the sweeps that leave nothing behind.

use std::collections::HashSet;
use std::time::Instant;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use shared::job::AgentTimeout;
use shared::journal::{Event, Killed, KilledBy};

use super::{Ending, Stop, Supervisor};
use crate::error::{Result, SupervisorError};
use crate::file_watch::FileWatch;
use crate::proc_table;
use crate::reaper::{ExitHow, Msg};
use crate::slot::{Kill, KillReason, Slot};

/// Cgroup files are read on one sampling tick out of this many.
const CGROUP_EVERY_TICKS: u64 = 4;

/// After a scancel, how soon the job's state is asked again.
const SLURM_KILL_POLL: std::time::Duration = std::time::Duration::from_millis(200);

impl<'a> Supervisor<'a> {
    pub(super) fn on_message(&mut self, message: Msg) -> Result<()> {
        match message {
            Msg::Exited { pid, how } => {
                let Some(slot) = self.slots.get_mut(&pid) else {
                    // An adopted orphan, reaped: nothing to account for.
                    self.leftovers.strays.retain(|s| s.pid != pid);
                    return Ok(());
                };
                slot.exit = Some(how);
                let seconds = slot.started.elapsed().as_secs_f64();
                let name = slot.agent.name.clone();
                let killing = slot.kill.is_some();
                let (code, signal) = match how {
                    ExitHow::Code(code) => (Some(code), None),
                    ExitHow::Signal(signal) => (None, Some(signal)),
                };
                let exited = Event::Exited {
                    pid: Some(pid),
                    job_id: None,
                    state: None,
                    code,
                    signal,
                    seconds,
                };
                self.event(Some(&name), exited)?;
                if !killing {
                    self.finish(pid)?;
                }
                Ok(())
            }
            Msg::Signal(signal) => self.on_signal(signal),
            Msg::FilesChanged => {
                let changed = self
                    .watch
                    .as_ref()
                    .map(FileWatch::take_changed)
                    .unwrap_or_default();
                let now = Instant::now();
                for path in changed {
                    self.count_saved(&path, now);
                }
                Ok(())
            }
        }
    }

    pub(super) fn on_time(&mut self, now: Instant) -> Result<()> {
        if now >= self.next_tick {
            self.tick(now)?;
            self.next_tick = now + self.settings().limits.sample_interval.get();
        }
        self.watch_deadline(now)?;
        self.poll_slurm(now)?;
        let stall_timeout = self.settings().agent.stall_timeout.map(|d| d.get());
        let pids: Vec<i32> = self.slots.keys().copied().collect();
        for pid in pids {
            let Some(slot) = self.slots.get_mut(&pid) else {
                continue;
            };
            match slot.kill {
                None if slot.is_queued() => {}
                None if slot.exit.is_none() && slot.timed_out(now) => {
                    self.start_kill(pid, KillReason::Timeout)?
                }
                None if slot.exit.is_none() && slot.stalled(stall_timeout, now) => {
                    self.start_kill(pid, KillReason::Stall)?
                }
                Some(kill) if !kill.hard_sent && now >= kill.hard_at => {
                    slot.hard_kill();
                    slot.kill = Some(Kill {
                        hard_sent: true,
                        ..kill
                    });
                }
                _ => {}
            }
            if self
                .slots
                .get(&pid)
                .is_some_and(|s| s.kill.is_some() && s.finished())
            {
                self.finish(pid)?;
            }
        }
        Ok(())
    }

    /// The periodic look at every tree: new descendants, adopted orphans,
    /// agent-file growth, and relative timeouts once they are known.
    pub(super) fn tick(&mut self, now: Instant) -> Result<()> {
        self.adopt_orphans();
        let relative = match self.settings().agent.timeout {
            Some(AgentTimeout::PercentOfMedian(percent)) => Some(percent),
            _ => None,
        };
        let run = self.inputs.run;
        let page = self.page_size;
        let mut total_pages = 0;
        self.ticks += 1;
        // The cgroup files are read every few ticks only: children are found
        // by the tree walk and orphans by adoption; the cgroup is the backstop.
        let read_cgroups = self.ticks.is_multiple_of(CGROUP_EVERY_TICKS);
        for slot in self.slots.values_mut() {
            // Under Slurm the tree is on another node, in Slurm's hands.
            if let Some(local) = slot.local_mut() {
                // A cgroup keeps every descendant, however it daemonised.
                if let Some(cgroup) = local.cgroup.as_ref().filter(|_| read_cgroups) {
                    for pid in cgroup.pids() {
                        if !local.tree.contains(pid) {
                            if let Some(stat) = proc_table::stat(pid) {
                                local.tree.adopt(&stat);
                            }
                        }
                    }
                }
                let pages: u64 = local.tree.refresh().iter().map(|s| s.rss_pages).sum();
                total_pages += pages;
                slot.rss = pages * page;
                slot.peak_rss = slot.peak_rss.max(slot.rss);
            }
            // Without notify, or for agents writing from other nodes (whose
            // writes notify may not see), growth of the agent file is looked
            // for here.
            if self.watch.is_none() || slot.slurm().is_some() {
                let output = run.agent_output(slot.agent.at);
                slot.observe_output(&output, now);
                if let Some((_, done)) = self.progress.update(&output) {
                    slot.done = done;
                }
            }
            if let (Some(percent), None) = (relative, slot.deadline) {
                let items = slot.agent.ids.len().saturating_sub(slot.saved_at_launch);
                if let Some(limit) = self.per_item.limit(percent, items) {
                    slot.deadline = Some(slot.started + limit);
                }
            }
        }
        total_pages += self.leftovers.rss_pages();
        // live.json carries each agent's progress and memory for `status`.
        self.live_dirty |= !self.slots.is_empty();
        self.memory
            .sample(now, total_pages * page, proc_table::mem_available());
        self.enforce_memory(read_cgroups)
    }

    /// Kills trees over agent.memory_limit (or struck by the kernel's OOM killer
    /// in their cgroup); when the run crosses its ceiling or the machine its
    /// floor, kills the youngest agent (least work lost) to be relaunched later.
    fn enforce_memory(&mut self, read_cgroups: bool) -> Result<()> {
        let limit = self.memory.per_agent_limit();
        let running = |s: &&Slot<'a>| s.kill.is_none() && s.exit.is_none();
        let over: Vec<i32> = self
            .slots
            .values()
            .filter(running)
            .filter(|s| limit.is_some_and(|l| s.rss > l))
            .map(|s| s.pid)
            .collect();
        for pid in over {
            self.start_kill(pid, KillReason::Memory)?;
        }
        // The kernel's OOM killer struck part of a tree that goes on: end the rest.
        let struck: Vec<(i32, String)> = self
            .slots
            .values()
            .filter(running)
            .filter(|s| {
                read_cgroups
                    && s.local()
                        .and_then(|l| l.cgroup.as_ref())
                        .is_some_and(|c| c.oom_kills() > 0)
            })
            .map(|s| (s.pid, s.agent.name.clone()))
            .collect();
        for (pid, name) in struck {
            let struck = Event::OomKilled {
                pid,
                by: KilledBy::Kernel,
            };
            self.event(Some(&name), struck)?;
            self.start_kill(pid, KillReason::Memory)?;
        }
        let Some(pressure) = self.memory.pressure() else {
            return Ok(());
        };
        let making_room = self
            .slots
            .values()
            .any(|s| s.kill.is_some_and(|k| k.reason.makes_room()));
        let candidates: Vec<&Slot<'a>> = self
            .slots
            .values()
            .filter(|s| s.kill.is_none() && s.exit.is_none())
            .collect();
        // One agent alone is never killed to make room: it would only come back.
        if making_room || candidates.len() < 2 {
            return Ok(());
        }
        let youngest = candidates
            .iter()
            .max_by_key(|s| s.started)
            .map(|s| (s.pid, s.rss));
        match youngest {
            Some((pid, rss)) => {
                self.memory.note_eviction(rss);
                self.start_kill(pid, pressure.reason())
            }
            None => Ok(()),
        }
    }

    /// Children of the supervisor that are not agents are orphans it adopted
    /// as subreaper: each joins the tree of the agent it came from (by process
    /// group or session, else by its inherited NIGHTSHIFT_AGENT).
    pub(super) fn adopt_orphans(&mut self) {
        // Orphans are re-parented to the subreaper's main thread (the thread
        // that also starts every agent), so its list is the one to read.
        for pid in proc_table::thread_children(self.me, self.me) {
            if self.slots.contains_key(&pid)
                || self
                    .slots
                    .values()
                    .any(|s| s.local().is_some_and(|l| l.tree.contains(pid)))
                || self.leftovers.knows(pid)
            {
                continue;
            }
            let Some(stat) = proc_table::stat(pid).filter(|s| !s.is_gone()) else {
                continue;
            };
            let agent_name = proc_table::environ_var(pid, "NIGHTSHIFT_AGENT");
            let from = |s: &&mut Slot<'a>| {
                stat.pgid == s.pid
                    || stat.sid == s.pid
                    || agent_name.as_deref() == Some(s.agent.name.as_str())
            };
            match self.slots.values_mut().find(from).and_then(Slot::local_mut) {
                Some(local) => local.tree.adopt(&stat),
                None => self.leftovers.adopt(stat, agent_name.as_deref()),
            }
        }
    }

    pub(super) fn start_kill(&mut self, pid: i32, reason: KillReason) -> Result<()> {
        let grace = self.settings().agent.kill_grace.get();
        let Some(slot) = self.slots.get_mut(&pid) else {
            return Ok(());
        };
        if slot.kill.is_some() {
            return Ok(());
        }
        let processes = slot.soft_kill();
        if slot.slurm().is_some() {
            // The job's end is looked for soon, not a poll interval later.
            if let Some(slurm) = self.slurm.as_mut() {
                slurm.next_poll = slurm.next_poll.min(Instant::now() + SLURM_KILL_POLL);
            }
        }
        slot.kill = Some(Kill {
            reason,
            hard_at: Instant::now() + grace,
            hard_sent: false,
        });
        let name = slot.agent.name.clone();
        let (rss, peak) = (slot.rss, slot.peak_rss);
        let what = match reason {
            KillReason::Shutdown | KillReason::Deadline | KillReason::SegmentEnd => None,
            KillReason::Memory => Some(format!(
                "went over its memory limit ({} resident, peak {}): ending its {processes} process(es)",
                mib(rss),
                mib(peak)
            )),
            KillReason::Ceiling | KillReason::MinFree => Some(format!(
                "makes room ({reason}, {} resident): ending its {processes} process(es); it will be relaunched on its remaining items",
                mib(rss)
            )),
            _ => Some(format!("hit its {reason}: ending its {processes} process(es)")),
        };
        if let Some(what) = what {
            self.console.agent_failed(&name, &what, None);
        }
        let killed = Event::Killed(Killed {
            pid: Some(pid),
            processes: Some(processes),
            rss: Some(rss),
            peak_rss: Some(peak),
            ..Killed::because(reason)
        });
        self.event(Some(&name), killed)
    }

    pub(super) fn on_signal(&mut self, signal: i32) -> Result<()> {
        if signal == SIGHUP {
            // A closed terminal or ssh session must not end an overnight run.
            return self.event(None, Event::SighupIgnored);
        }
        if signal != SIGINT && signal != SIGTERM {
            return Ok(());
        }
        if self.stop == Stop::Killing {
            // Ctrl-C again: no more waiting.
            let now = Instant::now();
            for slot in self.slots.values_mut() {
                if let Some(kill) = slot.kill.as_mut() {
                    kill.hard_at = now;
                }
            }
            return self.event(None, Event::ShutdownNow { signal });
        }
        let grace = self.settings().agent.kill_grace.get();
        self.console.stopping(grace);
        self.event(
            None,
            Event::Shutdown {
                signal,
                grace_seconds: grace.as_secs_f64(),
            },
        )?;
        self.ending = Ending::Interrupted;
        self.stop = Stop::Killing;
        self.retries.clear();
        let pids: Vec<i32> = self.slots.keys().copied().collect();
        for pid in pids {
            self.start_kill(pid, KillReason::Shutdown)?;
        }
        self.events
            .sync()
            .map_err(SupervisorError::io("cannot sync events.jsonl"))
    }

    /// Makes sure no process started for the agents `names` is alive.
    pub(super) fn sweep(&mut self, names: &HashSet<String>, reason: KillReason) -> Result<()> {
        let grace = self.settings().agent.kill_grace.get();
        self.adopt_orphans();
        if self.slurm.is_some() {
            // Slurm's cgroups end each job's tree; what is left to end are
            // jobs no slot watches.
            return self.sweep_slurm(names, reason);
        }
        let rounds = self.leftovers.sweep(self.inputs.run.root(), names, grace);
        for round in rounds {
            for (agent, processes) in round {
                let swept = Event::Killed(Killed {
                    processes: Some(processes),
                    ..Killed::because(reason)
                });
                self.event(Some(&agent), swept)?;
            }
        }
        Ok(())
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / f64::from(1 << 20))
}

impl<'a> Supervisor<'a> {
    /// Counts what was appended to an agent file; growth is progress (stall).
    fn count_saved(&mut self, path: &std::path::Path, now: Instant) {
        let Some((agent, done)) = self.progress.update(path) else {
            return;
        };
        if let Some(slot) = self.slots.values_mut().find(|s| s.agent.at == agent) {
            if done != slot.done {
                tracing::debug!(
                    "counted {} {done}/{}",
                    slot.agent.name,
                    slot.agent.ids.len()
                );
                slot.done = done;
                slot.last_progress = now;
            }
        }
    }
}

impl<'a> Supervisor<'a> {
    /// At the deadline no agent is launched any more and running agents get
    /// schedule.drain to finish; after that they are stopped as for Ctrl-C.
    fn watch_deadline(&mut self, now: Instant) -> Result<()> {
        if self.deadline.is_some_and(|d| now >= d) && self.stop == Stop::No {
            let drain = self.settings().schedule.drain.get();
            self.deadline = None;
            self.ending = Ending::Deadline;
            self.stop = Stop::Draining;
            self.retries.clear();
            self.requeued.clear();
            self.drain_until = Some(now + drain);
            self.console.line(&format!(
                "deadline reached: no new agents; the {} running get {} to finish",
                self.slots.len(),
                humantime::format_duration(drain)
            ));
            self.event(
                None,
                Event::Deadline {
                    running: self.slots.len(),
                    drain_seconds: drain.as_secs_f64(),
                },
            )?;
        }
        if self.drain_until.is_some_and(|d| now >= d) && self.stop == Stop::Draining {
            self.drain_until = None;
            self.stop = Stop::Killing;
            let running = self.slots.len();
            self.event(None, Event::DrainOver { running })?;
            let pids: Vec<i32> = self.slots.keys().copied().collect();
            for pid in pids {
                self.start_kill(pid, KillReason::Deadline)?;
            }
        }
        Ok(())
    }
}
