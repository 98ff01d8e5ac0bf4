//! The rate broker's socket protocol: the requests an agent (or `nightshift
//! permit`) sends and the replies the supervisor's broker gives, one JSON
//! object per line each way, plus RUN/broker.json and the TCP connect both
//! clients share. Every line of the protocol is written by `to_line` and read
//! by `from_line` here, so the two sides cannot drift apart.
//!
//!   {"op":"permit","tokens":N,"agent":NAME}            → {"ok":true,"waited_ms":F} once granted
//!   {"op":"report","tokens":ACTUAL,"estimated":N,…}    → {"ok":true}
//!   {"op":"backoff","seconds":S,…}                     → {"ok":true,"paused_ms":F}  (S = 0: rate.backoff)
//!   {"op":"learned","key":K,"requests":{…},…}          → {"ok":true}  (limits from an answer's headers)
//!   permit, report and backoff may name a "key" (see `key_id`): each key is paced apart
//!   permit may name "keys" instead (a pool): the broker chooses the key
//!   with the most left by its learned limits and answers it as "key"
//!   permit and report may name a cacheable "prefix" (a hash of it): the first
//!   permit with a prefix goes alone, the others with it wait for its report
//!   (prompt-cache warm-up: the cache is written once, then read)
//!   {"op":"rejected","key":K}                          → {"ok":true}  (the server refused K: it is dropped)
//!   permit may carry "cost" (USD at most) and report "cost" (USD spent): the
//!   broker holds the run's budget; a permit it cannot cover is refused
//!   with {"ok":false,"spent":true,"error":TEXT} (and so is every later one)
//!   {"op":"hello","secret":S}                          → {"ok":true}
//!   anything refused                                   → {"ok":false,"error":TEXT}

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// The environment variable naming the broker: a socket path or `tcp:HOST:PORT`.
pub const SOCKET_VAR: &str = "NIGHTSHIFT_SOCKET";
/// The secret a TCP connection's hello carries.
pub const SECRET_VAR: &str = "NIGHTSHIFT_SECRET";
/// What starts a SOCKET_VAR value that is a TCP address rather than a path.
pub const TCP_PREFIX: &str = "tcp:";

/// RUN/rate.limited: made by the broker the first time an agent reports a
/// rate-limit answer or an announced limit. Agents of a job without limits
/// take no permits (the broker hears nothing from them) until this file is
/// there: a stat per call, where a permit is a round trip.
pub const LIMITED_FILE: &str = "rate.limited";
/// The environment variable naming the run directory (agent contract).
pub const RUN_DIR_VAR: &str = "NIGHTSHIFT_RUN_DIR";

/// How long connecting to a TCP broker may take: a firewall that drops
/// packets must not stall a client for minutes.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// One request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Wait until a permit for `tokens` estimated tokens is granted (for the
    /// API key `key` when the agent names one: each key is paced apart).
    Permit {
        #[serde(default = "one_token")]
        tokens: u64,
        #[serde(default)]
        agent: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// USD the call may cost at most (its prompt and max_tokens at the
        /// price), for the run's budget.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost: Option<f64>,
        /// A pool of keys (without `key`): the broker chooses one of them
        /// and names it in the reply.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        keys: Vec<String>,
        /// The request carries this cacheable prefix (`prefix_id`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
    },
    /// The server rejected `key` (401/403): no permit chooses it again.
    Rejected {
        key: String,
        #[serde(default)]
        agent: String,
    },
    /// A call used `tokens`; it was granted for `estimated` (default: the
    /// same) and cost `cost` USD (a call that got no answer: 0).
    Report {
        #[serde(default)]
        tokens: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        estimated: Option<u64>,
        #[serde(default)]
        agent: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost: Option<f64>,
        /// The USD its permit reserved.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        estimated_cost: Option<f64>,
        /// The permit's cacheable prefix.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
        /// No reply is sent, and the reporter reads none: a report then costs
        /// no round trip (nightshift-agent's; `nightshift permit --report`
        /// waits for its "ok").
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        quiet: bool,
    },
    /// A rate-limit answer: pause every permit (of `key`, when named)
    /// `seconds` (0: the broker's default).
    Backoff {
        #[serde(default, serialize_with = "whole_as_integer")]
        seconds: f64,
        #[serde(default)]
        agent: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// What an answer's rate-limit headers said about `key`'s limits.
    Learned {
        key: String,
        #[serde(default)]
        agent: String,
        #[serde(flatten)]
        limits: LearnedLimits,
    },
    /// The first line of a TCP connection (optional on the Unix socket).
    Hello {
        #[serde(default)]
        secret: String,
    },
}

fn one_token() -> u64 {
    1
}

/// A whole number of seconds goes out as an integer, which any reader takes
/// (and which is what agents have always sent).
fn whole_as_integer<S: Serializer>(seconds: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if seconds.fract() == 0.0 && *seconds < u64::MAX as f64 {
        // A negative whole number saturates to 0: the broker's default pause.
        serializer.serialize_u64(*seconds as u64)
    } else {
        serializer.serialize_f64(*seconds)
    }
}

/// An API key as the broker knows it: never the key itself, only where it
/// is used and the environment variable that holds it
/// (`"<base_url> <API_KEY_ENV>"`).
pub fn key_id(base_url: &str, api_key_env: &str) -> String {
    format!("{base_url} {api_key_env}")
}

/// The broker's name of a cacheable prompt prefix: the endpoint, the model
/// and a hash of the prefix's text (the prompt itself never leaves the agent).
pub fn prefix_id(base_url: &str, model: &str, prefix: &str) -> String {
    // FNV-1a: stable across processes and versions, unlike std's hasher.
    let hash = prefix
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{base_url} {model} {hash:016x}")
}

/// One rate-limit window a server announced: its size, what is left of it,
/// and when it is full again.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window is whole again.
    pub reset_seconds: f64,
}

/// The limits one answer's headers told (x-ratelimit-*, anthropic-ratelimit-*).
/// Servers that limit input and output tokens apart (Anthropic) fill those;
/// others fill `tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LearnedLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Window>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Window>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<Window>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<Window>,
}

impl LearnedLimits {
    /// Nothing was learned.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Why a request line was not understood.
#[derive(Debug, thiserror::Error)]
pub enum BadRequest {
    #[error("not a JSON object: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("unknown op; use permit, report, backoff, learned or rejected")]
    UnknownOp,
    #[error("bad {op} request: {source}")]
    Invalid {
        op: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Request {
    /// The request as one line, newline included, ready for a single write
    /// (with Nagle off, two writes would be two packets).
    pub fn to_line(&self) -> String {
        let mut line = to_sorted_json(self);
        line.push('\n');
        line
    }

    /// Reads one request line.
    pub fn from_line(line: &str) -> Result<Self, BadRequest> {
        let value: Value = serde_json::from_str(line).map_err(BadRequest::NotJson)?;
        let op = value.get("op").and_then(Value::as_str).unwrap_or_default();
        if ![
            "permit", "report", "backoff", "learned", "rejected", "hello",
        ]
        .contains(&op)
        {
            return Err(BadRequest::UnknownOp);
        }
        let op = op.to_owned();
        serde_json::from_value(value).map_err(|source| BadRequest::Invalid { op, source })
    }

    /// Whether the broker answers it (all but a quiet report).
    pub fn wants_reply(&self) -> bool {
        !matches!(self, Self::Report { quiet: true, .. })
    }

    /// The op's name, for messages.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Permit { .. } => "permit",
            Self::Report { .. } => "report",
            Self::Backoff { .. } => "backoff",
            Self::Learned { .. } => "learned",
            Self::Rejected { .. } => "rejected",
            Self::Hello { .. } => "hello",
        }
    }
}

/// One reply line. Fields are declared in alphabetical order, the order the
/// broker has always written them in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Why the request was refused (with `ok` false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The key a permit for a pool of keys was granted for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default)]
    pub ok: bool,
    /// A backoff's pause, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_ms: Option<f64>,
    /// A permit refused because the run's budget is spent (with `ok`
    /// false): the agent stops asking and exits, its items left for a resume.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spent: bool,
    /// How long a permit waited, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<f64>,
}

impl Reply {
    /// `{"ok":true}`.
    pub fn ok() -> Self {
        Self {
            ok: true,
            ..Self::default()
        }
    }

    pub fn granted(waited_ms: f64) -> Self {
        Self {
            waited_ms: Some(waited_ms),
            ..Self::ok()
        }
    }

    pub fn paused(paused_ms: f64) -> Self {
        Self {
            paused_ms: Some(paused_ms),
            ..Self::ok()
        }
    }

    /// A permit the run's budget cannot cover.
    pub fn spent(error: impl Into<String>) -> Self {
        Self {
            spent: true,
            ..Self::refused(error)
        }
    }

    pub fn refused(error: impl Into<String>) -> Self {
        Self {
            error: Some(error.into()),
            ..Self::default()
        }
    }

    /// The reply as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut line = to_sorted_json(self);
        line.push('\n');
        line
    }

    /// Reads one reply line; `None` when it is not a reply object.
    pub fn from_line(line: &str) -> Option<Self> {
        serde_json::from_str(line).ok()
    }

    /// The refusal's reason, or a stand-in when the broker gave none.
    pub fn reason(&self) -> &str {
        self.error.as_deref().unwrap_or("no reason given")
    }
}

/// JSON text with an object's keys in alphabetical order, the order the
/// protocol's lines have always had (a `serde_json::Map` keeps its keys sorted).
fn to_sorted_json<T: Serialize>(message: &T) -> String {
    // Cannot fail: every key of these types is a string.
    serde_json::to_value(message)
        .unwrap_or(Value::Null)
        .to_string()
}

/// RUN/broker.json: where a TCP broker listens and its secret, for clients
/// the environment did not reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerFile {
    pub secret: String,
    /// HOST:PORT.
    pub tcp: String,
}

impl BrokerFile {
    /// The file's text, newline included.
    pub fn to_text(&self) -> String {
        let mut text = to_sorted_json(self);
        text.push('\n');
        text
    }

    pub fn from_text(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// Why one exchange with the broker got no reply.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the broker closed the connection")]
    Closed,
    /// A line came back that is not a reply object: the raw line.
    #[error("the broker answered {0:?}, not a JSON object")]
    NotAReply(String),
}

/// Writes one request line and reads its reply line. No time limit is set
/// here: a permit may rightly take minutes to come.
/// Sends a request that has no reply (`Request::wants_reply`).
pub fn tell<S: Read + Write>(connection: &mut BufReader<S>, request: &Request) -> io::Result<()> {
    connection.get_mut().write_all(request.to_line().as_bytes())
}

pub fn exchange<S: Read + Write>(
    connection: &mut BufReader<S>,
    request: &Request,
) -> Result<Reply, ExchangeError> {
    connection
        .get_mut()
        .write_all(request.to_line().as_bytes())?;
    let mut line = String::new();
    if connection.read_line(&mut line)? == 0 {
        return Err(ExchangeError::Closed);
    }
    Reply::from_line(&line).ok_or_else(|| ExchangeError::NotAReply(line.trim_end().to_owned()))
}

/// TcpStream::connect with TCP_TIMEOUT on each of the address's resolutions,
/// and Nagle off: it would hold each request back for the peer's delayed ACK,
/// and a permit round trip must stay well under a millisecond.
pub fn connect_tcp(address: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{address} resolves to no address"),
    );
    for resolved in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&resolved, TCP_TIMEOUT) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(error) => last = error,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests;
