//! `nightshift permit [--tokens N] [--backoff SECONDS] [--report N] [--key ID]
//! [--learned-requests L,R,S …]`: for shell and script agents. Talks to the
//! rate broker at NIGHTSHIFT_SOCKET (set for every agent): waits until a
//! permit is granted (exit 0), or reports a rate-limit answer so every agent
//! pauses (with --key: every agent's calls with that key), or reports the
//! tokens a call used, or (--learned-*) the limits an answer's headers told.
//!
//! NIGHTSHIFT_SOCKET is a Unix socket path, or `tcp:HOST:PORT` for agents on
//! other hosts (Slurm); a TCP connection first says hello with
//! NIGHTSHIFT_SECRET. Where the secret (or the whole variable) did not reach
//! the caller, RUN/broker.json — RUN from NIGHTSHIFT_RUN_DIR — has both.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use shared::broker::{
    connect_tcp, exchange, BrokerFile, ExchangeError, LearnedLimits, Request, Window, TCP_PREFIX,
};
use shared::exit_codes;

use crate::error::{Result, SupervisorError};

pub struct PermitRequest {
    pub tokens: u64,
    pub backoff: Option<f64>,
    pub report: Option<u64>,
    /// The API key's id (`shared::broker::key_id`), never the key.
    pub key: Option<String>,
    /// Limits an answer announced (sent instead of a permit, with `key`).
    pub learned: LearnedLimits,
}

/// Reads LIMIT,REMAINING,RESET_SECONDS (a window a server announced).
pub fn parse_window(text: &str) -> std::result::Result<Window, String> {
    let wrong = || format!("{text:?} is not LIMIT,REMAINING,RESET_SECONDS (e.g. 120,119,0.5)");
    let mut parts = text.split(',').map(str::trim);
    let (Some(limit), Some(remaining), Some(reset), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(wrong());
    };
    let reset_seconds: f64 = reset.parse().map_err(|_| wrong())?;
    if !reset_seconds.is_finite() || reset_seconds < 0.0 {
        return Err(wrong());
    }
    Ok(Window {
        limit: limit.parse().map_err(|_| wrong())?,
        remaining: remaining.parse().map_err(|_| wrong())?,
        reset_seconds,
    })
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
    let key = request.key.clone();
    let message = match (request.backoff, request.report, &key) {
        (Some(seconds), _, _) => Request::Backoff {
            seconds,
            agent,
            key,
        },
        (None, Some(actual), _) => Request::Report {
            tokens: actual,
            estimated: Some(request.tokens),
            agent,
            key,
            cost: None,
            estimated_cost: None,
            prefix: None,
            quiet: false,
        },
        (None, None, Some(key)) if !request.learned.is_empty() => Request::Learned {
            key: key.clone(),
            agent,
            limits: request.learned,
        },
        (None, None, _) => Request::Permit {
            tokens: request.tokens,
            agent,
            key,
            cost: None,
            keys: Vec::new(),
            prefix: None,
        },
    };
    let mut connection = connect(&broker)?;
    if let Broker::Tcp { secret, .. } = &broker {
        let hello = Request::Hello {
            secret: secret.clone(),
        };
        ask(&mut connection, &hello)?;
    }
    match ask(&mut connection, &message) {
        // The run's budget is spent: the shell agent stops like ours (exit 4).
        Err(SupervisorError::Unsupported(why)) if why.starts_with(SPENT) => {
            eprintln!("nightshift permit: {why}");
            Ok(exit_codes::BUDGET_SPENT)
        }
        other => other.map(|()| exit_codes::SUCCESS),
    }
}

/// How a refusal for the run's budget starts.
const SPENT: &str = "budget spent: ";

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
    let Some(address) = socket.to_str().and_then(|s| s.strip_prefix(TCP_PREFIX)) else {
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
    match BrokerFile::from_text(&text) {
        Some(file) => Ok(Some((file.tcp, file.secret))),
        None => Err(SupervisorError::Unsupported(format!(
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
        Broker::Tcp { address, .. } => Box::new(connect_tcp(address).map_err(
            SupervisorError::io(format!("cannot reach the rate broker at tcp:{address}")),
        )?),
    };
    Ok(BufReader::new(stream))
}

/// Sends one request; Ok once the broker answers it with `"ok": true`.
fn ask(connection: &mut BufReader<Box<dyn Stream>>, request: &Request) -> Result<()> {
    let reply = exchange(connection, request).map_err(|error| match error {
        ExchangeError::Io(error) => SupervisorError::io("the rate broker connection failed")(error),
        ExchangeError::Closed => SupervisorError::io("the rate broker did not answer")(
            std::io::ErrorKind::UnexpectedEof.into(),
        ),
        ExchangeError::NotAReply(_) => SupervisorError::io("the rate broker's answer is not JSON")(
            std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string()),
        ),
    })?;
    if reply.ok {
        Ok(())
    } else if reply.spent {
        Err(SupervisorError::Unsupported(format!(
            "{SPENT}{}",
            reply.reason()
        )))
    } else {
        Err(SupervisorError::Unsupported(format!(
            "the rate broker refused: {}",
            reply.reason()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_reads_from_three_numbers() {
        assert_eq!(
            parse_window("120, 119,0.5"),
            Ok(Window {
                limit: 120,
                remaining: 119,
                reset_seconds: 0.5
            })
        );
        for bad in ["120,119", "120,119,0.5,1", "a,1,1", "1,1,-2", "1,1,inf", ""] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }
}
