//! The bounded pool of items in flight: as many workers (std threads) as
//! agent.concurrency take the next pending item in task order, run it, and
//! hand how it ended to the single writer, which runs on the calling thread.
//! A worker waits until its item is saved before it takes another, so a crash
//! loses only the items in flight (at concurrency 1: the one item, as ever),
//! and a failed write stops every worker after the item it is on.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::thread;

use serde_json::Value;
use shared::ids::IdKey;

use super::writer::Finished;
use crate::item::{Ending, ItemRunner};

/// One item still to do.
#[derive(Debug, Clone, Copy)]
pub struct Pending<'a> {
    /// Its place in the task.
    pub index: usize,
    pub item: &'a Value,
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

/// Runs every pending item on one of `workers` (one thread each, so their
/// number is the bound on items in flight) and gives each ending to `save`,
/// one at a time, on this thread. The first error of `save` stops the pool
/// and is returned once the items in flight have ended.
pub fn run<W: Worker, E>(
    pending: &[Pending<'_>],
    workers: Vec<W>,
    mut save: impl FnMut(Finished) -> Result<(), E>,
) -> Result<(), E> {
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
                    let ending = worker.run(pending.item, pending.id);
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
        for (finished, saved) in handovers {
            if let Err(error) = save(finished) {
                // Dropping `saved` and, on leaving, the receiver wakes every
                // worker waiting on the writer; the rest see `stop`.
                stop.store(true, Ordering::Relaxed);
                return Err(error);
            }
            // The worker is gone only if it panicked; the scope reports that.
            let _ = saved.send(());
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

    fn items(n: usize) -> (Vec<Value>, Vec<IdKey>) {
        let items: Vec<Value> = (0..n).map(|i| json!({"id": i})).collect();
        let ids = items
            .iter()
            .map(|item| IdKey::from_value(&item["id"]).expect("id"))
            .collect();
        (items, ids)
    }

    fn pending<'a>(items: &'a [Value], ids: &'a [IdKey]) -> Vec<Pending<'a>> {
        items
            .iter()
            .zip(ids)
            .enumerate()
            .map(|(index, (item, id))| Pending { index, item, id })
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
            |finished| {
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
            |finished| {
                seen.push(finished.index);
                Ok::<(), ()>(())
            },
        )
        .expect("no write fails");
        assert_eq!(seen, (0..30).collect::<Vec<_>>());
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
