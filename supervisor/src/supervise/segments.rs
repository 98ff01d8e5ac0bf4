//! The loop itself: segments one after another, and inside a segment the
//! wait for the next message or timer, launches, and the merge at its end.

use std::collections::HashSet;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Instant;

use shared::journal::Event;
use shared::plan::{AgentPlan, SegmentPlan};
use shared::validate::Problem;

use super::messages::lost_signals;
use super::{RunResult, Stop, Supervisor, KILL_POLL};
use crate::error::{Result, SupervisorError};
use crate::executor::AttemptKey;
use crate::merge;
use crate::outcome::{KillReason, MemoryReport};
use crate::platform;
use crate::reporting::view::RunSnapshot;

impl<'a> Supervisor<'a> {
    pub fn run(mut self) -> Result<RunResult> {
        match self.run_segments() {
            Ok(problems) => Ok(self.result(problems)),
            Err(error) => {
                // The run cannot go on (a full disk, say): nothing it started
                // may outlive it, and everything saved stays for `resume`.
                self.abandon();
                Err(error)
            }
        }
    }

    /// Runs the segments in turn; the problems their merges found.
    fn run_segments(&mut self) -> Result<Vec<Problem>> {
        let plan = self.inputs.plan;
        let run = self.inputs.run;
        self.event(
            None,
            Event::RunStarted {
                job: plan.job.clone(),
                items: plan.items_total,
                agents: plan.agent_count(),
                segments: plan.segments.len(),
                max_parallel: self.scheduler.max_parallel(),
                supervisor_pid: self.me,
                already_complete: self.inputs.complete.len(),
                memory_mode: self.memory_mode.clone(),
                platform: platform::current().name().to_owned(),
            },
        )?;
        if let Err(error) = self.executor.discover(self.inputs.resumed) {
            self.console.line(&error);
        }
        self.announce_complete();
        let mut problems = Vec::new();
        for segment in &plan.segments {
            if self.stop != Stop::No {
                break;
            }
            let todo: Vec<&'a AgentPlan> = segment
                .agents()
                .filter(|a| !self.inputs.complete.contains(&a.at))
                .collect();
            if todo.is_empty() && merge::segment_up_to_date(run, segment) {
                self.console.line(&format!(
                    "segment {}/{}: already complete",
                    segment.number,
                    plan.segments.len()
                ));
                continue;
            }
            self.run_segment(segment, todo)?;
            let names: HashSet<String> = segment.agents().map(|a| a.name.clone()).collect();
            if self.stop != Stop::No {
                self.sweep(&names, KillReason::Shutdown)?;
                break;
            }
            self.sweep(&names, KillReason::SegmentEnd)?;
            let started = Instant::now();
            let (found, stamp) = merge::merge_segment(run, plan, segment).map_err(
                SupervisorError::io(format!("cannot merge segment {}", segment.number)),
            )?;
            let seconds = started.elapsed().as_secs_f64();
            self.event(
                None,
                Event::merged(segment.number, stamp, found.len(), seconds),
            )?;
            for problem in &found {
                self.console.problem(problem);
            }
            problems.extend(found);
            self.event(
                None,
                Event::SegmentDone {
                    segment: segment.number,
                },
            )?;
            self.events
                .sync()
                .map_err(SupervisorError::io("cannot sync events.jsonl"))?;
            self.console.segment_done(segment, plan.segments.len());
            self.refresh_view(Instant::now(), true);
        }
        Ok(problems)
    }

    fn result(mut self, problems: Vec<Problem>) -> RunResult {
        self.failure_feed.flush(self.console);
        self.view.finish();
        self.executor.close();
        RunResult {
            ending: self.ending.clone(),
            memory: MemoryReport {
                started: humantime::format_rfc3339_millis(self.watchdog.memory.started_at())
                    .to_string(),
                mode: self.memory_mode,
                platform: platform::current().name(),
                ceiling: self.watchdog.memory.ceiling(),
                peak_total: self.watchdog.memory.run_peak_total,
                samples: self.watchdog.memory.samples().to_vec(),
            },
            attempts: self.attempts,
            problems,
        }
    }

    /// After an error: every attempt's tree is ended (TERM, the kill grace,
    /// KILL) and everything started for the run is swept, without the journal
    /// (which may be what failed).
    fn abandon(&mut self) {
        self.view.finish();
        let keys: Vec<AttemptKey> = self.slots.keys().copied().collect();
        for key in &keys {
            self.executor.soft_kill(*key);
        }
        let grace = self.settings().agent.kill_grace.get();
        let until = Instant::now() + grace;
        while Instant::now() < until && !keys.iter().all(|k| self.executor.is_gone(*k)) {
            std::thread::sleep(KILL_POLL);
        }
        for key in keys {
            self.executor.hard_kill(key);
            self.executor.release(key);
        }
        self.slots.clear();
        self.count_running();
        if let Some(stage) = self.inputs.stage {
            stage.slots.set_queued(stage.index, 0);
        }
        let names: HashSet<String> = self.inputs.plan.agents().map(|a| a.name.clone()).collect();
        let swept = self.executor.sweep(&names);
        if !swept.is_empty() {
            tracing::warn!(
                "ended what was left of {} agent(s) after the error",
                swept.len()
            );
        }
        self.executor.close();
    }

    /// Launches and watches the agents of one segment until every attempt,
    /// retries included, has ended (or a shutdown or halt has ended them).
    fn run_segment(&mut self, segment: &'a SegmentPlan, todo: Vec<&'a AgentPlan>) -> Result<()> {
        self.segment_number = segment.number;
        // A resumed run's attempts still running elsewhere are watched, not redone.
        let mut fresh = Vec::new();
        for agent in todo {
            if !self.adopt(agent)? {
                fresh.push(agent);
            }
        }
        self.feed(fresh);
        self.scheduler.start_segment(Instant::now());
        self.console
            .segment_started(segment, self.inputs.plan.segments.len());
        loop {
            let now = Instant::now();
            self.admit_fed()?;
            self.scheduler.admit_due(now);
            let disk_admits = self.watchdog.disk.admits();
            self.launch_what_may_start(now, disk_admits)?;
            if !disk_admits && self.slots.is_empty() && !self.scheduler.is_idle() {
                // Nothing runs that could free space: waiting would be forever.
                self.disk_short()?;
            }
            // live.json is current before the loop waits for anything.
            self.write_live()?;
            let idle = self.scheduler.is_idle() && self.waiting.is_empty();
            if self.slots.is_empty() && (idle || self.stop != Stop::No) {
                self.scheduler.clear_queue();
                self.waiting.clear();
                if let Some(stage) = self.inputs.stage {
                    stage.slots.set_queued(stage.index, 0);
                }
                return Ok(());
            }
            let wake = self.next_wake(now);
            match self
                .messages
                .rx
                .recv_timeout(wake.saturating_duration_since(Instant::now()))
            {
                Ok(message) => self.on_message(message)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(lost_signals()),
            }
            while let Ok(message) = self.messages.rx.try_recv() {
                self.on_message(message)?;
            }
            let now = Instant::now();
            self.on_time(now)?;
            self.refresh_view(now, false);
        }
    }

    /// Redraws the progress display (`segment_end`: the line of a segment's end).
    fn refresh_view(&mut self, now: Instant, segment_end: bool) {
        let snapshot = RunSnapshot {
            run: self.inputs.run,
            progress: &self.progress,
            slots: &self.slots,
            segment: self.segment_number,
            segments: self.inputs.plan.segments.len(),
            failed: self.failed_for_good,
            total_rss: self.slots.values().map(|s| s.rss).sum(),
            scheduler: &self.scheduler,
        };
        if segment_end {
            self.view.segment_done(&snapshot);
        } else {
            self.view.update(&snapshot, now);
        }
    }

    /// The next instant something must be looked at.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = self.watchdog.next_tick();
        for at in [self.scheduler.next_wake(), self.deadline, self.drain_until]
            .into_iter()
            .flatten()
        {
            if at > now {
                wake = wake.min(at);
            }
        }
        if let Some(poll) = self.executor.next_poll() {
            wake = wake.min(poll);
        }
        for slot in self.slots.values() {
            match slot.kill {
                None => {
                    if let Some(deadline) = slot.deadline {
                        wake = wake.min(deadline);
                    }
                }
                Some(kill) => {
                    wake = wake.min(now + KILL_POLL);
                    if !kill.hard_sent {
                        wake = wake.min(kill.hard_at);
                    }
                }
            }
        }
        wake
    }
}
