//! `nightshift control`: what another terminal may ask of a live run, and the
//! answer, one JSON object per line each way over RUN/control.sock (mode
//! 0600: only the run's owner). Written and read here, by both sides.
//!
//!   {"action":"max-parallel","n":N}   raise or lower concurrency (lowering lets agents finish)
//!   {"action":"pause"}                launch nothing; rate-limit permits wait
//!   {"action":"continue"}             undo a pause
//!   {"action":"stop"}                 graceful drain: no new agents, running ones finish; resumable
//!   → {"ok":true,"message":TEXT} | {"ok":false,"error":TEXT}

use std::fmt;

use serde::{Deserialize, Serialize};

/// The socket's name inside the run directory.
pub const SOCKET_FILE: &str = "control.sock";

/// One change to a live run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum ControlAction {
    MaxParallel { n: usize },
    Pause,
    Continue,
    Stop,
}

impl ControlAction {
    /// The request as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }

    /// Reads one request line; a line that is not a known action is refused
    /// with a reason the client can show.
    pub fn from_line(line: &str) -> Result<Self, String> {
        let action: Self = serde_json::from_str(line.trim())
            .map_err(|error| format!("not a control request ({error})"))?;
        if action == (Self::MaxParallel { n: 0 }) {
            return Err("max-parallel must be at least 1".to_owned());
        }
        Ok(action)
    }
}

impl fmt::Display for ControlAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MaxParallel { n } => write!(f, "max-parallel {n}"),
            Self::Pause => f.write_str("pause"),
            Self::Continue => f.write_str("continue"),
            Self::Stop => f.write_str("stop"),
        }
    }
}

/// The answer to one request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ControlReply {
    pub fn accepted(message: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: Some(message.into()),
            error: None,
        }
    }

    pub fn refused(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            message: None,
            error: Some(error.into()),
        }
    }

    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }

    pub fn from_line(line: &str) -> Option<Self> {
        serde_json::from_str(line.trim()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_keep_their_wire_format_and_read_back() {
        let raise = ControlAction::MaxParallel { n: 8 };
        assert_eq!(raise.to_line(), "{\"action\":\"max-parallel\",\"n\":8}\n");
        assert_eq!(ControlAction::Pause.to_line(), "{\"action\":\"pause\"}\n");
        for action in [
            raise,
            ControlAction::Pause,
            ControlAction::Continue,
            ControlAction::Stop,
        ] {
            assert_eq!(ControlAction::from_line(&action.to_line()), Ok(action));
        }
    }

    #[test]
    fn nonsense_and_zero_are_refused_with_a_reason() {
        assert!(ControlAction::from_line("{\"action\":\"explode\"}")
            .is_err_and(|e| e.contains("not a control request")));
        assert!(
            ControlAction::from_line("{\"action\":\"max-parallel\",\"n\":0}")
                .is_err_and(|e| e.contains("at least 1"))
        );
        let reply = ControlReply::refused("no");
        assert_eq!(ControlReply::from_line(&reply.to_line()), Some(reply));
    }
}
