//! A streaming stage's loop and its neighbours in the chain: the agents of a
//! stage fed by another wait until the upstream agents covering their items
//! have finished for good, then go to the scheduler with their task files
//! filled with the upstream records; and a stage that feeds another says
//! which of its agents have finished. Running agents are counted for the
//! pipeline's max_parallel as they start and end.

use shared::plan::AgentPlan;

use super::{Ending, Stop, Supervisor};
use crate::error::{Result, SupervisorError};

impl<'a> Supervisor<'a> {
    /// The agents of a segment about to run: to the scheduler, or, in a stage
    /// fed by another, to wait for their upstream agents first.
    pub(super) fn feed(&mut self, agents: Vec<&'a AgentPlan>) {
        if self.inputs.stage.and_then(|s| s.fed_by).is_some() {
            self.waiting.extend(agents);
            self.waiting_grew = true;
        } else {
            self.scheduler.feed(agents);
        }
    }

    /// Agents whose upstream agents are all done go to the scheduler, each
    /// task file filled with the upstream records first. An upstream stage
    /// that stopped early (interrupted, deadline, budget) stops this one:
    /// what waits for it would wait forever.
    pub(super) fn admit_fed(&mut self) -> Result<()> {
        let Some(feed) = self.inputs.stage.and_then(|s| s.fed_by) else {
            return Ok(());
        };
        let changed = feed.link.changed_since(self.upstream.version);
        let grew = std::mem::take(&mut self.waiting_grew);
        if let Some(upstream) = changed {
            self.upstream = upstream;
        } else if !grew {
            return Ok(());
        }
        if self.waiting.is_empty() {
            return Ok(());
        }
        if self.upstream.ended == Some(false) {
            let left = std::mem::take(&mut self.waiting).len();
            if self.stop == Stop::No {
                self.console.line(&format!(
                    "stage {} stopped: the {left} agent(s) waiting for its records do not start",
                    feed.stage
                ));
                if self.ending == Ending::Completed {
                    self.ending = Ending::Halted;
                }
                self.stop = Stop::Draining;
            }
            return Ok(());
        }
        let (ready, waiting): (Vec<&'a AgentPlan>, Vec<&'a AgentPlan>) =
            std::mem::take(&mut self.waiting)
                .into_iter()
                .partition(|agent| feed.covers(agent, &self.upstream));
        self.waiting = waiting;
        let id_field = &self.inputs.plan.id_field;
        for agent in ready {
            let filled =
                feed.fill_task(self.inputs.run, agent, id_field)
                    .map_err(SupervisorError::io(format!(
                        "cannot write the items of {} from stage {}",
                        agent.name, feed.stage
                    )))?;
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
            self.scheduler.feed([agent]);
        }
        Ok(())
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
