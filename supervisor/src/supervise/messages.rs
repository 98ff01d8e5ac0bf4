//! What wakes the event loop: agents' exits and the run's signals (from the
//! reaper), `nightshift control` requests, agent files growing, and other
//! stages' loops — all as `Msg`s on one channel.

use std::sync::mpsc::{channel, Receiver, Sender};

use shared::rundir::RunDir;

use crate::console::Console;
use crate::control::ControlServer;
use crate::error::{Result, SupervisorError};
use crate::executor::local::reaper::{self, Msg};
use crate::reporting::file_watch::FileWatch;

/// Messages from the outside world (exits, signals, agent files growing), and
/// what keeps them coming.
pub(super) struct Messages {
    pub(super) rx: Receiver<Msg>,
    /// Kept so that other stages' loops can be woken (`Msg::Wake`).
    pub(super) tx: Sender<Msg>,
    _signals: reaper::Subscription,
    pub(super) watch: Option<FileWatch>,
    /// `nightshift control` requests (None when its socket cannot be made).
    _control: Option<ControlServer>,
}

impl Messages {
    /// Starts the signal thread (before any child is spawned) and the watch
    /// on the run directory (without one, agent files are polled).
    pub(super) fn start(run: &RunDir, console: &Console) -> Result<Self> {
        let (tx, rx) = channel();
        let tx_wake = tx.clone();
        let signals = reaper::start(tx.clone())
            .map_err(SupervisorError::io("cannot install signal handlers"))?;
        let control = match ControlServer::start(run, tx.clone()) {
            Ok(server) => Some(server),
            Err(why) => {
                console.line(&format!(
                    "control: not available ({why}); nightshift control cannot reach this run"
                ));
                None
            }
        };
        let watch = match FileWatch::start(run.root(), tx) {
            Ok(watch) => Some(watch),
            Err(why) => {
                console.line(&format!("progress: polling agent files ({why})"));
                None
            }
        };
        Ok(Self {
            rx,
            tx: tx_wake,
            _signals: signals,
            watch,
            _control: control,
        })
    }
}

/// The reaper's channel closed: the loop cannot hear exits or signals any more.
pub(super) fn lost_signals() -> SupervisorError {
    SupervisorError::io("the signal thread stopped")(std::io::Error::other("channel closed"))
}
