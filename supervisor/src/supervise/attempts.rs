//! Starting attempts and ending them: launch (or adopt, on resume), the
//! record of how an attempt went, retries after a doubling backoff, and the
//! halt policy.

use std::time::Instant;

use shared::exit_codes;
use shared::journal::{Event, Killed, KilledBy, LaunchPhase};
use shared::plan::AgentPlan;

use super::{Ending, Stop, Supervisor};
use crate::error::{Result, SupervisorError};
use crate::executor::{AttemptKey, Started};
use crate::outcome::{KillReason, Outcome};
use crate::reporting::failures::last_log_line;
use crate::reporting::report::AttemptRecord;
use crate::run::live::{LiveAgent, LiveAgents};
use crate::schedule::gate::Phase;
use crate::schedule::halt::HaltWhen;
use crate::supervise::slot::{count_lines, Slot};

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl<'a> Supervisor<'a> {
    pub(super) fn launch(&mut self, agent: &'a AgentPlan) -> Result<()> {
        let attempt = self.scheduler.next_attempt(agent);
        let output = self.inputs.run.agent_output(agent.at);
        let saved_at_launch = count_lines(&output);
        let launched_at = now_rfc3339();
        let started = match self.executor.start(agent, attempt) {
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
        let phase = match self.scheduler.note_launch(now) {
            Phase::Warmup => Some(LaunchPhase::Warmup),
            Phase::Wave(n) => Some(LaunchPhase::Wave(n)),
            Phase::Free => None,
        };
        let launched = Event::Launched {
            attempt,
            items: agent.items,
            already_saved: saved_at_launch,
            phase,
            pid: started.key.pid(),
            start_ticks: started.key.pid().map(|_| started.start_ticks.unwrap_or(0)),
            job_id: started.key.job_id(),
        };
        self.event(Some(&agent.name), launched)?;
        self.insert_slot(agent, attempt, started, saved_at_launch, launched_at);
        self.watchdog.memory.note_launch(now);
        Ok(())
    }

    /// Takes over an attempt of `agent` that a dead supervisor left running
    /// (Slurm jobs, on resume); true when the agent is now watched through it.
    pub(super) fn adopt(&mut self, agent: &'a AgentPlan) -> Result<bool> {
        let Some(adopted) = self.executor.adopt(agent) else {
            return Ok(false);
        };
        let attempt = self.scheduler.adopted_attempt(agent);
        let saved = count_lines(&self.inputs.run.agent_output(agent.at));
        let adopted_event = Event::Adopted {
            job_id: adopted.key.job_id().unwrap_or(0),
            state: adopted.state.to_owned(),
            attempt,
            elapsed_seconds: adopted.elapsed.as_secs(),
        };
        self.event(Some(&agent.name), adopted_event)?;
        self.console.line(&format!(
            "{}: adopted {} ({})",
            agent.name, adopted.key, adopted.state
        ));
        let started = Started {
            key: adopted.key,
            start_ticks: None,
        };
        self.insert_slot(agent, attempt, started, saved, now_rfc3339());
        // The attempt's clock did not stop while nobody watched it.
        let timeout = self.watchdog.fixed_timeout();
        if let (Some(slot), Some(limit)) = (self.slots.get_mut(&adopted.key), timeout) {
            slot.deadline = Some(Instant::now() + limit.saturating_sub(adopted.elapsed));
        }
        Ok(true)
    }

    /// A slot for an attempt that has started (or been adopted). The clock of
    /// agent.timeout starts now.
    fn insert_slot(
        &mut self,
        agent: &'a AgentPlan,
        attempt: u32,
        started: Started,
        saved_at_launch: usize,
        launched_at: String,
    ) {
        let now = Instant::now();
        let output = self.inputs.run.agent_output(agent.at);
        self.slots.insert(
            started.key,
            Slot {
                agent,
                attempt,
                key: started.key,
                start_ticks: started.start_ticks.unwrap_or(0),
                started: now,
                launched_at,
                exit: None,
                deadline: self.watchdog.fixed_timeout().map(|limit| now + limit),
                saved_at_launch,
                done: saved_at_launch.min(agent.items),
                output_len: std::fs::metadata(&output).map_or(0, |m| m.len()),
                last_progress: now,
                kill: None,
                rss: 0,
                peak_rss: 0,
            },
        );
        self.count_running();
        self.live_dirty = true;
    }

    /// Rewrites live.json if the set of running agents changed.
    pub(super) fn write_live(&mut self) -> Result<()> {
        if !self.live_dirty {
            return Ok(());
        }
        let live = LiveAgents {
            supervisor_pid: self.me,
            boot_id: self.boot_id.clone(),
            updated: now_rfc3339(),
            agents: self
                .slots
                .values()
                .map(|s| LiveAgent {
                    agent: s.agent.name.clone(),
                    pid: s.key.pid().unwrap_or(0),
                    start_ticks: s.start_ticks,
                    job_id: s.key.job_id(),
                    attempt: s.attempt,
                    done: s.done,
                    items: s.agent.items,
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
    pub(super) fn finish(&mut self, key: AttemptKey) -> Result<()> {
        let Some(slot) = self.slots.remove(&key) else {
            return Ok(());
        };
        self.count_running();
        let seconds = slot.started.elapsed().as_secs_f64();
        self.watchdog.memory.note_peak(slot.peak_rss);
        // The kernel's OOM killer struck inside the agent's cgroup: that is its
        // memory limit, whatever the exit status says.
        let kernel_oom = slot.kill.is_none() && self.executor.oom_struck(key);
        if kernel_oom {
            let killed = Event::Killed(Killed {
                pid: key.pid(),
                by: Some(KilledBy::Kernel),
                peak_rss: Some(slot.peak_rss),
                ..Killed::because(KillReason::Memory)
            });
            self.event(Some(&slot.agent.name), killed)?;
        }
        self.executor.release(key);
        // Its failed items, if file events did not show them yet.
        let failures = self.inputs.run.agent_failures(slot.agent.at);
        self.failure_feed
            .update(self.console, &failures, std::time::Instant::now());
        let outcome = match (slot.kill, slot.exit) {
            _ if kernel_oom => Outcome::Killed(KillReason::Memory),
            (Some(kill), _) => Outcome::Killed(kill.reason),
            (None, Some(outcome)) => outcome,
            (None, None) => Outcome::Failed(-1),
        };
        if outcome == Outcome::Succeeded {
            let saved = count_lines(&self.inputs.run.agent_output(slot.agent.at));
            self.watchdog
                .note_success(seconds, saved.saturating_sub(slot.saved_at_launch));
        }
        let record = AttemptRecord {
            agent: slot.agent.name.clone(),
            attempt: slot.attempt,
            pid: key.pid(),
            job_id: key.job_id(),
            launched: slot.launched_at,
            seconds,
            peak_rss: slot.peak_rss,
            outcome,
        };
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
            Outcome::Succeeded => {
                if !self.wait_for_the_rest(agent) {
                    self.agent_done_for_good(agent);
                }
                return Ok(());
            }
            Outcome::Killed(reason) if reason.stops_run() => return Ok(()),
            // Not the items' fault: nothing more can run until someone fixes it.
            Outcome::Failed(exit_codes::CANNOT_GO_ON) => return self.cannot_go_on(agent),
            // The run's budget is spent: not the items' fault either.
            Outcome::Failed(exit_codes::BUDGET_SPENT) => return self.budget_spent(agent),
            // Killed to make room: back in the queue, not counted as a failure.
            Outcome::Killed(reason) if reason.makes_room() => {
                self.scheduler.requeue(agent);
                return self.event(Some(&agent.name), Event::Requeued { reason: *reason });
            }
            _ => {}
        }
        let log = self.inputs.run.agent_log(agent.at);
        let settings = &self.inputs.job.settings.agent;
        // A relaunch goes on with the items not tried yet; one whose items are
        // all saved or failed for good would only fail again.
        let untried =
            crate::reporting::failures::untried(self.inputs.run, agent, &self.inputs.plan.id_field);
        if self.stop == Stop::No && untried > 0 {
            if let Some((retry, delay)) = self.scheduler.retry(agent, settings, Instant::now()) {
                self.console.agent_failed(
                    &agent.name,
                    &format!(
                        "{outcome}; retry {retry} of {} in {}",
                        settings.retries,
                        humantime::format_duration(delay)
                    ),
                    Some(&log),
                );
                return self.event(
                    Some(&agent.name),
                    Event::RetryScheduled {
                        retry,
                        after_seconds: delay.as_secs_f64(),
                    },
                );
            }
        }
        self.console
            .agent_failed(&agent.name, &outcome.to_string(), Some(&log));
        self.failed_for_good += 1;
        self.agent_done_for_good(agent);
        let total = self.inputs.plan.agent_count();
        if let Some(when) = self.inputs.halt.triggered(self.failed_for_good, total) {
            if self.stop == Stop::No {
                self.halt(when)?;
            }
        }
        Ok(())
    }

    /// An agent exited with CANNOT_GO_ON (no usable API key, a full disk):
    /// the run stops, with the agent's last word as the reason.
    fn cannot_go_on(&mut self, agent: &AgentPlan) -> Result<()> {
        if matches!(self.ending, Ending::CannotGoOn(_)) {
            return Ok(());
        }
        let log = self.inputs.run.agent_log(agent.at);
        // An agent that could not even write its log: most likely the disk.
        self.watchdog.disk.sample();
        let reason = last_log_line(&log)
            .or_else(|| self.watchdog.disk.full())
            .unwrap_or_else(|| format!("see {}", log.display()));
        self.stop_for_good(Some(&agent.name), reason)
    }

    /// The run directory's disk is below limits.min_disk and nothing runs:
    /// the run stops as when an agent cannot go on.
    pub(super) fn disk_short(&mut self) -> Result<()> {
        if self.stop != Stop::No {
            return Ok(());
        }
        let reason = self
            .watchdog
            .disk
            .shortage()
            .unwrap_or_else(|| "the disk is below limits.min_disk".to_owned());
        self.stop_for_good(None, reason)
    }

    /// Cannot go on (exit 5, resumable once fixed): nothing more starts, the
    /// running agents are stopped as for Ctrl-C, the reason is said and journaled.
    fn stop_for_good(&mut self, agent: Option<&str>, reason: String) -> Result<()> {
        let from = agent.map(|name| format!("{name}: ")).unwrap_or_default();
        self.console.line(&format!(
            "cannot go on: {from}{reason}; stopping every agent (resumable once fixed)"
        ));
        self.event(
            agent,
            Event::CannotGoOn {
                reason: reason.clone(),
            },
        )?;
        self.ending = Ending::CannotGoOn(reason);
        self.stop = Stop::Killing;
        self.scheduler.drop_retries();
        self.kill_all(KillReason::Shutdown)
    }

    pub(super) fn halt(&mut self, when: HaltWhen) -> Result<()> {
        self.ending = Ending::Halted;
        self.scheduler.drop_retries();
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
                self.kill_all(KillReason::Shutdown)?;
            }
        }
        Ok(())
    }
}
