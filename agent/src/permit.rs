//! Rate-limit permits from the supervisor's broker, on the Unix socket named
//! by NIGHTSHIFT_SOCKET: one JSON request per line, one reply line each, over
//! one connection kept for the agent's life. Without the variable, or when the
//! broker cannot be reached, the agent works without permits: a missing
//! broker must slow nothing down and fail no item.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

pub const SOCKET_VAR: &str = "NIGHTSHIFT_SOCKET";

/// Why one exchange with the broker did not get a reply.
#[derive(Debug, thiserror::Error)]
enum BrokerError {
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the broker closed the connection")]
    Closed,
}

/// The agent's side of the broker protocol.
pub struct Permits {
    /// `None` once permits are off: no socket given, or the broker is gone.
    socket: Option<PathBuf>,
    agent: String,
    connection: Option<BufReader<UnixStream>>,
}

impl Permits {
    /// Connects lazily, at the first request: an agent whose items are all
    /// saved already never bothers the broker.
    pub fn new(socket: Option<PathBuf>, agent: &str) -> Self {
        Self {
            socket,
            agent: agent.to_owned(),
            connection: None,
        }
    }

    /// Whether requests still go to a broker.
    pub fn is_on(&self) -> bool {
        self.socket.is_some()
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
        let path = self.socket.clone()?;
        let mut line = request.to_string().into_bytes();
        line.push(b'\n');
        let had_connection = self.connection.is_some();
        let reply = match self.exchange(&path, &line) {
            Ok(reply) => reply,
            Err(first) if had_connection => {
                eprintln!(
                    "{}: lost the rate broker connection ({first}); reconnecting",
                    self.agent
                );
                match self.exchange(&path, &line) {
                    Ok(reply) => reply,
                    Err(second) => return self.give_up(&path, &second),
                }
            }
            Err(first) => return self.give_up(&path, &first),
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
    fn exchange(&mut self, path: &Path, line: &[u8]) -> Result<String, BrokerError> {
        let result = (|| {
            let connection = match &mut self.connection {
                Some(connection) => connection,
                None => self.connection.insert(BufReader::new(
                    UnixStream::connect(path).map_err(BrokerError::Connect)?,
                )),
            };
            connection.get_mut().write_all(line)?;
            let mut reply = String::new();
            // No read timeout: a permit may rightly take minutes to come.
            if connection.read_line(&mut reply)? == 0 {
                return Err(BrokerError::Closed);
            }
            Ok(reply)
        })();
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    fn give_up(&mut self, path: &Path, error: &BrokerError) -> Option<Map<String, Value>> {
        eprintln!(
            "{}: warning: rate broker at {} unreachable ({error}); going on without rate-limit permits",
            self.agent,
            path.display()
        );
        self.socket = None;
        self.connection = None;
        None
    }
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
