//! `nightshift permit [--tokens N] [--backoff SECONDS] [--report N]`: for shell
//! and script agents. Talks to the rate broker at NIGHTSHIFT_SOCKET (set for
//! every agent): waits until a permit is granted (exit 0), or reports a
//! rate-limit answer so every agent pauses, or reports the tokens a call used.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use serde_json::{json, Value};

use shared::exit_codes;

use crate::error::{Result, SupervisorError};

pub struct PermitRequest {
    pub tokens: u64,
    pub backoff: Option<f64>,
    pub report: Option<u64>,
}

pub fn permit(request: &PermitRequest) -> Result<i32> {
    let socket = std::env::var_os("NIGHTSHIFT_SOCKET").ok_or_else(|| {
        SupervisorError::Unsupported(
            "NIGHTSHIFT_SOCKET is not set: `nightshift permit` is for agents started by nightshift"
                .into(),
        )
    })?;
    let stream = UnixStream::connect(&socket).map_err(SupervisorError::io(format!(
        "cannot reach the rate broker at {}",
        socket.to_string_lossy()
    )))?;
    let agent = std::env::var("NIGHTSHIFT_AGENT").unwrap_or_default();
    let message = match (request.backoff, request.report) {
        (Some(seconds), _) => json!({"op": "backoff", "seconds": seconds, "agent": agent}),
        (None, Some(actual)) => {
            json!({"op": "report", "tokens": actual, "estimated": request.tokens, "agent": agent})
        }
        (None, None) => json!({"op": "permit", "tokens": request.tokens, "agent": agent}),
    };
    let io_error = SupervisorError::io("the rate broker connection failed");
    let mut writer = stream
        .try_clone()
        .map_err(SupervisorError::io("the rate broker connection failed"))?;
    writeln!(writer, "{message}").map_err(io_error)?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(SupervisorError::io("the rate broker did not answer"))?;
    let reply: Value = serde_json::from_str(&line)
        .map_err(|e| SupervisorError::io("the rate broker's answer is not JSON")(e.into()))?;
    if reply["ok"] == true {
        Ok(exit_codes::SUCCESS)
    } else {
        Err(SupervisorError::Unsupported(format!(
            "the rate broker refused: {}",
            reply["error"].as_str().unwrap_or("no reason given")
        )))
    }
}
