//! The bounded pool of items in flight: as many workers as agent.concurrency
//! take the next pending item in task order, run it, and hand how it ended
//! to the single writer, which runs on the calling thread.
//! The writer writes each record the moment it gets it, and a worker hands
//! over an item only once its previous one is durable (fsynced): a killed
//! agent loses only the items in flight, a machine that goes down at most
//! one more record per worker. A failed write stops every worker after the
//! item it is on.
//!
//! Where the workers run is the backend's to say (`Spread`): a backend whose
//! calls wait without holding a thread (an HTTP request, a demo pause) has
//! its workers on a few event loops, a task each; one whose calls hold their
//! thread (a command run to its end) has a thread per worker. A thread per
//! request in flight was most of an LLM agent's CPU: every answer woke its
//! own thread, and every record crossed to the writer and back alone.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;

use serde_json::value::RawValue;
use serde_json::Value;
use shared::ids::IdKey;
use tokio::sync::oneshot;

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

/// What a worker does with each item it takes.
pub trait Worker: Send {
    fn run(&mut self, item: &Value, id: &IdKey) -> impl Future<Output = Ending>;
}

impl Worker for ItemRunner<'_> {
    fn run(&mut self, item: &Value, id: &IdKey) -> impl Future<Output = Ending> {
        ItemRunner::run(self, item, id)
    }
}

/// Where the workers run.
pub enum Spread<'r> {
    /// A thread each: their calls hold the thread until they end.
    Threads,
    /// Dealt out over these loops, each driven by a thread of its own.
    EventLoops(&'r EventLoops),
}

/// Workers an event loop drives at most, when the machine has a core for
/// another loop.
const WORKERS_PER_LOOP: usize = 16;

/// One event loop or more: runtimes driven by the thread that calls their
/// `block_on` (current-thread ones).
pub struct EventLoops(Vec<tokio::runtime::Runtime>);

impl EventLoops {
    /// The loops for `workers`: one per `WORKERS_PER_LOOP` of them, at most
    /// one per core. One loop is plenty for a remote API; against a fast
    /// local server a loop's thread is busy all the time, and on a busy
    /// machine a single thread gets only its share of the cores.
    pub fn for_workers(workers: usize) -> Result<Self, String> {
        let cores = thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self::new(workers.div_ceil(WORKERS_PER_LOOP).clamp(1, cores))
    }

    /// `count` loops, one at least.
    pub fn new(count: usize) -> Result<Self, String> {
        (0..count.max(1))
            .map(|_| event_loop())
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// A runtime driven by the thread that calls its `block_on`: an event loop
/// (of the pool, and of the batch APIs' requests).
pub fn event_loop() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the event loop: {e}"))
}

/// A finished item on its way to the writer, with the line back to its
/// worker that says "saved".
type Handover = (Finished, oneshot::Sender<()>);

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

/// The pending items, handed out in task order to whichever worker asks.
#[derive(Clone, Copy)]
struct Queue<'q, 'a> {
    pending: &'q [Pending<'a>],
    next: &'q AtomicUsize,
    /// Set by the writer when a save failed: no worker takes another item.
    stop: &'q AtomicBool,
}

impl<'a> Queue<'_, 'a> {
    fn take(&self) -> Option<Pending<'a>> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        self.pending
            .get(self.next.fetch_add(1, Ordering::Relaxed))
            .copied()
    }
}

/// Runs every pending item on one of `workers` (their number is the bound
/// on items in flight), spread as `spread` says, and gives each ending to
/// `sink`, one at a time, on this thread. The first error of `sink` stops
/// the pool and is returned once the items in flight have ended.
pub fn run<W: Worker, S: Sink>(
    pending: &[Pending<'_>],
    workers: Vec<W>,
    sink: S,
    spread: Spread<'_>,
) -> Result<(), S::Error> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let queue = Queue {
        pending,
        next: &next,
        stop: &stop,
    };
    let (sender, handovers) = mpsc::channel::<Handover>();
    thread::scope(|scope| {
        match spread {
            Spread::Threads => {
                for worker in workers {
                    let sender = sender.clone();
                    scope.spawn(move || block_on(drive(worker, queue, sender)));
                }
            }
            Spread::EventLoops(EventLoops(runtimes)) => {
                let mut shares: Vec<Vec<W>> = runtimes.iter().map(|_| Vec::new()).collect();
                for (worker, n) in workers.into_iter().zip((0..shares.len()).cycle()) {
                    shares[n].push(worker);
                }
                for (runtime, share) in runtimes.iter().zip(shares) {
                    let sender = sender.clone();
                    scope.spawn(move || {
                        let drives = share
                            .into_iter()
                            .map(|worker| drive(worker, queue, sender.clone()));
                        runtime.block_on(futures_util::future::join_all(drives));
                    });
                }
            }
        }
        // The writer's loop ends when every worker has dropped its sender.
        drop(sender);
        write_all(handovers, sink, &stop)
    })
}

/// One worker: takes items until none is left. It runs its next item
/// while the writer makes its last one durable, and hands the next over
/// only once the last is: a worker is never more than one record ahead of
/// the disk, and it does not sit idle through every fsync.
async fn drive<W: Worker>(mut worker: W, queue: Queue<'_, '_>, sender: Sender<Handover>) {
    let mut syncing: Option<oneshot::Receiver<()>> = None;
    while let Some(pending) = queue.take() {
        let ending = match parse_item(pending.item) {
            Ok(item) => worker.run(&item, pending.id).await,
            Err(ending) => ending,
        };
        // Each fails only when the writer has stopped.
        if let Some(last) = syncing.take() {
            if last.await.is_err() {
                return;
            }
        }
        let (saved, wait) = oneshot::channel();
        let finished = Finished {
            index: pending.index,
            id: pending.id.clone(),
            ending,
        };
        if sender.send((finished, saved)).is_err() {
            return;
        }
        syncing = Some(wait);
    }
    if let Some(last) = syncing {
        // The writer is done with it either way.
        let _ = last.await;
    }
}

/// The writer's loop: saves each ending as it comes, everything that came
/// meanwhile in the same batch, then flushes the batch and tells its
/// workers. Ends when every worker has gone, or at the first error.
fn write_all<S: Sink>(
    handovers: mpsc::Receiver<Handover>,
    mut sink: S,
    stop: &AtomicBool,
) -> Result<(), S::Error> {
    let mut batch: Vec<oneshot::Sender<()>> = Vec::new();
    while let Ok(first) = handovers.recv() {
        let mut next = Some(first);
        let mut result = Ok(());
        while let Some((finished, saved)) = next.take() {
            batch.push(saved);
            result = sink.save(finished);
            if result.is_err() {
                break;
            }
            next = handovers.try_recv().ok();
        }
        if let Err(error) = result.and_then(|()| sink.flush()) {
            // Dropping the batch's senders and, on return, the receiver (and
            // the handovers still queued in it) wakes every worker waiting
            // on the writer; the rest see `stop`.
            stop.store(true, Ordering::Relaxed);
            return Err(error);
        }
        for saved in batch.drain(..) {
            // The worker is gone only if it panicked; the scope reports that.
            let _ = saved.send(());
        }
    }
    Ok(())
}

/// Wakes the thread that waits in `block_on`.
struct Unpark(thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives a future to its end on this thread, sleeping while it waits: a
/// threaded worker's items hold the thread anyway, so it needs no runtime.
fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};
    use std::sync::Barrier;
    use std::time::Duration;

    /// How the first items of a test meet before they end, which only
    /// happens when they are in flight at the same time.
    #[derive(Clone)]
    enum Together {
        Threads(Arc<Barrier>),
        Tasks(Arc<tokio::sync::Barrier>),
    }

    /// Saves every item with the thread that ran it.
    struct Echo {
        together: Option<Together>,
        ran: Arc<AtomicUsize>,
    }

    impl Worker for Echo {
        fn run(&mut self, item: &Value, _id: &IdKey) -> impl Future<Output = Ending> {
            self.ran.fetch_add(1, Ordering::Relaxed);
            let together = self.together.take();
            let id = item["id"].clone();
            async move {
                match together {
                    Some(Together::Threads(barrier)) => {
                        barrier.wait();
                    }
                    Some(Together::Tasks(barrier)) => {
                        barrier.wait().await;
                    }
                    None => {}
                }
                let mut record = Map::new();
                record.insert("id".into(), id);
                record.insert(
                    "thread".into(),
                    json!(format!("{:?}", thread::current().id())),
                );
                Ending::Saved(record)
            }
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

    fn echoes(n: usize, together: Option<Together>, ran: &Arc<AtomicUsize>) -> Vec<Echo> {
        (0..n)
            .map(|_| Echo {
                together: together.clone(),
                ran: Arc::clone(ran),
            })
            .collect()
    }

    fn loops(count: usize) -> EventLoops {
        EventLoops::new(count).expect("event loops")
    }

    /// Runs 200 items on four workers that must all be in flight at once
    /// to get going: the ids saved (on the writer's thread) and the names
    /// of the threads that ran them.
    fn four_at_once(spread: Spread<'_>, together: Together) -> (Vec<usize>, Vec<String>) {
        let (items, ids) = items(200);
        let writer = thread::current().id();
        let mut seen = Vec::new();
        let mut threads = Vec::new();
        run(
            &pending(&items, &ids),
            echoes(4, Some(together), &Arc::default()),
            |finished: Finished| {
                assert_eq!(
                    thread::current().id(),
                    writer,
                    "saved on the writer's thread"
                );
                seen.push(finished.index);
                if let Ending::Saved(record) = finished.ending {
                    threads.push(record["thread"].to_string());
                }
                Ok::<(), ()>(())
            },
            spread,
        )
        .expect("no write fails");
        seen.sort_unstable();
        threads.sort_unstable();
        threads.dedup();
        (seen, threads)
    }

    #[test]
    fn every_item_is_saved_once_by_the_one_writer_from_threads() {
        let (seen, threads) = four_at_once(
            Spread::Threads,
            Together::Threads(Arc::new(Barrier::new(4))),
        );
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        assert_eq!(threads.len(), 4, "a thread per worker: {threads:?}");
    }

    #[test]
    fn every_item_is_saved_once_by_the_one_writer_from_each_event_loop() {
        for count in [1, 2] {
            let loops = loops(count);
            let (seen, threads) = four_at_once(
                Spread::EventLoops(&loops),
                Together::Tasks(Arc::new(tokio::sync::Barrier::new(4))),
            );
            assert_eq!(seen, (0..200).collect::<Vec<_>>());
            assert_eq!(threads.len(), count, "a thread per loop: {threads:?}");
        }
    }

    #[test]
    fn one_worker_keeps_task_order() {
        let loops = loops(1);
        for spread in [Spread::Threads, Spread::EventLoops(&loops)] {
            let (items, ids) = items(30);
            let mut seen = Vec::new();
            run(
                &pending(&items, &ids),
                echoes(1, None, &Arc::default()),
                |finished: Finished| {
                    seen.push(finished.index);
                    Ok::<(), ()>(())
                },
                spread,
            )
            .expect("no write fails");
            assert_eq!(seen, (0..30).collect::<Vec<_>>());
        }
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

    /// Checks, as it takes each item, that the one it took before the last
    /// is durable: it handed the last over only once that one was.
    struct Checker {
        state: Arc<std::sync::Mutex<Durable>>,
        taken: Vec<usize>,
        violations: Arc<AtomicUsize>,
    }

    impl Worker for Checker {
        fn run(&mut self, item: &Value, _id: &IdKey) -> impl Future<Output = Ending> {
            if let Some(&before_last) = self.taken.iter().rev().nth(1) {
                let durable = self
                    .state
                    .lock()
                    .is_ok_and(|state| state.durable.contains(&before_last));
                if !durable {
                    self.violations.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.taken
                .extend(item["id"].as_u64().and_then(|i| usize::try_from(i).ok()));
            let mut record = Map::new();
            record.insert("id".into(), item["id"].clone());
            std::future::ready(Ending::Saved(record))
        }
    }

    #[test]
    fn no_worker_is_more_than_one_record_ahead_of_the_disk_and_every_item_is_flushed() {
        let loops = loops(1);
        for spread in [Spread::Threads, Spread::EventLoops(&loops)] {
            let (items, ids) = items(500);
            let state = Arc::new(std::sync::Mutex::new(Durable::default()));
            let violations = Arc::new(AtomicUsize::new(0));
            let workers: Vec<Checker> = (0..8)
                .map(|_| Checker {
                    state: Arc::clone(&state),
                    taken: Vec::new(),
                    violations: Arc::clone(&violations),
                })
                .collect();
            let sink = DurableSink(Arc::clone(&state));
            run(&pending(&items, &ids), workers, &sink, spread).expect("no error");
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
    }

    #[test]
    fn a_failed_save_stops_the_pool_with_its_error() {
        let loops = loops(1);
        for spread in [Spread::Threads, Spread::EventLoops(&loops)] {
            let (items, ids) = items(1000);
            let ran = Arc::default();
            let mut saves = 0;
            let result = run(
                &pending(&items, &ids),
                echoes(4, None, &ran),
                |_| {
                    saves += 1;
                    if saves == 6 {
                        return Err("disk full");
                    }
                    thread::sleep(Duration::from_millis(1));
                    Ok(())
                },
                spread,
            );
            assert_eq!(result, Err("disk full"));
            assert_eq!(saves, 6, "nothing is saved after the first error");
            // Six saved; per worker, at most one more waiting for the disk
            // and one more in flight.
            let ran = ran.load(Ordering::Relaxed);
            assert!(ran <= 6 + 2 * 4, "workers stopped taking items: {ran} ran");
        }
    }
}
