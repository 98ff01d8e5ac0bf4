//! Watching running attempts: exits and signals as they arrive, what the
//! executor reports when polled, and on the clock the watchdog's verdicts
//! (timeout, stall, memory, the KILL after a TERM), the deadline, and the
//! sweeps that leave nothing behind.

use std::collections::HashSet;
use std::time::Instant;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use shared::control::ControlAction;
use shared::journal::{Event, Killed, KilledBy};

use super::{Ending, Stop, Supervisor};
use crate::error::{Result, SupervisorError};
use crate::executor::local::reaper::Msg;
use crate::executor::{AttemptKey, Change, Ended};
use crate::outcome::KillReason;
use crate::platform;
use crate::reporting::batch_feed::BatchFeed;
use crate::reporting::failure_feed::FailureFeed;
use crate::reporting::file_watch::FileWatch;
use crate::supervise::slot::Kill;

impl<'a> Supervisor<'a> {
    pub(super) fn on_message(&mut self, message: Msg) -> Result<()> {
        match message {
            Msg::Exited { pid, how } => match self.executor.reaped(pid, how) {
                Some(ended) => self.on_ended(ended),
                None => Ok(()),
            },
            Msg::Signal(signal) => self.on_signal(signal),
            Msg::Control(action) => self.on_control(action),
            // Looked at by the loop (upstream agents, free launch slots).
            Msg::Wake => Ok(()),
            Msg::FilesChanged => {
                let changed = self
                    .messages
                    .watch
                    .as_ref()
                    .map(FileWatch::take_changed)
                    .unwrap_or_default();
                let now = Instant::now();
                for path in changed {
                    if FailureFeed::is_failures_file(&path) {
                        self.failure_feed.update(self.console, &path, now);
                    } else if BatchFeed::is_journal(&path) {
                        self.batch_feed.update(self.console, &path);
                    } else {
                        self.count_saved(&path, now);
                    }
                }
                Ok(())
            }
        }
    }

    /// The executor saw an attempt end: journal it; one nobody is killing is
    /// over now (one being killed ends in `on_time`, once its tree is gone).
    fn on_ended(&mut self, ended: Ended) -> Result<()> {
        let Some(slot) = self.slots.get_mut(&ended.key) else {
            return Ok(());
        };
        slot.exit = Some(ended.outcome.clone());
        let seconds = slot.started.elapsed().as_secs_f64();
        let name = slot.agent.name.clone();
        let ours = slot.kill.is_some();
        if let (Some(reason), false) = (ended.killed_by, ours) {
            self.console.agent_failed(
                &name,
                &format!("Slurm ended its job ({})", ended.state.unwrap_or("ended")),
                None,
            );
            let killed = Event::Killed(Killed {
                job_id: ended.key.job_id(),
                by: Some(KilledBy::Slurm),
                ..Killed::because(reason)
            });
            self.event(Some(&name), killed)?;
        }
        let exited = Event::Exited {
            pid: ended.key.pid(),
            job_id: ended.key.job_id(),
            state: ended.state.map(str::to_owned),
            code: ended.code,
            signal: ended.signal,
            seconds,
        };
        self.event(Some(&name), exited)?;
        if !ours {
            self.finish(ended.key)?;
        }
        Ok(())
    }

    pub(super) fn on_time(&mut self, now: Instant) -> Result<()> {
        if let Some(deep) = self.watchdog.tick_due(now) {
            self.tick(now, deep)?;
        }
        self.watch_deadline(now)?;
        self.journal_rejected_keys()?;
        for change in self.executor.poll(now) {
            match change {
                Change::Running(key) => {
                    // Waiting in the queue is not running: timeout and stall
                    // count from the start.
                    let timeout = self.watchdog.fixed_timeout();
                    if let Some(slot) = self.slots.get_mut(&key) {
                        slot.restart_clocks(now, timeout);
                    }
                }
                Change::Ended(ended) => self.on_ended(ended)?,
            }
        }
        let keys: Vec<AttemptKey> = self.slots.keys().copied().collect();
        for key in keys {
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            match slot.kill {
                None if self.executor.is_queued(key) => {}
                None => {
                    if let Some(reason) = self.watchdog.overdue(slot, now) {
                        self.start_kill(key, reason)?;
                    }
                }
                Some(kill) if !kill.hard_sent && now >= kill.hard_at => {
                    slot.kill = Some(Kill {
                        hard_sent: true,
                        ..kill
                    });
                    self.executor.hard_kill(key);
                }
                Some(_) => {}
            }
            let gone = self
                .slots
                .get(&key)
                .is_some_and(|s| s.kill.is_some() && s.exit.is_some())
                && self.executor.is_gone(key);
            if gone {
                self.finish(key)?;
            }
        }
        Ok(())
    }

    /// The periodic look at every attempt: memory through the executor,
    /// agent-file growth, and relative timeouts once they are known.
    fn tick(&mut self, now: Instant, deep: bool) -> Result<()> {
        let usage = self.executor.sample(deep);
        self.watchdog.disk.sample();
        for (key, rss) in usage.attempts {
            if let Some(slot) = self.slots.get_mut(&key) {
                slot.rss = rss;
                slot.peak_rss = slot.peak_rss.max(rss);
            }
        }
        let run = self.inputs.run;
        // Without notify, or for agents writing from other machines (whose
        // writes notify may not see), growth of the agent file is looked for here.
        let poll_files = self.messages.watch.is_none() || self.executor.writes_elsewhere();
        for slot in self.slots.values_mut() {
            if poll_files {
                let output = run.agent_output(slot.agent.at);
                slot.observe_output(&output, now);
                if let Some((_, done)) = self.progress.update(&output) {
                    slot.done = done;
                }
            }
            if let Some(deadline) = self.watchdog.relative_deadline(slot) {
                slot.deadline = Some(deadline);
            }
        }
        // live.json carries each agent's progress and memory for `status`.
        self.live_dirty |= !self.slots.is_empty();
        // A pipeline's ceiling holds for every stage's agents together.
        let total = match self.inputs.stage {
            Some(stage) => stage.slots.note_rss(stage.index, usage.total),
            None => usage.total,
        };
        self.watchdog
            .memory
            .sample(now, total, platform::mem_available());
        let executor = &self.executor;
        let verdicts = self
            .watchdog
            .memory_verdicts(&self.slots, |key| deep && executor.oom_struck(key));
        for verdict in verdicts {
            if verdict.by_kernel {
                let name = self.slots.get(&verdict.key).map(|s| s.agent.name.clone());
                let struck = Event::OomKilled {
                    pid: verdict.key.pid().unwrap_or(0),
                    by: KilledBy::Kernel,
                };
                self.event(name.as_deref(), struck)?;
            }
            self.start_kill(verdict.key, verdict.reason)?;
        }
        Ok(())
    }

    pub(super) fn start_kill(&mut self, key: AttemptKey, reason: KillReason) -> Result<()> {
        let grace = self.settings().agent.kill_grace.get();
        let Some(slot) = self.slots.get_mut(&key) else {
            return Ok(());
        };
        if slot.kill.is_some() {
            return Ok(());
        }
        slot.kill = Some(Kill {
            reason,
            hard_at: Instant::now() + grace,
            hard_sent: false,
        });
        let name = slot.agent.name.clone();
        let (rss, peak) = (slot.rss, slot.peak_rss);
        let processes = self.executor.soft_kill(key);
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
            pid: key.pid(),
            job_id: key.job_id(),
            processes: Some(processes),
            rss: Some(rss),
            peak_rss: Some(peak),
            ..Killed::because(reason)
        });
        self.event(Some(&name), killed)
    }

    /// Starts the kill of every running attempt.
    pub(super) fn kill_all(&mut self, reason: KillReason) -> Result<()> {
        let keys: Vec<AttemptKey> = self.slots.keys().copied().collect();
        for key in keys {
            self.start_kill(key, reason)?;
        }
        Ok(())
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
        self.scheduler.drop_retries();
        self.kill_all(KillReason::Shutdown)?;
        self.events
            .sync()
            .map_err(SupervisorError::io("cannot sync events.jsonl"))
    }

    /// `nightshift control`: concurrency, pause and continue, a graceful stop.
    fn on_control(&mut self, action: ControlAction) -> Result<()> {
        let mut max_parallel = None;
        match action {
            ControlAction::MaxParallel { n } => {
                self.scheduler.set_max_parallel(n);
                max_parallel = Some(self.scheduler.max_parallel());
            }
            ControlAction::Pause => self.set_paused(true),
            ControlAction::Continue => self.set_paused(false),
            ControlAction::Stop => {
                self.set_paused(false);
                if self.stop == Stop::No {
                    self.ending = Ending::Interrupted;
                    self.stop = Stop::Draining;
                    self.scheduler.drop_waiting();
                }
            }
        }
        let running = self.slots.len();
        self.console.line(&match action {
            ControlAction::Stop => format!(
                "control: stop: no new agents; the {running} running finish, then the run ends (resumable)"
            ),
            ControlAction::Pause => format!(
                "control: paused: nothing is launched and permits wait; the {running} running finish their current items"
            ),
            other => format!("control: {other}"),
        });
        let name = match action {
            ControlAction::MaxParallel { .. } => "max-parallel",
            ControlAction::Pause => "pause",
            ControlAction::Continue => "continue",
            ControlAction::Stop => "stop",
        };
        self.event(
            None,
            Event::Control {
                action: name.to_owned(),
                max_parallel,
            },
        )
    }

    fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        if let Some(rate) = self.rate() {
            rate.set_paused(paused);
        }
    }

    /// Makes sure no process started for the agents `names` is alive.
    pub(super) fn sweep(&mut self, names: &HashSet<String>, reason: KillReason) -> Result<()> {
        for swept in self.executor.sweep(names) {
            let killed = Event::Killed(Killed {
                processes: swept.processes,
                job_id: swept.job_id,
                ..Killed::because(reason)
            });
            self.event(Some(&swept.agent), killed)?;
        }
        Ok(())
    }

    /// Counts what was appended to an agent file; growth is progress (stall).
    fn count_saved(&mut self, path: &std::path::Path, now: Instant) {
        let Some((agent, done)) = self.progress.update(path) else {
            return;
        };
        if let Some(slot) = self.slots.values_mut().find(|s| s.agent.at == agent) {
            if done != slot.done {
                tracing::debug!("counted {} {done}/{}", slot.agent.name, slot.agent.items);
                slot.done = done;
                slot.last_progress = now;
                if let Some(link) = self.inputs.stage.and_then(|s| s.feeds) {
                    link.records_saved(slot.agent, done);
                }
            }
        }
    }

    /// At the deadline no agent is launched any more and running agents get
    /// schedule.drain to finish; after that they are stopped as for Ctrl-C.
    fn watch_deadline(&mut self, now: Instant) -> Result<()> {
        if self.deadline.is_some_and(|d| now >= d) && self.stop == Stop::No {
            let drain = self.settings().schedule.drain.get();
            self.deadline = None;
            self.ending = Ending::Deadline;
            self.stop = Stop::Draining;
            self.scheduler.drop_waiting();
            self.drain_until = Some(now + drain);
            self.console.line(&format!(
                "deadline reached: no new agents; the {} running get {} to finish",
                self.slots.len(),
                humantime::format_duration(drain)
            ));
            let running = self.slots.len();
            self.event(
                None,
                Event::Deadline {
                    running,
                    drain_seconds: drain.as_secs_f64(),
                },
            )?;
        }
        if self.drain_until.is_some_and(|d| now >= d) && self.stop == Stop::Draining {
            self.drain_until = None;
            self.stop = Stop::Killing;
            let running = self.slots.len();
            self.event(None, Event::DrainOver { running })?;
            self.kill_all(KillReason::Deadline)?;
        }
        Ok(())
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / f64::from(1 << 20))
}
