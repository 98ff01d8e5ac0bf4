//! RUN/control.sock: the live run's control socket (mode 0600, so only the
//! run's owner may use it). One request line per connection, a
//! `shared::control::ControlAction`; each goes to the event loop as a message
//! and is answered at once. The loop applies it, journals it, and `status`
//! shows it.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Duration;

use shared::control::{ControlAction, ControlReply, SOCKET_FILE};
use shared::rundir::RunDir;

use crate::executor::local::reaper::Msg;

/// Longest socket path a sockaddr_un holds, with its terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// A client that connects and says nothing must not hold a thread for long.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The listening socket; removed when the run's session ends.
pub struct ControlServer {
    path: PathBuf,
}

/// Where the control socket of the run in `run` is, for a supervisor of pid
/// `supervisor`: inside the run directory, or, when that path is too long for
/// a socket, in the temp folder under the supervisor's pid.
pub fn socket_path(run: &Path, supervisor: u32) -> PathBuf {
    let inside = run.join(SOCKET_FILE);
    if inside.as_os_str().len() <= MAX_SOCKET_PATH {
        return inside;
    }
    std::env::temp_dir().join(format!("nightshift-control-{supervisor}.sock"))
}

impl ControlServer {
    pub fn start(run: &RunDir, loop_tx: Sender<Msg>) -> io::Result<Self> {
        let path = socket_path(run.root(), std::process::id());
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        let server = Self { path };
        std::fs::set_permissions(&server.path, std::fs::Permissions::from_mode(0o600))?;
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    if !answer(stream, &loop_tx) {
                        // The event loop is gone: the run is ending.
                        break;
                    }
                }
            })?;
        Ok(server)
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one request, hands it to the loop, answers; false once the loop is gone.
fn answer(stream: UnixStream, loop_tx: &Sender<Msg>) -> bool {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    let (reply, alive) = match reader.read_line(&mut line) {
        Ok(_) => match ControlAction::from_line(&line) {
            Ok(action) => match loop_tx.send(Msg::Control(action)) {
                Ok(()) => (ControlReply::accepted(format!("{action}: done")), true),
                Err(_) => (ControlReply::refused("the run is ending"), false),
            },
            Err(reason) => (ControlReply::refused(reason), true),
        },
        Err(error) => (
            ControlReply::refused(format!("cannot read the request: {error}")),
            true,
        ),
    };
    let mut stream = &stream;
    let _ = stream.write_all(reply.to_line().as_bytes());
    alive
}
