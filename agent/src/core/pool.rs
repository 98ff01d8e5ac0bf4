//! The bounded pool of items in flight: as many workers (std threads) as
//! agent.concurrency take the next pending item in task order, run it, and
//! hand how it ended to the single writer, which runs on the calling thread.
//! A worker waits until its item is saved before it takes another, so a crash
//! loses only the items in flight (at concurrency 1: the one item, as ever),
//! and a failed write stops every worker after the item it is on.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::thread;

use serde_json::value::RawValue;
use serde_json::Value;
use shared::ids::IdKey;

use super::writer::Finished;
use crate::item::{Ending, ItemRunner};

/// One item still to do.
#[derive(Debug, Clone, Copy)]
pub struct Pending<'a> {
    /// Its place in the task.
    pub index: usize,
    /// Its JSON text (parsed by the worker that takes it).
    pub item: &'a RawValue,
    pub id: &'a IdKey,
}

/// What a worker thread does with each item it takes.
pub trait Worker: Send {
    fn run(&mut self, item: &Value, id: &IdKey) -> Ending;
}

impl Worker for ItemRunner<'_> {
    fn run(&mut self, item: &Value, id: &IdKey) -> Ending {
        ItemRunner::run(self, item, id)
    }
}

/// A finished item on its way to the writer, with the line back to its
/// worker that says "saved".
type Handover = (Finished, SyncSender<()>);

/// Where endings go: `save` each, then `flush` makes everything saved since
/// the last flush durable. Items that finish while the writer is busy are
/// saved together and flushed once (group commit: at 64 in flight, one fsync
/// for many records), and no worker hears "saved" before that flush.
pub trait Sink {
    type Error;
    fn save(&mut self, finished: Finished) -> Result<(), Self::Error>;
    fn flush(&mut self) -> Result<(), Self::Error>;
}

/// A closure saves durably by itself: its flush has nothing to do.
impl<E, F: FnMut(Finished) -> Result<(), E>> Sink for F {
    type Error = E;
    fn save(&mut self, finished: Finished) -> Result<(), E> {
        self(finished)
    }
    fn flush(&mut self) -> Result<(), E> {
        Ok(())
    }
}

/// An item's JSON text as a value; the task's items were checked as JSON
/// objects when it was loaded, so a failure here fails only that item.
pub fn parse_item(item: &RawValue) -> Result<Value, Ending> {
    serde_json::from_str(item.get()).map_err(|e| Ending::Failed {
        reason: format!("the item is not JSON: {e}"),
        attempts: 0,
        spend: None,
    })
}

/// Runs every pending item on one of `workers` (one thread each, so their
/// number is the bound on items in flight) and gives each ending to `save`,
/// one at a time, on this thread. The first error of `save` stops the pool
/// and is returned once the items in flight have ended.
pub fn run<W: Worker, S: Sink>(
    pending: &[Pending<'_>],
    workers: Vec<W>,
    mut sink: S,
) -> Result<(), S::Error> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (sender, handovers) = mpsc::channel::<Handover>();
    thread::scope(|scope| {
        for mut worker in workers {
            let (next, stop, sender) = (&next, &stop, sender.clone());
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(pending) = pending.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        return;
                    };
                    let ending = match parse_item(pending.item) {
                        Ok(item) => worker.run(&item, pending.id),
                        Err(ending) => ending,
                    };
                    let (saved, wait) = mpsc::sync_channel(1);
                    let finished = Finished {
                        index: pending.index,
                        id: pending.id.clone(),
                        ending,
                    };
                    // Either fails only when the writer has stopped.
                    if sender.send((finished, saved)).is_err() || wait.recv().is_err() {
                        return;
                    }
                }
            });
        }
        // The writer's loop ends when every worker has dropped its sender.
        drop(sender);
        // Owned here, so that leaving on an error drops the handovers still
        // queued, and with them the lines their workers wait on.
        let handovers = handovers;
        let mut batch: Vec<SyncSender<()>> = Vec::new();
        while let Ok(first) = handovers.recv() {
            let mut next = Some(first);
            let mut result = Ok(());
            // Everything that finished meanwhile goes in this batch.
            while let Some((finished, saved)) = next.take() {
                batch.push(saved);
                result = sink.save(finished);
                if result.is_err() {
                    break;
                }
                next = handovers.try_recv().ok();
            }
            if let Err(error) = result.and_then(|()| sink.flush()) {
                // Dropping the batch's senders and, on leaving, the receiver
                // wakes every worker waiting on the writer; the rest see `stop`.
                stop.store(true, Ordering::Relaxed);
                return Err(error);
            }
            for saved in batch.drain(..) {
                // The worker is gone only if it panicked; the scope reports that.
                let _ = saved.send(());
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    /// Saves every item; `together` makes the first items meet before they
    /// end, which only happens when they are in flight at the same time.
    struct Echo {
        together: Option<Arc<Barrier>>,
        ran: Arc<AtomicUsize>,
    }

    impl Worker for Echo {
        fn run(&mut self, item: &Value, _id: &IdKey) -> Ending {
            self.ran.fetch_add(1, Ordering::Relaxed);
            if let Some(barrier) = self.together.take() {
                barrier.wait();
            }
            let mut record = Map::new();
            record.insert("id".into(), item["id"].clone());
            record.insert(
                "thread".into(),
                json!(format!("{:?}", thread::current().id())),
            );
            Ending::Saved(record)
        }
    }

    fn items(n: usize) -> (Vec<Box<RawValue>>, Vec<IdKey>) {
        let items = (0..n)
            .map(|i| RawValue::from_string(json!({"id": i}).to_string()).expect("raw"))
            .collect();
        let ids = (0..n).map(IdKey::from_line_number).collect();
        (items, ids)
    }

    fn pending<'a>(items: &'a [Box<RawValue>], ids: &'a [IdKey]) -> Vec<Pending<'a>> {
        items
            .iter()
            .zip(ids)
            .enumerate()
            .map(|(index, (item, id))| Pending {
                index,
                item: item.as_ref(),
                id,
            })
            .collect()
    }

    fn echoes(n: usize, together: bool, ran: &Arc<AtomicUsize>) -> Vec<Echo> {
        let barrier = Arc::new(Barrier::new(n));
        (0..n)
            .map(|_| Echo {
                together: together.then(|| Arc::clone(&barrier)),
                ran: Arc::clone(ran),
            })
            .collect()
    }

    #[test]
    fn every_item_is_saved_once_by_the_one_writer() {
        let (items, ids) = items(200);
        let writer = thread::current().id();
        let mut seen = Vec::new();
        // Four workers that must all be in flight at once to get going.
        run(
            &pending(&items, &ids),
            echoes(4, true, &Arc::default()),
            |finished: Finished| {
                assert_eq!(
                    thread::current().id(),
                    writer,
                    "saved on the writer's thread"
                );
                seen.push(finished.index);
                Ok::<(), ()>(())
            },
        )
        .expect("no write fails");
        seen.sort_unstable();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn one_worker_keeps_task_order() {
        let (items, ids) = items(30);
        let mut seen = Vec::new();
        run(
            &pending(&items, &ids),
            echoes(1, false, &Arc::default()),
            |finished: Finished| {
                seen.push(finished.index);
                Ok::<(), ()>(())
            },
        )
        .expect("no write fails");
        assert_eq!(seen, (0..30).collect::<Vec<_>>());
    }

    /// Keeps what was saved and what was made durable by a flush.
    #[derive(Default)]
    struct Durable {
        saved: Vec<usize>,
        durable: std::collections::HashSet<usize>,
        flushes: usize,
    }

    struct DurableSink(Arc<std::sync::Mutex<Durable>>);

    impl Sink for &DurableSink {
        type Error = ();
        fn save(&mut self, finished: Finished) -> Result<(), ()> {
            let mut state = self.0.lock().map_err(drop)?;
            state.saved.push(finished.index);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), ()> {
            let mut state = self.0.lock().map_err(drop)?;
            let saved = std::mem::take(&mut state.saved);
            state.durable.extend(saved);
            state.flushes += 1;
            Ok(())
        }
    }

    /// Checks, as it takes each item, that its previous one is durable.
    struct Checker {
        state: Arc<std::sync::Mutex<Durable>>,
        previous: Option<usize>,
        violations: Arc<AtomicUsize>,
    }

    impl Worker for Checker {
        fn run(&mut self, item: &Value, _id: &IdKey) -> Ending {
            if let Some(previous) = self.previous {
                let durable = self
                    .state
                    .lock()
                    .is_ok_and(|state| state.durable.contains(&previous));
                if !durable {
                    self.violations.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.previous = item["id"].as_u64().and_then(|i| usize::try_from(i).ok());
            let mut record = Map::new();
            record.insert("id".into(), item["id"].clone());
            Ending::Saved(record)
        }
    }

    #[test]
    fn no_worker_goes_on_before_its_item_is_flushed_and_every_item_is() {
        let (items, ids) = items(500);
        let state = Arc::new(std::sync::Mutex::new(Durable::default()));
        let violations = Arc::new(AtomicUsize::new(0));
        let workers: Vec<Checker> = (0..8)
            .map(|_| Checker {
                state: Arc::clone(&state),
                previous: None,
                violations: Arc::clone(&violations),
            })
            .collect();
        let sink = DurableSink(Arc::clone(&state));
        run(&pending(&items, &ids), workers, &sink).expect("no error");
        assert_eq!(violations.load(Ordering::Relaxed), 0);
        let state = state.lock().expect("state");
        assert_eq!(state.durable.len(), 500);
        assert!(state.saved.is_empty(), "nothing left unflushed");
        assert!(
            state.flushes >= 1 && state.flushes <= 500,
            "{}",
            state.flushes
        );
    }

    #[test]
    fn a_failed_save_stops_the_pool_with_its_error() {
        let (items, ids) = items(1000);
        let ran = Arc::default();
        let mut saves = 0;
        let result = run(&pending(&items, &ids), echoes(4, false, &ran), |_| {
            saves += 1;
            if saves == 6 {
                return Err("disk full");
            }
            thread::sleep(Duration::from_millis(1));
            Ok(())
        });
        assert_eq!(result, Err("disk full"));
        assert_eq!(saves, 6, "nothing is saved after the first error");
        // Six saved, at most one more in flight per worker.
        let ran = ran.load(Ordering::Relaxed);
        assert!(ran <= 6 + 4, "workers stopped taking items: {ran} ran");
    }
}
