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
}

/// Held while a child is being spawned. std's spawn reaps a child whose exec
/// failed by itself (and panics if somebody else reaped it first), so the
/// reaper must not call waitpid(-1) in that window.
pub static SPAWN_LOCK: Mutex<()> = Mutex::new(());

/// Starts the signal thread. Must run before the first child is spawned.
pub fn start(tx: Sender<Msg>) -> std::io::Result<signal_hook::iterator::Handle> {
    let mut signals = Signals::new([SIGCHLD, SIGINT, SIGTERM, SIGHUP])?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let delivered = if signal == SIGCHLD {
                    reap_all(&tx)
                } else {
                    tx.send(Msg::Signal(signal)).is_ok()
                };
                if !delivered {
                    break;
                }
            }
        })?;
    Ok(handle)
}

/// Reaps every child that has ended; false when the event loop is gone.
fn reap_all(tx: &Sender<Msg>) -> bool {
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
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return true,
            Err(Errno::EINTR) | Ok(_) => continue,
            Err(_) => return true,
        };
        if tx.send(message).is_err() {
            return false;
        }
    }
}
