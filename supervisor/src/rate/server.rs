//! The rate broker's socket: RUN/nightshift.sock (mode 0600), one JSON object
//! per line each way, one reply per request (README, "The rate broker"):
//!
//!   {"op":"permit","tokens":N,"agent":NAME}   → {"ok":true,"waited_ms":F} once granted
//!   {"op":"report","tokens":ACTUAL,"estimated":N} → {"ok":true}
//!   {"op":"backoff","seconds":S}              → {"ok":true,"paused_ms":F}  (S = 0: rate.backoff)
//!   {"op":"learned","key":K,"requests":{…}}   → {"ok":true}
//!   permit, report and backoff may name a "key": that key is paced apart
//!   {"op":"hello","secret":S}                 → {"ok":true}
//!
//! Under Slurm, agents run on other nodes and cannot connect to a Unix socket
//! in the run directory, so the broker also listens on TCP (any free port).
//! A TCP connection is served only after a hello with the run's secret (in
//! NIGHTSHIFT_SECRET and RUN/broker.json, both readable by the run's owner
//! only); a Unix connection needs none — the socket's mode already keeps
//! others out — but is answered ok when it sends one, so a client may always
//! send it.
//!
//! One thread serves every connection (`rate::io_loop`); what each request
//! gets is the broker's to decide (`rate::broker`): the run's budget, each
//! API key's pace. The broker's record is RUN/rate.log (`rate::log`).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use mio::net::{TcpListener, UnixListener};
use mio::{Interest, Poll, Waker};

use shared::broker::{BrokerFile, LIMITED_FILE};
use shared::job::RateSettings;
use shared::rundir::RunDir;

use crate::rate::broker::Broker;
use crate::rate::io_loop::{self, Listeners, TCP, UNIX, WAKER};
use crate::rate::log::RateLog;
use crate::rate::spend::SpendLimit;

/// Longest socket path a sockaddr_un holds, with its terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

pub struct RateServer {
    broker: Arc<Mutex<Broker>>,
    path: PathBuf,
    tcp: Option<TcpEndpoint>,
    waker: Option<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The broker's TCP side, for agents on other hosts.
struct TcpEndpoint {
    /// HOST:PORT as the nodes reach it.
    address: String,
    secret: String,
    /// RUN/broker.json, removed with the server.
    file: PathBuf,
}

impl RateServer {
    /// Starts the broker on RUN/nightshift.sock and, with `tcp` (the name or
    /// address other hosts reach this one by), on a TCP port as well.
    /// rate.log rotates past `log_limit` bytes.
    pub fn start(
        run: &RunDir,
        settings: Option<&RateSettings>,
        tcp: Option<&str>,
        log_limit: u64,
    ) -> io::Result<Self> {
        let path = socket_path(run);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let log = RateLog::new(run.root().join("rate.log"), log_limit);
        let limited = run.root().join(LIMITED_FILE);
        let broker = Broker::new(settings, log, Some(limited), Instant::now());
        let broker = Arc::new(Mutex::new(broker));
        let poll = Poll::new()?;
        let mut unix = UnixListener::bind(&path)?;
        // From here on, dropping `server` on an error removes what was made.
        let mut server = Self {
            broker: Arc::clone(&broker),
            path,
            tcp: None,
            waker: None,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        std::fs::set_permissions(&server.path, std::fs::Permissions::from_mode(0o600))?;
        poll.registry()
            .register(&mut unix, UNIX, Interest::READABLE)?;
        let tcp = match tcp {
            Some(host) => {
                let mut listener = TcpListener::bind(([0, 0, 0, 0], 0).into())?;
                poll.registry()
                    .register(&mut listener, TCP, Interest::READABLE)?;
                let endpoint = TcpEndpoint {
                    address: host_and_port(host, listener.local_addr()?.port()),
                    secret: new_secret()?,
                    file: run.root().join("broker.json"),
                };
                let file = endpoint.file.clone();
                let text = BrokerFile {
                    tcp: endpoint.address.clone(),
                    secret: endpoint.secret.clone(),
                };
                let secret = endpoint.secret.clone();
                server.tcp = Some(endpoint);
                write_private(&file, text.to_text().as_bytes())?;
                Some((listener, secret))
            }
            None => None,
        };
        server.waker = Some(Waker::new(poll.registry(), WAKER)?);
        let listeners = Listeners { poll, unix, tcp };
        let stop = Arc::clone(&server.stop);
        server.thread = Some(
            std::thread::Builder::new()
                .name("rate-broker".into())
                .spawn(move || io_loop::serve(listeners, &broker, &stop))?,
        );
        Ok(server)
    }

    /// Holds every permit (a paused run: LLM requests wait) or lets them go.
    pub fn set_paused(&self, paused: bool) {
        io_loop::lock(&self.broker).set_paused(paused);
        self.wake();
    }

    /// Has the broker's thread look again (its permits may go now).
    fn wake(&self) {
        if let Some(waker) = &self.waker {
            if let Err(error) = waker.wake() {
                tracing::warn!("cannot wake the rate broker: {error}");
            }
        }
    }

    /// Hands the broker the run's budgets (`rate::spend`); permits waiting
    /// are looked at again under them.
    pub fn set_budget(&self, limit: SpendLimit) {
        io_loop::lock(&self.broker).set_budget(limit);
        self.wake();
    }

    /// Keys the servers rejected since the last call, for the journal.
    pub fn newly_rejected(&self) -> Vec<String> {
        io_loop::lock(&self.broker).newly_rejected()
    }

    /// Why the budget refuses permits, once it does.
    pub fn budget_spent(&self) -> Option<String> {
        io_loop::lock(&self.broker).budget_spent()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The environment that tells an agent where the broker is: the socket's
    /// path, or with TCP on `tcp:HOST:PORT` and the secret for the hello.
    pub fn agent_env(&self) -> Vec<(String, OsString)> {
        match &self.tcp {
            Some(tcp) => vec![
                (
                    "NIGHTSHIFT_SOCKET".to_owned(),
                    format!("tcp:{}", tcp.address).into(),
                ),
                ("NIGHTSHIFT_SECRET".to_owned(), tcp.secret.clone().into()),
            ],
            None => vec![(
                "NIGHTSHIFT_SOCKET".to_owned(),
                self.path.clone().into_os_string(),
            )],
        }
    }

    /// This host's name, for nodes to reach the broker by (executor.broker_host
    /// overrides it); "localhost" when the kernel does not say.
    pub fn host_name() -> String {
        nix::unistd::gethostname()
            .ok()
            .map(|name| name.to_string_lossy().trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    }
}

impl Drop for RateServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
        // The secret is of no use once the broker is gone.
        if let Some(tcp) = &self.tcp {
            let _ = std::fs::remove_file(&tcp.file);
        }
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

/// HOST:PORT; an IPv6 address goes in brackets, as connect() wants it.
fn host_and_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// 32 hex digits from the kernel's random source.
fn new_secret() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `path` readable by its owner only: it holds the secret. An old file
/// is removed first, because opening it would keep its old mode.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

#[cfg(test)]
mod tests;
