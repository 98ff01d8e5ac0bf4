//! `nightshift permit [--tokens N] [--backoff SECONDS] [--report N]`: for shell
//! and script agents. Talks to the rate broker at NIGHTSHIFT_SOCKET (set for
//! every agent): waits until a permit is granted (exit 0), or reports a
//! rate-limit answer so every agent pauses, or reports the tokens a call used.
//!
//! NIGHTSHIFT_SOCKET is a Unix socket path, or `tcp:HOST:PORT` for agents on
//! other hosts (Slurm); a TCP connection first says hello with
//! NIGHTSHIFT_SECRET. Where the secret (or the whole variable) did not reach
//! the caller, RUN/broker.json — RUN from NIGHTSHIFT_RUN_DIR — has both.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use shared::exit_codes;

use crate::error::{Result, SupervisorError};

pub struct PermitRequest {
    pub tokens: u64,
    pub backoff: Option<f64>,
    pub report: Option<u64>,
}

/// Where the broker listens.
enum Broker {
    Unix(std::ffi::OsString),
    Tcp { address: String, secret: String },
}

/// A Unix or a TCP stream: the protocol is the same on both.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

pub fn permit(request: &PermitRequest) -> Result<i32> {
    let broker = find_broker()?;
    let agent = std::env::var("NIGHTSHIFT_AGENT").unwrap_or_default();
    let message = match (request.backoff, request.report) {
        (Some(seconds), _) => json!({"op": "backoff", "seconds": seconds, "agent": agent}),
        (None, Some(actual)) => {
            json!({"op": "report", "tokens": actual, "estimated": request.tokens, "agent": agent})
        }
        (None, None) => json!({"op": "permit", "tokens": request.tokens, "agent": agent}),
    };
    let mut connection = connect(&broker)?;
    if let Broker::Tcp { secret, .. } = &broker {
        exchange(&mut connection, &json!({"op": "hello", "secret": secret}))?;
    }
    exchange(&mut connection, &message)?;
    Ok(exit_codes::SUCCESS)
}

/// The broker named by NIGHTSHIFT_SOCKET (and NIGHTSHIFT_SECRET), else by
/// RUN/broker.json.
fn find_broker() -> Result<Broker> {
    let Some(socket) = std::env::var_os("NIGHTSHIFT_SOCKET") else {
        return match broker_file()? {
            Some((address, secret)) => Ok(Broker::Tcp { address, secret }),
            None => Err(SupervisorError::Unsupported(
                "NIGHTSHIFT_SOCKET is not set: `nightshift permit` is for agents started by nightshift"
                    .into(),
            )),
        };
    };
    let Some(address) = socket.to_str().and_then(|s| s.strip_prefix("tcp:")) else {
        return Ok(Broker::Unix(socket));
    };
    let secret = match std::env::var("NIGHTSHIFT_SECRET") {
        Ok(secret) => secret,
        Err(_) => broker_file()?.map(|(_, secret)| secret).ok_or_else(|| {
            SupervisorError::Unsupported(format!(
                "NIGHTSHIFT_SOCKET is tcp:{address} but NIGHTSHIFT_SECRET is not set (and there is no RUN/broker.json through NIGHTSHIFT_RUN_DIR)"
            ))
        })?,
    };
    Ok(Broker::Tcp {
        address: address.to_owned(),
        secret,
    })
}

/// (HOST:PORT, secret) from $NIGHTSHIFT_RUN_DIR/broker.json, which the
/// supervisor writes when its broker listens on TCP.
fn broker_file() -> Result<Option<(String, String)>> {
    let Some(run_dir) = std::env::var_os("NIGHTSHIFT_RUN_DIR") else {
        return Ok(None);
    };
    let path = Path::new(&run_dir).join("broker.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(SupervisorError::io(format!(
                "cannot read {}",
                path.display()
            ))(e))
        }
    };
    let file: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    match (file["tcp"].as_str(), file["secret"].as_str()) {
        (Some(address), Some(secret)) => Ok(Some((address.to_owned(), secret.to_owned()))),
        _ => Err(SupervisorError::Unsupported(format!(
            "{} does not hold {{\"tcp\":…,\"secret\":…}}",
            path.display()
        ))),
    }
}

fn connect(broker: &Broker) -> Result<BufReader<Box<dyn Stream>>> {
    let stream: Box<dyn Stream> = match broker {
        Broker::Unix(path) => Box::new(UnixStream::connect(path).map_err(SupervisorError::io(
            format!("cannot reach the rate broker at {}", path.to_string_lossy()),
        ))?),
        Broker::Tcp { address, .. } => {
            let what = format!("cannot reach the rate broker at tcp:{address}");
            let stream = connect_tcp(address).map_err(SupervisorError::io(&what))?;
            // Nagle would hold the request back for the broker's delayed ACK.
            stream
                .set_nodelay(true)
                .map_err(SupervisorError::io(what))?;
            Box::new(stream)
        }
    };
    Ok(BufReader::new(stream))
}

/// TcpStream::connect with a time limit on each of the address's
/// resolutions: a firewall that drops packets would stall it for minutes.
fn connect_tcp(address: &str) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{address} resolves to no address"),
    );
    for resolved in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&resolved, Duration::from_secs(10)) {
            Ok(stream) => return Ok(stream),
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// Sends one request; Ok once the broker answers it with `"ok": true`.
fn exchange(connection: &mut BufReader<Box<dyn Stream>>, message: &Value) -> Result<()> {
    // One write: with Nagle off, each write would be a packet of its own.
    let mut line = message.to_string();
    line.push('\n');
    connection
        .get_mut()
        .write_all(line.as_bytes())
        .map_err(SupervisorError::io("the rate broker connection failed"))?;
    line.clear();
    connection
        .read_line(&mut line)
        .map_err(SupervisorError::io("the rate broker did not answer"))?;
    let reply: Value = serde_json::from_str(&line)
        .map_err(|e| SupervisorError::io("the rate broker's answer is not JSON")(e.into()))?;
    if reply["ok"] == true {
        Ok(())
    } else {
        Err(SupervisorError::Unsupported(format!(
            "the rate broker refused: {}",
            reply["error"].as_str().unwrap_or("no reason given")
        )))
    }
}
