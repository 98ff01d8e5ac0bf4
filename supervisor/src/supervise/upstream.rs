//! A streaming stage's loop and its neighbours in the chain: the agents of a
//! stage fed by another wait until the upstream agents covering their items
//! have finished for good, then go to the scheduler with their task files
//! filled with the upstream records (with free slots, they run earlier on
//! the records saved so far); and a stage that feeds another says which of
//! its agents have finished and how many records each has saved. Running agents are counted for the
//! pipeline's max_parallel as they start and end.

use shared::plan::AgentPlan;

use super::{Ending, Stop, Supervisor};
use crate::error::{Result, SupervisorError};
use crate::run::stage_feed::Feed;

impl<'a> Supervisor<'a> {
    /// The agents of a segment about to run: to the scheduler, or, in a stage
    /// fed by another, to wait for their upstream agents first.
    pub(super) fn feed(&mut self, agents: Vec<&'a AgentPlan>) {
        if self.inputs.stage.and_then(|s| s.fed_by).is_some() {
            self.waiting.extend(agents);
        } else {
            self.scheduler.feed(agents);
        }
    }

    /// Agents whose upstream agents are all done go to the scheduler, each
    /// task file filled with the upstream records first. While slots are
    /// free, an agent whose upstream agents are still at work runs on the
    /// records there are (a quarter of its items at least), and waits again
    /// after. An upstream stage that stopped early (interrupted, deadline,
    /// budget) stops this one: what waits for it would wait forever.
    pub(super) fn admit_fed(&mut self) -> Result<()> {
        let Some(feed) = self.inputs.stage.and_then(|s| s.fed_by) else {
            return Ok(());
        };
        if let Some(upstream) = feed.link.changed_since(self.upstream.version) {
            self.upstream = upstream;
        }
        if self.waiting.is_empty() {
            return Ok(());
        }
        if self.stop != Stop::No {
            return Ok(());
        }
        if self.upstream.ended == Some(false) {
            let left = std::mem::take(&mut self.waiting).len();
            self.console.line(&format!(
                "stage {} stopped: the {left} agent(s) waiting for its records do not start",
                feed.stage
            ));
            if self.ending == Ending::Completed {
                self.ending = Ending::Halted;
            }
            self.stop = Stop::Draining;
            return Ok(());
        }
        let mut free = self.free_slots();
        let mut still = Vec::new();
        for agent in std::mem::take(&mut self.waiting) {
            if feed.covers(agent, &self.upstream) {
                self.partial.remove(&agent.at);
                self.fill_and_queue(feed, agent, false)?;
            } else if free > 0 && self.worth_a_partial_run(feed, agent) {
                if self.fill_and_queue(feed, agent, true)? {
                    free -= 1;
                    self.partial.insert(agent.at);
                } else {
                    still.push(agent);
                }
            } else {
                still.push(agent);
            }
        }
        self.waiting = still;
        Ok(())
    }

    /// Slots no stage uses or has queued for: what partial runs may take.
    fn free_slots(&self) -> usize {
        let Some(stage) = self.inputs.stage else {
            return 0;
        };
        let busy =
            stage.slots.busy_except(stage.index) + self.slots.len() + self.scheduler.queued();
        self.scheduler.max_parallel().saturating_sub(busy)
    }

    /// Whether enough new upstream records for `agent` may be there to run
    /// it before its upstream agents are done: a quarter of its items more
    /// than were counted at its last try.
    fn worth_a_partial_run(&self, feed: &Feed<'_>, agent: &AgentPlan) -> bool {
        let (_, counted) = self.tried.get(&agent.at).copied().unwrap_or((0, 0));
        let step = (agent.items / 4).max(1);
        feed.available(agent, &self.upstream) >= counted + step
    }

    /// Writes `agent`'s task from the upstream records and queues it; a
    /// `partial` task that holds nothing new is not queued (the records
    /// counted were for other items of its upstream agents): false.
    fn fill_and_queue(
        &mut self,
        feed: &Feed<'_>,
        agent: &'a AgentPlan,
        partial: bool,
    ) -> Result<bool> {
        let counted = feed.available(agent, &self.upstream);
        let filled = feed
            .fill_task(self.inputs.run, agent, &self.inputs.plan.id_field)
            .map_err(SupervisorError::io(format!(
                "cannot write the items of {} from stage {}",
                agent.name, feed.stage
            )))?;
        let (had, _) = self.tried.get(&agent.at).copied().unwrap_or((0, 0));
        self.tried.insert(agent.at, (filled.items, counted));
        if partial {
            if filled.items <= had {
                return Ok(false);
            }
            tracing::info!(
                "{}: {} of its {} item(s) from stage {} so far",
                agent.name,
                filled.items,
                agent.items,
                feed.stage
            );
        } else {
            tracing::info!(
                "{}: {} item(s) from stage {}, {} left out (failed there)",
                agent.name,
                filled.items,
                feed.stage,
                filled.left_out
            );
            if filled.left_out > 0 {
                self.console.line(&format!(
                    "agent {}: {} item(s) failed in stage {} and do not enter this stage",
                    agent.name, filled.left_out, feed.stage
                ));
            }
        }
        self.scheduler.feed([agent]);
        Ok(true)
    }

    /// An attempt on part of the agent's items (its upstream agents were at
    /// work) succeeded: the agent waits for the rest.
    pub(super) fn wait_for_the_rest(&mut self, agent: &'a AgentPlan) -> bool {
        if self.partial.remove(&agent.at) {
            self.waiting.push(agent);
            return true;
        }
        false
    }

    /// Tells the stage downstream, if any, that `agent` will not run again in
    /// this session.
    pub(super) fn agent_done_for_good(&self, agent: &AgentPlan) {
        if let Some(link) = self.inputs.stage.and_then(|s| s.feeds) {
            link.agent_finished(agent);
        }
    }

    /// Agents complete before the session started are done for good too.
    pub(super) fn announce_complete(&self) {
        if self.inputs.stage.and_then(|s| s.feeds).is_none() {
            return;
        }
        for agent in self.inputs.plan.agents() {
            if self.inputs.complete.contains(&agent.at) {
                self.agent_done_for_good(agent);
            }
        }
    }

    /// The number of running agents, for the pipeline's max_parallel.
    pub(super) fn count_running(&self) {
        if let Some(stage) = self.inputs.stage {
            stage.slots.set_running(stage.index, self.slots.len());
        }
    }
}
