//! Starting attempts and ending them: launch, the record of how an attempt
//! went, retries after a doubling backoff, and the halt policy.

use std::time::Instant;

use shared::job::AgentTimeout;
use shared::journal::{Event, Killed, KilledBy, LaunchPhase};
use shared::plan::AgentPlan;

use super::{Ending, Retry, Stop, Supervisor};
use crate::cgroup::AgentCgroup;
use crate::error::{Result, SupervisorError};
use crate::halt::HaltWhen;
use crate::launch::Launcher;
use crate::live_agents::{LiveAgent, LiveAgents};
use crate::proc_table;
use crate::reaper::ExitHow;
use crate::report::{AttemptRecord, Outcome};
use crate::schedule::Phase;
use crate::slot::{count_lines, KillReason, LocalTree, Placement, Slot};
use crate::sweep::EndedTree;
use crate::tree::Tree;

impl<'a> Supervisor<'a> {
    pub(super) fn launch(&mut self, agent: &'a AgentPlan) -> Result<()> {
        let attempt = {
            let launches = self.inputs.launches.entry(agent.name.clone()).or_insert(0);
            *launches += 1;
            *launches
        };
        let output = self.inputs.run.agent_output(agent.at);
        let saved_at_launch = count_lines(&output);
        let launched_at =
            humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let started = if self.slurm.is_some() {
            self.submit_job(agent, attempt)
        } else {
            self.spawn_local(agent, attempt)
        };
        let (key, placement) = match started {
            Ok(started) => started,
            Err(error) => {
                let failed = Event::LaunchFailed {
                    error: error.clone(),
                };
                self.event(Some(&agent.name), failed)?;
                let record = AttemptRecord {
                    agent: agent.name.clone(),
                    attempt,
                    pid: None,
                    job_id: None,
                    launched: launched_at,
                    seconds: 0.0,
                    peak_rss: 0,
                    outcome: Outcome::LaunchFailed(error),
                };
                return self.after_attempt(agent, record);
            }
        };
        let now = Instant::now();
        let phase = match self.gate.note_launch(now) {
            Phase::Warmup => Some(LaunchPhase::Warmup),
            Phase::Wave(n) => Some(LaunchPhase::Wave(n)),
            Phase::Free => None,
        };
        let (pid, start_ticks, job_id) = match &placement {
            Placement::Local(local) => (Some(key), Some(local.leader_start), None),
            Placement::Slurm(job) => (None, None, Some(job.id)),
        };
        let launched = Event::Launched {
            attempt,
            items: agent.ids.len(),
            already_saved: saved_at_launch,
            phase,
            pid,
            start_ticks,
            job_id,
        };
        self.event(Some(&agent.name), launched)?;
        self.insert_slot(agent, attempt, key, placement, saved_at_launch, launched_at);
        self.memory.note_launch(now);
        Ok(())
    }

    /// Starts the agent as a child process (in its cgroup, in cgroup mode).
    fn spawn_local(
        &mut self,
        agent: &AgentPlan,
        attempt: u32,
    ) -> std::result::Result<(i32, Placement), String> {
        let settings = self.settings();
        let socket = self.rate.as_ref().map(|r| r.path().to_path_buf());
        let launcher = Launcher {
            argv: self.inputs.agent_argv,
            job_dir: &self.inputs.job.dir,
            env: &settings.agent.env,
            run: self.inputs.run,
            log_limit: settings.limits.agent_log_limit.bytes(),
            socket: socket.as_deref(),
        };
        let cgroup = self.agent_cgroup(agent, attempt);
        match launcher.launch(agent, attempt, cgroup.as_ref().map(|c| c.join_path())) {
            Ok(pid) => {
                let leader_start = proc_table::stat(pid).map_or(0, |s| s.start_ticks);
                let tree = Tree::new(pid);
                Ok((
                    pid,
                    Placement::Local(LocalTree {
                        leader_start,
                        tree,
                        cgroup,
                    }),
                ))
            }
            Err(error) => {
                if let Some(cgroup) = cgroup {
                    cgroup.remove();
                }
                Err(error.to_string())
            }
        }
    }

    /// A slot for an attempt that has started (or, under Slurm, been submitted
    /// or adopted). The clock of agent.timeout starts now.
    pub(super) fn insert_slot(
        &mut self,
        agent: &'a AgentPlan,
        attempt: u32,
        key: i32,
        placement: Placement,
        saved_at_launch: usize,
        launched_at: String,
    ) {
        let now = Instant::now();
        let deadline = self.fixed_timeout().map(|limit| now + limit);
        let output = self.inputs.run.agent_output(agent.at);
        self.slots.insert(
            key,
            Slot {
                agent,
                attempt,
                pid: key,
                started: now,
                launched_at,
                placement,
                exit: None,
                deadline,
                saved_at_launch,
                done: saved_at_launch.min(agent.ids.len()),
                output_len: std::fs::metadata(&output).map_or(0, |m| m.len()),
                last_progress: now,
                kill: None,
                rss: 0,
                peak_rss: 0,
            },
        );
        self.live_dirty = true;
    }

    /// agent.timeout when it is a fixed limit.
    pub(super) fn fixed_timeout(&self) -> Option<std::time::Duration> {
        self.settings().agent.timeout.and_then(AgentTimeout::fixed)
    }

    /// Rewrites live.json if the set of running agents changed.
    pub(super) fn write_live(&mut self) -> Result<()> {
        if !self.live_dirty {
            return Ok(());
        }
        let live = LiveAgents {
            supervisor_pid: self.me,
            boot_id: self.boot_id.clone(),
            updated: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            agents: self
                .slots
                .values()
                .map(|s| LiveAgent {
                    agent: s.agent.name.clone(),
                    pid: if s.local().is_some() { s.pid } else { 0 },
                    start_ticks: s.local().map_or(0, |l| l.leader_start),
                    job_id: s.slurm().map(|j| j.id),
                    attempt: s.attempt,
                    done: s.done,
                    items: s.agent.ids.len(),
                    rss: s.rss,
                })
                .collect(),
        };
        self.live
            .write(&live)
            .map_err(SupervisorError::io("cannot write live.json"))?;
        self.live_dirty = false;
        Ok(())
    }

    /// The attempt is over: record how it went, then retry or give up.
    pub(super) fn finish(&mut self, pid: i32) -> Result<()> {
        let Some(slot) = self.slots.remove(&pid) else {
            return Ok(());
        };
        let seconds = slot.started.elapsed().as_secs_f64();
        self.memory.note_peak(slot.peak_rss);
        // The kernel's OOM killer struck inside the agent's cgroup: that is its
        // memory limit, whatever the exit status says.
        let kernel_oom = slot.kill.is_none()
            && slot
                .local()
                .and_then(|l| l.cgroup.as_ref())
                .is_some_and(|c| c.oom_kills() > 0);
        if kernel_oom {
            let killed = Event::Killed(Killed {
                pid: Some(pid),
                by: Some(KilledBy::Kernel),
                peak_rss: Some(slot.peak_rss),
                ..Killed::because(KillReason::Memory)
            });
            self.event(Some(&slot.agent.name), killed)?;
        }
        let slurm_end = slot.slurm().and_then(|j| j.end);
        let outcome = match (slot.kill, slot.exit) {
            _ if kernel_oom => Outcome::Killed(KillReason::Memory),
            (Some(kill), _) => Outcome::Killed(kill.reason),
            (None, _) if slurm_end.is_some() => {
                slurm_end.map_or(Outcome::Failed(-1), |e| e.outcome())
            }
            (None, Some(ExitHow::Code(0))) => Outcome::Succeeded,
            (None, Some(ExitHow::Code(code))) => Outcome::Failed(code),
            (None, Some(ExitHow::Signal(signal))) => Outcome::Crashed(signal),
            (None, None) => Outcome::Failed(-1),
        };
        if outcome == Outcome::Succeeded {
            let saved = count_lines(&self.inputs.run.agent_output(slot.agent.at));
            self.per_item
                .record(seconds, saved.saturating_sub(slot.saved_at_launch));
        }
        let record = AttemptRecord {
            agent: slot.agent.name.clone(),
            attempt: slot.attempt,
            pid: slot.local().map(|_| pid),
            job_id: slot.slurm().map(|j| j.id),
            launched: slot.launched_at,
            seconds,
            peak_rss: slot.peak_rss,
            outcome,
        };
        if let Placement::Local(local) = slot.placement {
            self.leftovers.ended.push(EndedTree {
                agent: slot.agent.name.clone(),
                leader_start: local.leader_start,
                tree: local.tree,
                cgroup: local.cgroup,
            });
        }
        self.live_dirty = true;
        self.after_attempt(slot.agent, record)
    }

    /// Records an ended attempt; a failed one is retried after its backoff
    /// (retry_backoff, doubling) while retries remain, else it counts towards
    /// the halt policy.
    pub(super) fn after_attempt(
        &mut self,
        agent: &'a AgentPlan,
        record: AttemptRecord,
    ) -> Result<()> {
        let outcome = record.outcome.clone();
        self.attempts.push(record);
        match &outcome {
            Outcome::Succeeded => return Ok(()),
            Outcome::Killed(reason) if reason.stops_run() => return Ok(()),
            // Killed to make room: back in the queue, not counted as a failure.
            Outcome::Killed(reason) if reason.makes_room() => {
                self.requeued.push(agent);
                return self.event(Some(&agent.name), Event::Requeued { reason: *reason });
            }
            _ => {}
        }
        let log = self.inputs.run.agent_log(agent.at);
        let used = self.retries_used.entry(agent.at).or_insert(0);
        let settings = &self.inputs.job.settings.agent;
        if *used < settings.retries && self.stop == Stop::No {
            *used += 1;
            let delay = settings
                .retry_backoff
                .get()
                .saturating_mul(1 << (*used - 1).min(16));
            let retry = *used;
            self.console.agent_failed(
                &agent.name,
                &format!(
                    "{outcome}; retry {retry} of {} in {}",
                    settings.retries,
                    humantime::format_duration(delay)
                ),
                Some(&log),
            );
            self.retries.push(Retry {
                at: Instant::now() + delay,
                agent,
            });
            return self.event(
                Some(&agent.name),
                Event::RetryScheduled {
                    retry,
                    after_seconds: delay.as_secs_f64(),
                },
            );
        }
        self.console
            .agent_failed(&agent.name, &outcome.to_string(), Some(&log));
        self.failed_for_good += 1;
        let total = self.inputs.plan.agent_count();
        if let Some(when) = self.inputs.halt.triggered(self.failed_for_good, total) {
            if self.stop == Stop::No {
                self.halt(when)?;
            }
        }
        Ok(())
    }

    pub(super) fn halt(&mut self, when: HaltWhen) -> Result<()> {
        self.ending = Ending::Halted;
        self.retries.clear();
        let policy = self.inputs.halt.to_string();
        self.console.line(&format!(
            "halting (--halt {policy}): {} agent(s) failed for good; {}",
            self.failed_for_good,
            if when == HaltWhen::Now {
                "ending every agent now"
            } else {
                "no new agents, running ones finish"
            }
        ));
        self.event(
            None,
            Event::Halted {
                policy,
                failed: self.failed_for_good,
            },
        )?;
        match when {
            HaltWhen::Soon => self.stop = Stop::Draining,
            HaltWhen::Now => {
                self.stop = Stop::Killing;
                let pids: Vec<i32> = self.slots.keys().copied().collect();
                for pid in pids {
                    self.start_kill(pid, KillReason::Shutdown)?;
                }
            }
        }
        Ok(())
    }
}

impl<'a> Supervisor<'a> {
    /// A memory cgroup for this attempt, in cgroup mode (None when the cgroup
    /// cannot be made: the attempt then runs under sampling alone).
    fn agent_cgroup(&mut self, agent: &AgentPlan, attempt: u32) -> Option<AgentCgroup> {
        let root = self.cgroups.as_ref()?;
        let name = format!(
            "s{:02}-o{:02}-a{:02}-{attempt}",
            agent.at.segment, agent.at.orchestrator, agent.at.agent
        );
        match root.agent_group(&name, self.memory.per_agent_limit()) {
            Ok(group) => Some(group),
            Err(error) => {
                tracing::warn!("no cgroup for {}: {error}", agent.name);
                None
            }
        }
    }
}
