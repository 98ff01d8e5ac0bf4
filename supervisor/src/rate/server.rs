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
//! Every connection has a thread of its own; what each request gets is the
//! broker's to decide (`rate::broker`): the run's budget, each API key's pace.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::broker::{BadRequest, BrokerFile, Reply, Request};
use shared::job::RateSettings;
use shared::rundir::RunDir;

use crate::rate::broker::Broker;

/// Longest socket path a sockaddr_un holds, with its terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// How long a TCP connection may take to say hello: a port scanner or a
/// stray client must not hold a thread for the rest of the run.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest line read from a TCP connection before its hello.
const MAX_HELLO_LINE: u64 = 4096;

pub struct RateServer {
    broker: Arc<Broker>,
    path: PathBuf,
    tcp: Option<TcpEndpoint>,
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
    pub fn start(
        run: &RunDir,
        settings: Option<&RateSettings>,
        tcp: Option<&str>,
    ) -> io::Result<Self> {
        let path = socket_path(run);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        let log = BufWriter::new(
            File::options()
                .create(true)
                .append(true)
                .open(run.root().join("rate.log"))?,
        );
        let broker = Arc::new(Broker::new(settings, log, now));
        let listener = UnixListener::bind(&path)?;
        // From here on, dropping `server` on an error removes what was made.
        let mut server = Self {
            broker: Arc::clone(&broker),
            path,
            tcp: None,
        };
        std::fs::set_permissions(&server.path, std::fs::Permissions::from_mode(0o600))?;
        let tcp_listener = match tcp {
            Some(host) => {
                let listener = TcpListener::bind(("0.0.0.0", 0))?;
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
                server.tcp = Some(endpoint);
                write_private(&file, text.to_text().as_bytes())?;
                Some(listener)
            }
            None => None,
        };
        {
            let broker = Arc::clone(&broker);
            std::thread::Builder::new()
                .name("rate-accept".into())
                .spawn(move || {
                    for stream in listener.incoming().flatten() {
                        spawn_connection(&broker, stream, None);
                    }
                })?;
        }
        if let (Some(listener), Some(endpoint)) = (tcp_listener, &server.tcp) {
            let secret: Arc<str> = Arc::from(endpoint.secret.as_str());
            std::thread::Builder::new()
                .name("rate-accept-tcp".into())
                .spawn(move || {
                    for stream in listener.incoming().flatten() {
                        // Nagle would hold each one-line reply back for the
                        // peer's delayed ACK (40 ms): a permit must take well
                        // under a millisecond. Without it the connection still works.
                        let _ = stream.set_nodelay(true);
                        spawn_connection(&broker, stream, Some(Arc::clone(&secret)));
                    }
                })?;
        }
        Ok(server)
    }

    /// Holds every permit (a paused run: LLM requests wait) or lets them go.
    pub fn set_paused(&self, paused: bool) {
        self.broker.set_paused(paused);
    }

    /// The run's budgets (`rate::spend`), held by the broker.
    pub fn budget(&self) -> &Broker {
        &self.broker
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
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    }
}

impl Drop for RateServer {
    fn drop(&mut self) {
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

/// What `serve` needs of a Unix or a TCP stream.
trait Connection: Read + Write + Send + Sized + 'static {
    fn try_clone(&self) -> io::Result<Self>;
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl Connection for UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        UnixStream::try_clone(self)
    }
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
    }
}

impl Connection for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

/// Serves `stream` on a thread of its own; `secret`: a hello with it must
/// come first (TCP).
fn spawn_connection<S: Connection>(broker: &Arc<Broker>, stream: S, secret: Option<Arc<str>>) {
    let broker = Arc::clone(broker);
    let _ = std::thread::Builder::new()
        .name("rate-conn".into())
        .stack_size(64 * 1024)
        .spawn(move || serve(&broker, stream, secret.as_deref()));
}

/// Equal strings, compared in a time that does not depend on where they
/// differ: the secret must not leak one byte at a time to a timing client.
fn same_secret(given: &str, secret: &str) -> bool {
    given.len() == secret.len()
        && given
            .bytes()
            .zip(secret.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

fn serve<S: Connection>(broker: &Broker, stream: S, secret: Option<&str>) {
    let mut greeted = secret.is_none();
    if !greeted && stream.set_read_timeout(Some(HELLO_TIMEOUT)).is_err() {
        return;
    }
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let mut writer = BufWriter::new(writer);
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        // Before the hello, a line is short: a stranger must not fill memory.
        let limit = if greeted { u64::MAX } else { MAX_HELLO_LINE };
        match (&mut reader).take(limit).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with('\n') && !greeted => return,
            Ok(_) => {}
        }
        if line.trim().is_empty() {
            continue;
        }
        let (reply, go_on) = match Request::from_line(&line) {
            Ok(Request::Hello { secret: given }) => {
                let right = match secret {
                    None => true,
                    Some(secret) => same_secret(&given, secret),
                };
                if !right {
                    (Reply::refused("wrong secret"), false)
                } else {
                    if !greeted {
                        // From now on a request may rightly come after
                        // minutes of work.
                        if reader.get_ref().set_read_timeout(None).is_err() {
                            return;
                        }
                        greeted = true;
                    }
                    (Reply::ok(), true)
                }
            }
            Ok(_) | Err(BadRequest::UnknownOp | BadRequest::Invalid { .. }) if !greeted => (
                Reply::refused("say {\"op\":\"hello\",\"secret\":NIGHTSHIFT_SECRET} first"),
                false,
            ),
            Ok(request) => (broker.answer(&request), true),
            Err(error @ BadRequest::NotJson(_)) => (Reply::refused(error.to_string()), greeted),
            Err(error) => (Reply::refused(error.to_string()), true),
        };
        let sent = writer
            .write_all(reply.to_line().as_bytes())
            .and_then(|()| writer.flush());
        if sent.is_err() || !go_on {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
