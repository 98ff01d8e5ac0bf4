//! The rate broker's socket: RUN/nightshift.sock (mode 0600), one JSON object
//! per line each way, one reply per request (README, "The rate broker"):
//!
//!   {"op":"permit","tokens":N,"agent":NAME}   → {"ok":true,"waited_ms":F} once granted
//!   {"op":"report","tokens":ACTUAL,"estimated":N} → {"ok":true}
//!   {"op":"backoff","seconds":S}              → {"ok":true,"paused_ms":F}  (S = 0: rate.backoff)
//!
//! Every connection has a thread of its own. Permits are granted first come,
//! first served: waiters queue for a ticket, and only the head of the queue
//! asks the limiter. Every grant and backoff is logged to RUN/rate.log.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::{json, Value};

use shared::job::RateSettings;
use shared::rundir::RunDir;

use crate::rate::Limiter;

/// Longest socket path a sockaddr_un holds, with its terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

struct State {
    limiter: Limiter,
    queue: VecDeque<u64>,
    next_ticket: u64,
    log: BufWriter<File>,
}

struct Broker {
    state: Mutex<State>,
    changed: Condvar,
    started: Instant,
}

pub struct RateServer {
    path: PathBuf,
}

impl RateServer {
    pub fn start(run: &RunDir, settings: Option<&RateSettings>) -> io::Result<Self> {
        let path = socket_path(run);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let now = Instant::now();
        let log = BufWriter::new(
            File::options()
                .create(true)
                .append(true)
                .open(run.root().join("rate.log"))?,
        );
        let broker = Arc::new(Broker {
            state: Mutex::new(State {
                limiter: Limiter::new(settings, now),
                queue: VecDeque::new(),
                next_ticket: 0,
                log,
            }),
            changed: Condvar::new(),
            started: now,
        });
        std::thread::Builder::new()
            .name("rate-accept".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let broker = Arc::clone(&broker);
                    let _ = std::thread::Builder::new()
                        .name("rate-conn".into())
                        .stack_size(64 * 1024)
                        .spawn(move || serve(&broker, stream));
                }
            })?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The environment that tells an agent where the broker is.
    pub fn agent_env(&self) -> Vec<(String, std::ffi::OsString)> {
        vec![(
            "NIGHTSHIFT_SOCKET".to_owned(),
            self.path.clone().into_os_string(),
        )]
    }
}

impl Drop for RateServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// RUN/nightshift.sock, or — where the run directory's path is too long for
/// a Unix socket address — a short path in the temporary folder.
fn socket_path(run: &RunDir) -> PathBuf {
    let inside = run.root().join("nightshift.sock");
    if inside.as_os_str().len() <= MAX_SOCKET_PATH {
        return inside;
    }
    std::env::temp_dir().join(format!("nightshift-{}.sock", std::process::id()))
}

fn lock(broker: &Broker) -> MutexGuard<'_, State> {
    broker
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn serve(broker: &Broker, stream: UnixStream) {
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let mut writer = BufWriter::new(writer);
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(request) => answer(broker, &request),
            Err(e) => json!({"ok": false, "error": format!("not a JSON object: {e}")}),
        };
        let sent = serde_json::to_writer(&mut writer, &reply)
            .map_err(io::Error::from)
            .and_then(|()| writer.write_all(b"\n"))
            .and_then(|()| writer.flush());
        if sent.is_err() {
            return;
        }
    }
}

fn answer(broker: &Broker, request: &Value) -> Value {
    let agent = request["agent"].as_str().unwrap_or("");
    match request["op"].as_str() {
        Some("permit") => {
            let tokens = request["tokens"].as_u64().unwrap_or(1);
            let waited = permit(broker, agent, tokens);
            json!({"ok": true, "waited_ms": waited * 1000.0})
        }
        Some("report") => {
            let actual = request["tokens"].as_u64().unwrap_or(0);
            let estimated = request["estimated"].as_u64().unwrap_or(actual);
            let mut state = lock(broker);
            state.limiter.report(estimated, actual, Instant::now());
            drop(state);
            broker.changed.notify_all();
            json!({"ok": true})
        }
        Some("backoff") => {
            let seconds = request["seconds"].as_f64().unwrap_or(0.0);
            let now = Instant::now();
            let mut state = lock(broker);
            let pause = state.limiter.back_off(seconds, now);
            let t = now.duration_since(broker.started).as_secs_f64();
            let line =
                json!({"t": t, "op": "backoff", "agent": agent, "seconds": pause.as_secs_f64()});
            let _ = writeln!(state.log, "{line}").and_then(|()| state.log.flush());
            drop(state);
            broker.changed.notify_all();
            tracing::info!(
                "rate-limit backoff of {:.1}s reported by {agent}",
                pause.as_secs_f64()
            );
            json!({"ok": true, "paused_ms": pause.as_secs_f64() * 1000.0})
        }
        _ => json!({"ok": false, "error": "unknown op; use permit, report or backoff"}),
    }
}

/// Blocks until a permit is granted; returns the seconds waited.
fn permit(broker: &Broker, agent: &str, tokens: u64) -> f64 {
    let asked = Instant::now();
    let mut state = lock(broker);
    let ticket = state.next_ticket;
    state.next_ticket += 1;
    state.queue.push_back(ticket);
    loop {
        let now = Instant::now();
        if state.queue.front() == Some(&ticket) {
            match state.limiter.try_grant(tokens, now) {
                Ok(()) => {
                    state.queue.pop_front();
                    let waited = now.duration_since(asked).as_secs_f64();
                    let t = now.duration_since(broker.started).as_secs_f64();
                    let line = json!({"t": t, "op": "grant", "agent": agent, "tokens": tokens, "waited_ms": waited * 1000.0});
                    let _ = writeln!(state.log, "{line}").and_then(|()| state.log.flush());
                    drop(state);
                    broker.changed.notify_all();
                    return waited;
                }
                Err(ready) => {
                    let wait = ready.saturating_duration_since(now);
                    state = broker
                        .changed
                        .wait_timeout(state, wait)
                        .map(|(guard, _)| guard)
                        .unwrap_or_else(|poisoned| poisoned.into_inner().0);
                }
            }
        } else {
            state = broker
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}
