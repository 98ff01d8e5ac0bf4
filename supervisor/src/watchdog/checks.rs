//! The watchdog: what must stop, decided on the clock. Each attempt's
//! wall-clock timeout (fixed, or relative to the run's median once known),
//! its stall timeout, the sampling ticks, and the memory verdicts: a tree over
//! agent.memory_limit, a tree the kernel's OOM killer struck, and the youngest
//! agent when the run crosses its ceiling or the machine its floor. It only
//! decides; the event loop journals and kills.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shared::job::{AgentTimeout, JobSettings};

use super::disk::DiskWatch;
use super::memory::MemoryWatch;
use super::timeouts::PerItemTimes;
use crate::executor::AttemptKey;
use crate::outcome::KillReason;
use crate::supervise::slot::Slot;

/// Cgroup files are read on one sampling tick out of this many.
const CGROUP_EVERY_TICKS: u64 = 4;

/// A tree to end, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub key: AttemptKey,
    pub reason: KillReason,
    /// The kernel's OOM killer struck part of the tree first (journaled as such).
    pub by_kernel: bool,
}

pub struct Watchdog {
    pub memory: MemoryWatch,
    pub disk: DiskWatch,
    per_item: PerItemTimes,
    fixed_timeout: Option<Duration>,
    /// agent.timeout as a percentage of the run's median time per item.
    relative_timeout: Option<f64>,
    stall_timeout: Option<Duration>,
    sample_interval: Duration,
    next_tick: Instant,
    ticks: u64,
}

impl Watchdog {
    pub fn new(settings: &JobSettings, memory: MemoryWatch, disk: DiskWatch, now: Instant) -> Self {
        let timeout = settings.agent.timeout;
        Self {
            memory,
            disk,
            per_item: PerItemTimes::default(),
            fixed_timeout: timeout.and_then(AgentTimeout::fixed),
            relative_timeout: match timeout {
                Some(AgentTimeout::PercentOfMedian(percent)) => Some(percent),
                _ => None,
            },
            stall_timeout: settings.agent.stall_timeout.map(|d| d.get()),
            sample_interval: settings.limits.sample_interval.get(),
            next_tick: now,
            ticks: 0,
        }
    }

    /// agent.timeout when it is a fixed limit.
    pub fn fixed_timeout(&self) -> Option<Duration> {
        self.fixed_timeout
    }

    /// When the next sampling tick is due.
    pub fn next_tick(&self) -> Instant {
        self.next_tick
    }

    /// Starts a sampling tick if one is due: Some(deep) where `deep` says to
    /// read the slower sources (cgroup files) on this one.
    pub fn tick_due(&mut self, now: Instant) -> Option<bool> {
        if now < self.next_tick {
            return None;
        }
        self.next_tick = now + self.sample_interval;
        self.ticks += 1;
        // Children are found by the tree walk and orphans by adoption; the
        // cgroup is the backstop, read every few ticks only.
        Some(self.ticks.is_multiple_of(CGROUP_EVERY_TICKS))
    }

    /// A succeeded attempt: its time per item feeds relative timeouts.
    pub fn note_success(&mut self, seconds: f64, items: usize) {
        self.per_item.record(seconds, items);
    }

    /// A relative timeout for `slot`, once the run's median makes it known.
    pub fn relative_deadline(&self, slot: &Slot<'_>) -> Option<Instant> {
        let percent = self.relative_timeout?;
        if slot.deadline.is_some() {
            return None;
        }
        let items = slot.agent.items.saturating_sub(slot.saved_at_launch);
        let limit = self.per_item.limit(percent, items)?;
        Some(slot.started + limit)
    }

    /// A running attempt past its timeout or its stall timeout.
    pub fn overdue(&self, slot: &Slot<'_>, now: Instant) -> Option<KillReason> {
        if slot.exit.is_some() {
            return None;
        }
        if slot.deadline.is_some_and(|deadline| now >= deadline) {
            return Some(KillReason::Timeout);
        }
        let stalled = self
            .stall_timeout
            .is_some_and(|limit| now.duration_since(slot.last_progress) >= limit);
        stalled.then_some(KillReason::Stall)
    }

    /// Trees to end for memory after a sample: over their own limit, struck
    /// by the kernel's OOM killer (`struck`, on deep ticks), and the youngest
    /// agent when the run is under pressure (least work lost; one agent alone
    /// is never killed to make room: it would only come back).
    pub fn memory_verdicts(
        &mut self,
        slots: &HashMap<AttemptKey, Slot<'_>>,
        struck: impl Fn(AttemptKey) -> bool,
    ) -> Vec<Verdict> {
        let running = || {
            slots
                .values()
                .filter(|s| s.kill.is_none() && s.exit.is_none())
        };
        let limit = self.memory.per_agent_limit();
        let mut verdicts: Vec<Verdict> = running()
            .filter(|s| limit.is_some_and(|l| s.rss > l))
            .map(|s| Verdict {
                key: s.key,
                reason: KillReason::Memory,
                by_kernel: false,
            })
            .collect();
        let over: Vec<AttemptKey> = verdicts.iter().map(|v| v.key).collect();
        let spared = |s: &&Slot<'_>| !over.contains(&s.key);
        verdicts.extend(
            running()
                .filter(spared)
                .filter(|s| struck(s.key))
                .map(|s| Verdict {
                    key: s.key,
                    reason: KillReason::Memory,
                    by_kernel: true,
                }),
        );
        let Some(pressure) = self.memory.pressure() else {
            return verdicts;
        };
        let making_room = slots
            .values()
            .any(|s| s.kill.is_some_and(|k| k.reason.makes_room()));
        let ending: Vec<AttemptKey> = verdicts.iter().map(|v| v.key).collect();
        let candidates: Vec<&Slot<'_>> = running().filter(|s| !ending.contains(&s.key)).collect();
        if making_room || candidates.len() < 2 {
            return verdicts;
        }
        if let Some(youngest) = candidates.iter().max_by_key(|s| s.started) {
            self.memory.note_eviction(youngest.rss);
            verdicts.push(Verdict {
                key: youngest.key,
                reason: pressure.reason(),
                by_kernel: false,
            });
        }
        verdicts
    }
}

#[cfg(test)]
#[path = "checks_tests.rs"]
mod tests;
