//! Backends: what turns one item into one result record, behind one trait.
//! `exec` runs a command per item (one of a fallback list); `demo` is the
//! built-in deterministic generator; `openai` / `anthropic` call an LLM API
//! (one endpoint of a fallback list).

mod demo;
mod exec;
pub mod llm;
pub mod rate_limit;

pub use demo::DemoBackend;
pub use exec::ExecBackend;
pub use llm::{LlmBackend, LlmError};
pub use rate_limit::RateLimit;

use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value};
use shared::broker::LearnedLimits;
use shared::ids::IdKey;
use shared::job::{AgentSettings, Backend as BackendKind, HumanDuration};
use shared::money::Spend;

use crate::permit::estimate_tokens;
use crate::process::RunError;
use crate::setup::SetupError;
use crate::validate::Rejection;

/// One backend call: an item, and which attempt at it this is.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub item: &'a Value,
    pub id: &'a IdKey,
    pub id_field: &'a str,
    /// The agent launch, from 1 (NIGHTSHIFT_ATTEMPT).
    pub launch_attempt: u32,
    /// The attempt at this item with the command in use, from 1.
    pub item_attempt: u32,
}

/// Why one attempt at an item failed. The message is the reason written to
/// the failures file, so each variant carries its cause in its own text.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("cannot start {program:?}: {error}")]
    Spawn {
        program: String,
        error: std::io::Error,
    },
    #[error("item timeout after {after}{}", if *.exited { " (the command exited but its stdout stayed open)" } else { "" })]
    Timeout { after: HumanDuration, exited: bool },
    #[error("command exited with code {code}{}", quote_tail(.said))]
    ExitCode { code: i32, said: Said },
    #[error("command was killed by signal {signal}{}", quote_tail(.said))]
    Signal { signal: i32, said: Said },
    #[error("command printed nothing on stdout")]
    EmptyOutput,
    #[error("{what} failed: {error}")]
    Io {
        what: &'static str,
        error: std::io::Error,
    },
    #[error("lost track of the command (a helper thread stopped)")]
    Lost,
    #[error("demo failure")]
    Demo,
    #[error("the record has id {found} under {field:?}, expected {expected}")]
    WrongId {
        field: String,
        found: String,
        expected: IdKey,
    },
    /// The command answered "rate limited": retried without counting.
    #[error("rate limited ({0})")]
    RateLimited(RateLimit),
    /// Rate limited more often than the free retries allow: a counted failure.
    #[error("rate limited {0} times")]
    RateLimitedTooOften(u32),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// An LLM request's failure; its kind says how it is retried.
    #[error(transparent)]
    Llm(#[from] LlmError),
}

/// What one call tells the item runner besides its result, for the rate
/// broker: which API key it used, what the answer's headers said about that
/// key's limits, and how many tokens it really used. Filled in even when
/// the call fails (a rejected reply still cost its tokens).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Meter {
    /// In: the key the broker chose from a pool (None: the backend's own
    /// choice). Out: the broker's name of the key the call used
    /// (`shared::broker::key_id`); None: the run's shared permits.
    pub key: Option<String>,
    pub learned: Option<LearnedLimits>,
    pub used_tokens: Option<u64>,
    /// The answer's usage and cost (an LLM answer, even one refused below).
    pub spend: Option<Spend>,
}

impl From<RunError> for AttemptError {
    /// Keeps the exec backend's own wording ("item timeout …") for the
    /// failures of the shared command runner.
    fn from(error: RunError) -> Self {
        match error {
            RunError::Spawn { program, error } => Self::Spawn { program, error },
            RunError::Timeout { after, exited } => Self::Timeout { after, exited },
            RunError::Io { what, error } => Self::Io { what, error },
            RunError::Lost => Self::Lost,
        }
    }
}

/// The last words of a failed command: the end of its stderr where it wrote
/// any (why it failed, usually), else the end of its stdout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Said {
    pub stderr: String,
    pub stdout: String,
}

fn quote_tail(said: &Said) -> String {
    let (stream, tail) = if said.stderr.is_empty() {
        ("stdout", said.stdout.as_str())
    } else {
        ("stderr", said.stderr.as_str())
    };
    quote(stream, tail)
}

fn quote(stream: &str, tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; {stream} ends with: {tail}")
    }
}

/// What turns one item into one record. One backend serves every worker of
/// the agent at once (`&self`, `Send + Sync`): whatever belongs to one item —
/// the item, which attempt, which alternative — comes in with the call, so a
/// backend with many requests in flight needs no lock around itself.
pub trait Backend: Send + Sync {
    /// How many alternatives there are to fall back through (1 but for a
    /// fallback list of commands).
    fn choices(&self) -> usize {
        1
    }

    /// The name of alternative `choice`, for messages and produced_by.
    fn label(&self, choice: usize) -> String;

    /// Whether records get `produced_by` (the label) when there is a choice;
    /// a backend whose records name their source themselves says no.
    fn marks_producer(&self) -> bool {
        true
    }

    /// The broker's name of the API key a call with `choice` would use now
    /// (None: the run's shared permits).
    fn permit_key(&self, _choice: usize) -> Option<String> {
        None
    }

    /// The keys a call with `choice` may use, for the broker to choose
    /// from (empty: the run's shared permits; one: that key's).
    fn permit_keys(&self, choice: usize) -> Vec<String> {
        self.permit_key(choice).into_iter().collect()
    }

    /// Whether `choice` can still be called at all (an LLM endpoint whose
    /// keys were all rejected cannot).
    fn usable(&self, _choice: usize) -> bool {
        true
    }

    /// The tokens a permit for this call reserves.
    fn estimate(&self, call: Call<'_>, _choice: usize) -> u64 {
        estimate_tokens(call.item)
    }

    /// The cacheable prefix a call with `choice` carries
    /// (`shared::broker::prefix_id`): the broker lets the first such call go
    /// alone, so that the prompt cache is written once.
    fn cache_prefix(&self, _choice: usize) -> Option<String> {
        None
    }

    /// Whether a call that got no answer settles its permit all the same
    /// (with nothing used), so that the broker's budget lets go of what the
    /// permit reserved: the LLM backends do; the others report only what
    /// their records say they used, as they always have.
    fn settles_permits(&self) -> bool {
        false
    }

    /// The USD this call may cost at most, for the run's budget (None: no
    /// price is known).
    fn estimate_cost(&self, _call: Call<'_>, _choice: usize) -> Option<f64> {
        None
    }

    /// The record of an answer already paid for (the LLM backends' answer
    /// cache), got without a permit, a request or money; None: the call
    /// must be made.
    fn cached(
        &self,
        _call: Call<'_>,
        _choice: usize,
    ) -> Option<Result<Map<String, Value>, AttemptError>> {
        None
    }

    /// Runs one attempt at one item with alternative `choice`; the record is
    /// an object, its id not yet checked. What the call learned for the
    /// rate broker goes into `meter`.
    fn call<'a>(&'a self, call: Call<'a>, choice: usize, meter: &'a mut Meter) -> CallFuture<'a>;

    /// Whether a call holds its thread until it ends (a command run to its
    /// end): then each item in flight gets a thread of its own. A backend
    /// whose calls only wait (on a socket, a timer) says no, and every item
    /// of the agent shares one event loop (`core::pool::Spread`).
    fn holds_thread(&self) -> bool {
        true
    }
}

/// What one call comes to, once it has.
pub type CallResult = Result<Map<String, Value>, AttemptError>;

/// A call under way: the future of its result.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = CallResult> + 'a>>;

/// The backend chosen by agent.backend, its settings checked and ready to
/// run (the demo backend takes its memory here, at agent start).
pub fn from_settings(settings: &AgentSettings) -> Result<Box<dyn Backend>, SetupError> {
    Ok(match settings.backend {
        BackendKind::Exec => Box::new(ExecBackend::new(settings)?),
        BackendKind::Demo => Box::new(DemoBackend::new(&settings.demo)?),
        BackendKind::Openai | BackendKind::Anthropic => Box::new(llm::from_settings(settings)?),
    })
}
