//! Launching what may start now: inside limits.max_parallel (in a pipeline,
//! counted over every stage, later stages' queued agents first), the memory
//! and disk admission, a pause, and the scheduler's gate.

use std::time::Instant;

use super::{Stop, Supervisor};
use crate::error::Result;
use crate::schedule::scheduler::Next;
use crate::schedule::stage_link::StageLink;

impl Supervisor<'_> {
    pub(super) fn launch_what_may_start(&mut self, now: Instant, disk_admits: bool) -> Result<()> {
        // Other stages' agents count towards max_parallel, and the agents
        // queued after this stage get the free slots first: launches happen
        // under the pipeline's launch turn.
        let slots = self.inputs.stage.map(|s| (s.slots, s.index));
        let turn = slots.map(|(slots, _)| slots.turn());
        let others = slots.map_or(0, |(slots, index)| {
            slots.others(index) + slots.queued_after(index)
        });
        // The stage after this one has yet to queue what this one's finished
        // agents made ready: it is woken first, then wakes this loop.
        let downstream_behind = self
            .inputs
            .stage
            .and_then(|s| s.feeds)
            .is_some_and(StageLink::downstream_behind);
        while self.stop == Stop::No
            && !self.paused
            && !downstream_behind
            && disk_admits
            && self.watchdog.memory.admits(now, self.slots.len())
        {
            match self.scheduler.next(now, self.slots.len() + others) {
                Next::Launch(agent) => self.launch(agent)?,
                Next::WaitUntil(_) | Next::Nothing => break,
            }
        }
        if let Some((slots, index)) = slots {
            // A stage that launches nothing now (stopping, paused) holds no
            // slot back from the stages before it.
            let launching = self.stop == Stop::No && !self.paused;
            let queued = if launching {
                self.scheduler.queued()
            } else {
                0
            };
            slots.set_queued(index, queued);
        }
        drop(turn);
        // Only now, with what it made ready queued (or launched), may the
        // stage before this one launch again.
        if let Some(feed) = self.inputs.stage.and_then(|s| s.fed_by) {
            feed.link.mark_seen(self.upstream.finishes);
        }
        Ok(())
    }
}
