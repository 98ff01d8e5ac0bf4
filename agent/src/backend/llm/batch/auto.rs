//! `mode = "auto"`: batch mode until the run's deadline (or batch_deadline)
//! is near, then the items still outstanding go online so that the night
//! ends on time. At that moment each batch still open is cancelled at the
//! provider and polled once more: what it finished is saved (nothing is paid
//! twice for it); the rest go online. A batch that has not ended by then
//! stays in the journal, so a later launch still collects it.

use std::time::{Duration, SystemTime};

use super::{Flow, Stop};
use crate::backend::llm::Retry;
use crate::core::writer::Append;

impl<A: Append> Flow<'_, '_, '_, A> {
    fn online_due(&self) -> bool {
        self.run.online_at.is_some_and(|at| SystemTime::now() >= at)
    }

    /// How long to sleep before the next poll: batch_poll, or less when
    /// the switch to online comes sooner.
    pub(super) fn wait(&self) -> Duration {
        match self.run.online_at {
            Some(at) => at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(self.run.poll),
            None => self.run.poll,
        }
    }

    /// Err(Stop::Online) once auto mode's deadline has come, after the
    /// open batches were cancelled and what they finished saved.
    pub(super) fn online_if_due(&mut self) -> Result<(), Stop> {
        if !self.online_due() {
            return Ok(());
        }
        let agent = self.run.agent;
        eprintln!(
            "{agent}: the deadline of mode = \"auto\" has come: {} item(s) go online; cancelling {} batch(es)",
            self.items.len(),
            self.open.len()
        );
        for mut batch in std::mem::take(&mut self.open) {
            match self.client.cancel(&batch.id) {
                Ok(_) => {}
                Err(error) if error.retry() == Retry::KeyRejected => {
                    return Err(Stop::NoKey(error))
                }
                Err(error) => eprintln!("{agent}: cannot cancel batch {}: {error}", batch.id),
            }
            // What the batch finished before the cancel is saved now; its
            // other items go online with the rest.
            if !self.poll(&mut batch)? {
                eprintln!(
                    "{agent}: batch {} has not ended yet; its items go online (a later launch still reads it)",
                    batch.id
                );
            }
        }
        self.next.clear();
        Err(Stop::Online)
    }
}
