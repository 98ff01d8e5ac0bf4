//! Signals in, messages out: one thread turns SIGCHLD into `Exited` messages
//! (reaping with waitpid(-1), so any child of the supervisor is collected) and
//! forwards SIGINT, SIGTERM and SIGHUP to the event loop. Nothing here blocks
//! on a particular child.

use std::sync::mpsc::Sender;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitHow {
    Code(i32),
    Signal(i32),
}

/// What the event loop receives from the outside world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    Exited {
        pid: i32,
        how: ExitHow,
    },
    Signal(i32),
    /// Agent files grew (see `file_watch`).
    FilesChanged,
    /// `nightshift control` asked for a change (see `control`).
    Control(shared::control::ControlAction),
    /// Another stage of the pipeline changed what this one waits for: an
    /// upstream agent finished, or a launch slot was freed.
    Wake,
}

/// Held while a child is being spawned. std's spawn reaps a child whose exec
/// failed by itself (and panics if somebody else reaped it first), so the
/// reaper must not call waitpid(-1) in that window.
pub static SPAWN_LOCK: Mutex<()> = Mutex::new(());

/// The one signal thread of the process and the event loops it serves. A
/// pipeline runs one supervisor per stage, each a thread of this process: a
/// child is reaped once, by waitpid(-1), so every exit and every signal goes
/// to every loop, and each loop keeps the exits of the pids it started.
struct Hub {
    handle: signal_hook::iterator::Handle,
    subscribers: Vec<(u64, Sender<Msg>)>,
    next_id: u64,
}

static HUB: Mutex<Option<Hub>> = Mutex::new(None);

fn hub() -> std::sync::MutexGuard<'static, Option<Hub>> {
    HUB.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A loop's subscription to the signal thread: exits and signals reach its
/// channel until it is dropped; the last one dropped ends the thread (a
/// later session in the same process starts it again).
pub struct Subscription {
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut hub = hub();
        if let Some(state) = hub.as_mut() {
            state.subscribers.retain(|(id, _)| *id != self.id);
            if state.subscribers.is_empty() {
                state.handle.close();
                *hub = None;
            }
        }
    }
}

/// Subscribes `tx` to the signal thread, starting it if none runs. Must run
/// before the first child is spawned.
pub fn start(tx: Sender<Msg>) -> std::io::Result<Subscription> {
    let mut hub = hub();
    if hub.is_none() {
        let mut signals = Signals::new([SIGCHLD, SIGINT, SIGTERM, SIGHUP])?;
        let handle = signals.handle();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if signal == SIGCHLD {
                        reap_all();
                    } else {
                        broadcast(Msg::Signal(signal));
                    }
                }
            })?;
        *hub = Some(Hub {
            handle,
            subscribers: Vec::new(),
            next_id: 0,
        });
    }
    let state = hub
        .as_mut()
        .ok_or_else(|| std::io::Error::other("no signal thread"))?;
    state.next_id += 1;
    let id = state.next_id;
    state.subscribers.push((id, tx));
    Ok(Subscription { id })
}

/// Sends `message` to every loop still listening.
fn broadcast(message: Msg) {
    if let Some(state) = hub().as_mut() {
        state.subscribers.retain(|(_, tx)| tx.send(message).is_ok());
    }
}

/// Reaps every child that has ended and tells every loop.
fn reap_all() {
    let _spawning = SPAWN_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let message = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => Msg::Exited {
                pid: pid.as_raw(),
                how: ExitHow::Code(code),
            },
            Ok(WaitStatus::Signaled(pid, signal, _)) => Msg::Exited {
                pid: pid.as_raw(),
                how: ExitHow::Signal(signal as i32),
            },
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Err(Errno::EINTR) | Ok(_) => continue,
            Err(_) => return,
        };
        broadcast(message);
    }
}
