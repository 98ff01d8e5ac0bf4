//! The connection to the broker: where it listens (NIGHTSHIFT_SOCKET: a Unix
//! socket path, or `tcp:HOST:PORT` with a hello carrying NIGHTSHIFT_SECRET),
//! connecting to it, and why an exchange got no reply.

use std::ffi::OsStr;
use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use shared::broker::{connect_tcp, exchange, ExchangeError, Request, SECRET_VAR, TCP_PREFIX};

/// Why one exchange with the broker did not get a reply.
#[derive(Debug, thiserror::Error)]
pub(super) enum BrokerError {
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    #[error("{SECRET_VAR} is not set, and a TCP broker wants it")]
    NoSecret,
    #[error("the broker refused the hello: {0}")]
    Refused(String),
}

impl From<io::Error> for BrokerError {
    fn from(error: io::Error) -> Self {
        Self::Exchange(ExchangeError::Io(error))
    }
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
        match socket.as_bytes().strip_prefix(TCP_PREFIX.as_bytes()) {
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
            Self::Tcp { address, .. } => write!(f, "{TCP_PREFIX}{address}"),
        }
    }
}

/// A Unix or a TCP stream: the protocol is the same on both.
pub(super) trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

pub(super) type Connection = BufReader<Box<dyn Stream>>;

/// Whether the broker answered at all (with a line that is not a reply).
pub(super) fn answered(error: &BrokerError) -> bool {
    matches!(error, BrokerError::Exchange(ExchangeError::NotAReply(_)))
}

/// A new connection to the broker; a TCP one has said hello already.
pub(super) fn connect(broker: &BrokerAddress) -> Result<Connection, BrokerError> {
    match broker {
        BrokerAddress::Unix(path) => {
            let stream = UnixStream::connect(path).map_err(BrokerError::Connect)?;
            Ok(BufReader::new(Box::new(stream)))
        }
        BrokerAddress::Tcp { address, secret } => {
            let secret = secret.as_deref().ok_or(BrokerError::NoSecret)?;
            let stream = connect_tcp(address).map_err(BrokerError::Connect)?;
            // A broker that never answers the hello must not stall the agent.
            stream.set_read_timeout(Some(shared::broker::TCP_TIMEOUT))?;
            let reader = stream.try_clone()?;
            let mut connection: Connection = BufReader::new(Box::new(stream));
            let hello = Request::Hello {
                secret: secret.to_owned(),
            };
            match exchange(&mut connection, &hello) {
                Ok(reply) if reply.ok => {}
                Ok(reply) => return Err(BrokerError::Refused(reply.reason().to_owned())),
                Err(ExchangeError::NotAReply(line)) => return Err(BrokerError::Refused(line)),
                Err(error) => return Err(error.into()),
            }
            // No read timeout from here on: a permit may rightly take minutes.
            reader.set_read_timeout(None)?;
            Ok(connection)
        }
    }
}
