//! Rate-limit permits from the supervisor's broker, at the address named by
//! NIGHTSHIFT_SOCKET: a Unix socket path, or `tcp:HOST:PORT` when the agent
//! may run on another host (Slurm) — then the connection first says hello
//! with NIGHTSHIFT_SECRET. One JSON request per line, one reply line each,
//! over one connection kept for the agent's life. Without the variable, or
//! when the broker cannot be reached, the agent works without permits: a
//! missing broker must slow nothing down and fail no item.

use std::ffi::OsStr;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Map, Value};

pub const SOCKET_VAR: &str = "NIGHTSHIFT_SOCKET";
/// The secret a TCP connection's hello carries.
pub const SECRET_VAR: &str = "NIGHTSHIFT_SECRET";

/// How long connecting to and saying hello to a TCP broker may take: a
/// firewall that drops packets must not stall the agent for minutes.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why one exchange with the broker did not get a reply.
#[derive(Debug, thiserror::Error)]
enum BrokerError {
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the broker closed the connection")]
    Closed,
    #[error("{SECRET_VAR} is not set, and a TCP broker wants it")]
    NoSecret,
    #[error("the broker refused the hello: {0}")]
    Refused(String),
}

/// Where the broker listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerAddress {
    /// A Unix socket: the broker is on this host.
    Unix(PathBuf),
    /// HOST:PORT, and the secret for the hello (`None`: not given).
    Tcp {
        address: String,
        secret: Option<String>,
    },
}

impl BrokerAddress {
    /// Reads a NIGHTSHIFT_SOCKET value: `tcp:HOST:PORT`, else a socket path.
    pub fn parse(socket: &OsStr, secret: Option<String>) -> Self {
        match socket.as_bytes().strip_prefix(b"tcp:") {
            Some(address) => Self::Tcp {
                address: String::from_utf8_lossy(address).into_owned(),
                secret,
            },
            None => Self::Unix(PathBuf::from(socket)),
        }
    }
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "{}", path.display()),
            Self::Tcp { address, .. } => write!(f, "tcp:{address}"),
        }
    }
}

/// A Unix or a TCP stream: the protocol is the same on both.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

type Connection = BufReader<Box<dyn Stream>>;

/// The agent's side of the broker protocol.
pub struct Permits {
    /// `None` once permits are off: no socket given, or the broker is gone.
    broker: Option<BrokerAddress>,
    agent: String,
    connection: Option<Connection>,
}

impl Permits {
    /// Connects lazily, at the first request: an agent whose items are all
    /// saved already never bothers the broker.
    ///
    /// `socket` is NIGHTSHIFT_SOCKET's value; a `tcp:` one takes its secret
    /// from NIGHTSHIFT_SECRET.
    pub fn new(socket: Option<PathBuf>, agent: &str) -> Self {
        let secret = std::env::var(SECRET_VAR).ok();
        Self::at(
            socket.map(|socket| BrokerAddress::parse(socket.as_os_str(), secret)),
            agent,
        )
    }

    /// Permits from the broker at `broker` (`None`: permits are off).
    pub fn at(broker: Option<BrokerAddress>, agent: &str) -> Self {
        Self {
            broker,
            agent: agent.to_owned(),
            connection: None,
        }
    }

    /// Whether requests still go to a broker.
    pub fn is_on(&self) -> bool {
        self.broker.is_some()
    }

    /// Waits for a permit for `tokens` estimated tokens; the milliseconds
    /// waited, or `None` when no broker granted it.
    pub fn permit(&mut self, tokens: u64) -> Option<f64> {
        let reply = self.request(json!({"op": "permit", "tokens": tokens, "agent": self.agent}))?;
        Some(
            reply
                .get("waited_ms")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
        )
    }

    /// Tells the broker what a call really used, so it can correct its count.
    pub fn report(&mut self, tokens: u64, estimated: u64) {
        self.request(json!({
            "op": "report",
            "tokens": tokens,
            "estimated": estimated,
            "agent": self.agent,
        }));
    }

    /// Asks the broker to pause every agent's permits after a rate-limit
    /// answer (`seconds` 0: the broker's default pause). The milliseconds
    /// paused, or `None` when no broker took it and the agent must wait itself.
    pub fn backoff(&mut self, seconds: f64) -> Option<f64> {
        // A whole number goes out as an integer, which any reader takes.
        let seconds = if seconds.fract() == 0.0 && seconds < u64::MAX as f64 {
            Value::from(seconds as u64)
        } else {
            Value::from(seconds)
        };
        let reply =
            self.request(json!({"op": "backoff", "seconds": seconds, "agent": self.agent}))?;
        Some(
            reply
                .get("paused_ms")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
        )
    }

    /// Sends one request and reads its reply: `Some` only for `"ok": true`.
    /// A broken connection is reopened once and the request sent again; if
    /// that fails too, permits are off for the rest of the agent's life.
    fn request(&mut self, request: Value) -> Option<Map<String, Value>> {
        let broker = self.broker.clone()?;
        let mut line = request.to_string().into_bytes();
        line.push(b'\n');
        let had_connection = self.connection.is_some();
        let reply = match self.exchange(&broker, &line) {
            Ok(reply) => reply,
            Err(first) if had_connection => {
                eprintln!(
                    "{}: lost the rate broker connection ({first}); reconnecting",
                    self.agent
                );
                match self.exchange(&broker, &line) {
                    Ok(reply) => reply,
                    Err(second) => return self.give_up(&broker, &second),
                }
            }
            Err(first) => return self.give_up(&broker, &first),
        };
        let op = request
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("request");
        match serde_json::from_str::<Value>(&reply) {
            Ok(Value::Object(reply)) if reply.get("ok") == Some(&Value::Bool(true)) => Some(reply),
            Ok(Value::Object(reply)) => {
                let error = reply
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given");
                eprintln!(
                    "{}: the rate broker refused {op}: {error}; going on",
                    self.agent
                );
                None
            }
            _ => {
                eprintln!(
                    "{}: the rate broker answered {op} with {:?}, not a JSON object; going on",
                    self.agent,
                    reply.trim_end()
                );
                None
            }
        }
    }

    /// One request line out, one reply line in, on the open connection or a
    /// new one. Any failure drops the connection.
    fn exchange(&mut self, broker: &BrokerAddress, line: &[u8]) -> Result<String, BrokerError> {
        let result = (|| {
            let connection = match &mut self.connection {
                Some(connection) => connection,
                None => self.connection.insert(connect(broker)?),
            };
            round_trip(connection, line)
        })();
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    fn give_up(
        &mut self,
        broker: &BrokerAddress,
        error: &BrokerError,
    ) -> Option<Map<String, Value>> {
        eprintln!(
            "{}: warning: rate broker at {broker} unreachable ({error}); going on without rate-limit permits",
            self.agent,
        );
        self.broker = None;
        self.connection = None;
        None
    }
}

/// A new connection to the broker; a TCP one has said hello already.
fn connect(broker: &BrokerAddress) -> Result<Connection, BrokerError> {
    match broker {
        BrokerAddress::Unix(path) => {
            let stream = UnixStream::connect(path).map_err(BrokerError::Connect)?;
            Ok(BufReader::new(Box::new(stream)))
        }
        BrokerAddress::Tcp { address, secret } => {
            let secret = secret.as_deref().ok_or(BrokerError::NoSecret)?;
            let stream = connect_tcp(address).map_err(BrokerError::Connect)?;
            // Nagle would hold each request back for the broker's delayed
            // ACK: a permit round trip must stay well under a millisecond.
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(TCP_TIMEOUT))?;
            let reader = stream.try_clone()?;
            let mut connection: Connection = BufReader::new(Box::new(stream));
            let mut hello = json!({"op": "hello", "secret": secret}).to_string();
            hello.push('\n');
            let reply = round_trip(&mut connection, hello.as_bytes())?;
            match serde_json::from_str::<Value>(&reply) {
                Ok(reply) if reply["ok"] == true => {}
                Ok(reply) => {
                    let error = reply["error"].as_str().unwrap_or("no reason given");
                    return Err(BrokerError::Refused(error.to_owned()));
                }
                Err(_) => return Err(BrokerError::Refused(reply.trim_end().to_owned())),
            }
            // No read timeout from here on: a permit may rightly take minutes.
            reader.set_read_timeout(None)?;
            Ok(connection)
        }
    }
}

/// TcpStream::connect with a time limit on each of the address's resolutions.
fn connect_tcp(address: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{address} resolves to no address"),
    );
    for resolved in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&resolved, TCP_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// Writes one request line and reads its reply line.
fn round_trip(connection: &mut Connection, line: &[u8]) -> Result<String, BrokerError> {
    connection.get_mut().write_all(line)?;
    let mut reply = String::new();
    // No time limit once connected: a permit may rightly take minutes to come.
    if connection.read_line(&mut reply)? == 0 {
        return Err(BrokerError::Closed);
    }
    Ok(reply)
}

/// The tokens an item is expected to use: its JSON length / 4, rounded up,
/// at least 1 (about four characters make a token).
pub fn estimate_tokens(item: &Value) -> u64 {
    let length = serde_json::to_string(item)
        .map(|text| text.len())
        .unwrap_or(0);
    (length as u64).div_ceil(4).max(1)
}

/// The tokens a result says it used: `usage.total_tokens` (the OpenAI
/// shape), else `tokens`; a fraction is rounded up.
pub fn used_tokens(record: &Map<String, Value>) -> Option<u64> {
    let number = record
        .get("usage")
        .and_then(|usage| usage.get("total_tokens"))
        .filter(|value| value.is_number())
        .or_else(|| record.get("tokens").filter(|value| value.is_number()))?;
    if let Some(whole) = number.as_u64() {
        return Some(whole);
    }
    let float = number.as_f64().filter(|f| f.is_finite() && *f >= 0.0)?;
    Some(float.ceil() as u64)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tcp_tests;
