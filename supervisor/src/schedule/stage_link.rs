//! What the stages of a streaming pipeline share while they run side by side,
//! one supervisor loop per stage, each a thread of the same process:
//!
//! - `StageLink`, between a stage and the next: which upstream agents have
//!   finished for good (every item saved or failed for good), and whether the
//!   upstream stage has ended. A downstream agent may start once every
//!   upstream agent covering its items has finished. Until the downstream
//!   loop has seen the latest change (and queued what it made ready), the
//!   upstream loop launches nothing: otherwise it would take the slot its
//!   own finished agent just freed before the downstream loop even woke.
//! - `SharedSlots`: limits.max_parallel counts the agents of every stage. A
//!   loop launches only while it holds the launch turn, and counts the others'
//!   running agents then: counts only grow under the turn, so the limit holds
//!   exactly; a loop whose agents end wakes the others. Later stages come
//!   first: a stage leaves free slots to the agents queued in the stages
//!   after it, so records flow to the end of the chain instead of piling up
//!   between stages. The agents' memory is counted the same way: each stage
//!   holds limits.ram_ceiling against every stage's agents together.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Mutex, MutexGuard};

use shared::plan::AgentPlan;

use crate::executor::local::reaper::Msg;

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How the upstream stage stands, as its downstream stage sees it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `first_item` of each upstream agent finished for good.
    pub finished: HashSet<usize>,
    /// Records saved so far by each upstream agent (by `first_item`) that
    /// has saved any in this session.
    pub saved: HashMap<usize, usize>,
    /// Set once the upstream session is over: whether it ran to its end
    /// (every agent finished) rather than stopping early.
    pub ended: Option<bool>,
    /// Grows with every change, so the downstream loop looks again only then.
    pub version: u64,
    /// Grows when an agent finishes or the stage ends (what frees a slot).
    pub finishes: u64,
}

/// One link of the chain: written by the upstream stage's loop, read by the
/// downstream stage's.
#[derive(Default)]
pub struct StageLink {
    state: Mutex<Upstream>,
    downstream: Mutex<Option<Sender<Msg>>>,
    /// Whether a downstream loop listens (and has not ended).
    listening: AtomicBool,
    /// The last `finishes` the downstream loop has acted on.
    seen: AtomicU64,
    upstream: Mutex<Option<Sender<Msg>>>,
}

impl StageLink {
    /// The downstream loop's channel, woken at every change.
    pub fn listen(&self, tx: Sender<Msg>) {
        *locked(&self.downstream) = Some(tx);
        self.listening.store(true, Ordering::Release);
    }

    /// The upstream loop's channel, woken when the downstream loop has seen
    /// a change (or ended).
    pub fn listen_upstream(&self, tx: Sender<Msg>) {
        *locked(&self.upstream) = Some(tx);
    }

    /// The downstream loop has acted on `finishes` (its ready agents queued).
    pub fn mark_seen(&self, finishes: u64) {
        if self.seen.swap(finishes, Ordering::AcqRel) != finishes {
            self.wake_upstream();
        }
    }

    /// The downstream loop has ended: nobody is behind any more.
    pub fn close(&self) {
        self.listening.store(false, Ordering::Release);
        self.wake_upstream();
    }

    /// Whether the downstream loop has yet to act on the latest change.
    pub fn downstream_behind(&self) -> bool {
        self.listening.load(Ordering::Acquire)
            && self.seen.load(Ordering::Acquire) != locked(&self.state).finishes
    }

    fn wake_upstream(&self) {
        if let Some(tx) = locked(&self.upstream).as_ref() {
            let _ = tx.send(Msg::Wake);
        }
    }

    /// An upstream agent will not run again in this session: its records are
    /// all there is.
    pub fn agent_finished(&self, agent: &AgentPlan) {
        let mut state = locked(&self.state);
        if state.finished.insert(agent.first_item) {
            state.version += 1;
            state.finishes += 1;
            drop(state);
            self.wake();
        }
    }

    /// An upstream agent has saved `records` records so far: what it saved
    /// may go on downstream before the agent is done.
    pub fn records_saved(&self, agent: &AgentPlan, records: usize) {
        let mut state = locked(&self.state);
        let known = state.saved.entry(agent.first_item).or_insert(0);
        if records > *known {
            *known = records;
            state.version += 1;
            drop(state);
            self.wake();
        }
    }

    /// The upstream session is over (`completed`: it ran to its end).
    pub fn stage_ended(&self, completed: bool) {
        let mut state = locked(&self.state);
        state.ended = Some(completed);
        state.version += 1;
        state.finishes += 1;
        drop(state);
        self.wake();
    }

    /// The upstream stage as it stands, if it changed since `seen`.
    pub fn changed_since(&self, seen: u64) -> Option<Upstream> {
        let state = locked(&self.state);
        (state.version != seen).then(|| state.clone())
    }

    fn wake(&self) {
        if let Some(tx) = locked(&self.downstream).as_ref() {
            // A loop that has ended needs no waking.
            let _ = tx.send(Msg::Wake);
        }
    }
}

/// limits.max_parallel across the stages of a pipeline.
pub struct SharedSlots {
    turn: Mutex<()>,
    running: Vec<AtomicUsize>,
    /// Agents each stage could launch now (its scheduler's queue).
    queued: Vec<AtomicUsize>,
    /// Resident memory of each stage's agents at its last sample.
    rss: Vec<AtomicU64>,
    loops: Mutex<Vec<Option<Sender<Msg>>>>,
}

impl SharedSlots {
    pub fn new(stages: usize) -> Self {
        Self {
            turn: Mutex::new(()),
            running: (0..stages).map(|_| AtomicUsize::new(0)).collect(),
            queued: (0..stages).map(|_| AtomicUsize::new(0)).collect(),
            rss: (0..stages).map(|_| AtomicU64::new(0)).collect(),
            loops: Mutex::new(vec![None; stages]),
        }
    }

    /// Stage `stage`'s loop, woken when another stage frees a slot.
    pub fn listen(&self, stage: usize, tx: Sender<Msg>) {
        if let Some(slot) = locked(&self.loops).get_mut(stage) {
            *slot = Some(tx);
        }
    }

    /// Held while a loop launches.
    pub fn turn(&self) -> MutexGuard<'_, ()> {
        locked(&self.turn)
    }

    /// Agents running in the stages other than `stage`.
    pub fn others(&self, stage: usize) -> usize {
        sum_except(&self.running, stage)
    }

    /// Stage `stage`'s agents hold `rss` bytes now; returns what every
    /// stage's agents hold together.
    pub fn note_rss(&self, stage: usize, rss: u64) -> u64 {
        if let Some(own) = self.rss.get(stage) {
            own.store(rss, Ordering::Release);
        }
        self.rss.iter().map(|r| r.load(Ordering::Acquire)).sum()
    }

    /// Agents running or queued in the stages other than `stage`.
    pub fn busy_except(&self, stage: usize) -> usize {
        self.others(stage) + sum_except(&self.queued, stage)
    }

    /// Agents queued in the stages after `stage`: slots it leaves to them.
    pub fn queued_after(&self, stage: usize) -> usize {
        self.queued
            .iter()
            .skip(stage + 1)
            .map(|count| count.load(Ordering::Acquire))
            .sum()
    }

    /// Stage `stage` has `queued` agents it could launch now.
    pub fn set_queued(&self, stage: usize, queued: usize) {
        if let Some(count) = self.queued.get(stage) {
            count.store(queued, Ordering::Release);
        }
    }

    /// Stage `stage` now runs `running` agents; fewer than before wakes the
    /// other loops, which may launch into the freed slots.
    pub fn set_running(&self, stage: usize, running: usize) {
        let Some(count) = self.running.get(stage) else {
            return;
        };
        let before = count.swap(running, Ordering::AcqRel);
        if running < before {
            for (index, tx) in locked(&self.loops).iter().enumerate() {
                if let (true, Some(tx)) = (index != stage, tx) {
                    let _ = tx.send(Msg::Wake);
                }
            }
        }
    }
}

/// The counts of every stage but `stage`, summed.
fn sum_except(counts: &[AtomicUsize], stage: usize) -> usize {
    counts
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != stage)
        .map(|(_, count)| count.load(Ordering::Acquire))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::plan::AgentRef;
    use std::sync::mpsc::channel;

    fn agent(first_item: usize) -> AgentPlan {
        AgentPlan {
            name: "segment_01/orch_01/agent_01".into(),
            at: AgentRef {
                segment: 1,
                orchestrator: 1,
                agent: 1,
            },
            first_item,
            items: 2,
        }
    }

    #[test]
    fn a_finished_agent_wakes_the_downstream_loop_once() {
        let link = StageLink::default();
        let (tx, rx) = channel();
        link.listen(tx);
        assert!(link.changed_since(0).is_none());
        link.agent_finished(&agent(4));
        link.agent_finished(&agent(4));
        assert_eq!(rx.try_iter().count(), 1);
        let seen = link.changed_since(0).expect("changed");
        assert!(seen.finished.contains(&4) && seen.ended.is_none());
        assert!(link.changed_since(seen.version).is_none());
        link.stage_ended(true);
        assert_eq!(
            link.changed_since(seen.version).map(|u| u.ended),
            Some(Some(true))
        );
    }

    #[test]
    fn the_upstream_loop_waits_until_the_downstream_loop_has_seen_a_finish() {
        let link = StageLink::default();
        let (up, up_rx) = channel();
        link.listen_upstream(up);
        link.agent_finished(&agent(0));
        assert!(!link.downstream_behind(), "nobody listens downstream");
        let (down, _down_rx) = channel();
        link.listen(down);
        assert!(link.downstream_behind());
        let finishes = link.changed_since(0).expect("changed").finishes;
        link.mark_seen(finishes);
        assert!(!link.downstream_behind());
        assert_eq!(up_rx.try_iter().count(), 1, "the upstream loop is woken");
        link.records_saved(&agent(2), 1);
        assert!(!link.downstream_behind(), "a saved record frees no slot");
        assert_eq!(link.changed_since(0).map(|u| u.saved[&2]), Some(1));
        link.agent_finished(&agent(2));
        assert!(link.downstream_behind());
        link.close();
        assert!(
            !link.downstream_behind(),
            "an ended loop holds nothing back"
        );
    }

    #[test]
    fn a_freed_slot_wakes_the_other_stages_only() {
        let slots = SharedSlots::new(3);
        let (tx0, rx0) = channel();
        let (tx2, rx2) = channel();
        slots.listen(0, tx0);
        slots.listen(2, tx2);
        slots.set_running(0, 2);
        slots.set_running(2, 1);
        assert_eq!(slots.others(1), 3);
        assert_eq!(slots.others(0), 1);
        assert_eq!(rx2.try_iter().count(), 0, "no slot was freed yet");
        slots.set_running(0, 1);
        assert_eq!(rx2.try_iter().count(), 1);
        assert_eq!(rx0.try_iter().count(), 0, "a loop does not wake itself");
    }

    #[test]
    fn memory_is_counted_over_every_stage() {
        let slots = SharedSlots::new(2);
        assert_eq!(slots.note_rss(0, 300), 300);
        assert_eq!(slots.note_rss(1, 200), 500);
        assert_eq!(slots.note_rss(0, 100), 300);
    }

    #[test]
    fn a_stage_leaves_slots_to_the_stages_after_it() {
        let slots = SharedSlots::new(3);
        slots.set_queued(0, 5);
        slots.set_queued(1, 2);
        slots.set_queued(2, 1);
        assert_eq!(slots.queued_after(0), 3);
        assert_eq!(slots.queued_after(1), 1);
        assert_eq!(slots.queued_after(2), 0);
    }
}
