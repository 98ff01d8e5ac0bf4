//! nightshift-agent, the ready-made agent of the agent contract: it runs a
//! backend on each item of its task (agent.concurrency items at once), appends
//! one fsynced record per finished item to its output file, skips the items
//! that file already holds (resume), takes rate-limit permits, retries failed
//! items (falling back to the next command of a list), validates every result
//! and lists the items that never succeed.

pub mod backend;
pub mod core;
pub mod failures;
pub mod hash;
pub mod item;
pub mod permit;
pub mod process;
pub mod setup;
pub mod validate;

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use shared::exit_codes;
use shared::ids::IdKey;
use shared::records::RecordAppender;

use crate::core::pool::{self, EventLoops, Pending, Spread};
use crate::core::writer::Writer;
use failures::FailureLog;
use item::{ItemContext, ItemRunner};
use permit::{PermitPolicy, Permits};
pub use setup::{Setup, SetupError};
use validate::Validator;

/// Why the agent stopped before going through its items.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// No usable API key is left; the items not saved did not fail.
    #[error(
        "cannot go on: {reason}; {saved} items saved, {left} left for a resume once that is fixed"
    )]
    CannotGoOn {
        reason: String,
        saved: usize,
        left: usize,
    },
    /// The run's budget is spent; the items not saved did not fail.
    #[error("budget spent: {reason}; {saved} items saved, {left} left for a resume with a larger budget")]
    BudgetSpent {
        reason: String,
        saved: usize,
        left: usize,
    },
    /// agent_NN.batch.jsonl could not be read or appended to: a batch the
    /// provider accepted must be found again, so nothing goes on without it.
    #[error("cannot write the batch journal {path}")]
    BatchJournal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A batch's body could not be written beside the agent's records.
    #[error("cannot write the batch to send, {path}")]
    BatchUpload {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot save the record of item {id} to {path}")]
    WriteOutput {
        id: IdKey,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    /// Bad setup is a usage error; a failed write leaves items missing; a
    /// full (or read-only) disk or no usable API key means the run cannot go
    /// on until someone fixes it: none of this agent's items failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Setup(_) => exit_codes::USAGE,
            Self::WriteOutput { source, .. }
            | Self::BatchJournal { source, .. }
            | Self::BatchUpload { source, .. }
                if shared::disk::is_full(source) =>
            {
                exit_codes::CANNOT_GO_ON
            }
            Self::WriteOutput { .. } | Self::BatchJournal { .. } | Self::BatchUpload { .. } => {
                exit_codes::INCOMPLETE
            }
            Self::CannotGoOn { .. } => exit_codes::CANNOT_GO_ON,
            Self::BudgetSpent { .. } => exit_codes::BUDGET_SPENT,
        }
    }
}

/// What one launch did with its task.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub total: usize,
    /// Items already in the output file at start, skipped.
    pub already_saved: usize,
    /// Items saved by this launch.
    pub written: usize,
    /// Items that failed every attempt, in task order.
    pub failed: Vec<IdKey>,
}

impl Outcome {
    /// Every item of the task is in the output file.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }

    pub fn exit_code(&self) -> i32 {
        if self.is_complete() {
            exit_codes::SUCCESS
        } else {
            exit_codes::INCOMPLETE
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} items: {} written, {} already saved, {} failed",
            self.total,
            self.written,
            self.already_saved,
            self.failed.len()
        )
    }
}

/// Works through the task: each item not yet saved is run on one of
/// agent.concurrency workers, checked, and appended by the one writer.
pub fn run(setup: &Setup) -> Result<Outcome, AgentError> {
    let task = &setup.task;
    let settings = &task.settings;
    // mode = "batch" | "auto": the poll interval (the LLM backends only).
    let batch_poll = match (settings.backend, &settings.llm) {
        (shared::job::Backend::Openai | shared::job::Backend::Anthropic, Some(llm))
            if llm.mode != shared::job::LlmMode::Online =>
        {
            Some(llm.batch_poll.get())
        }
        _ => None,
    };
    let engine = match batch_poll {
        Some(poll) => Engine::Batch(Box::new(backend::llm::from_settings(settings)?), poll),
        None => Engine::Online(backend::from_settings(settings)?),
    };
    let validator = Validator::new(settings.validate.as_ref(), settings.item_timeout)?;
    let (appender, existing) =
        RecordAppender::open(&setup.output, &task.id_field).map_err(|source| {
            SetupError::OpenOutput {
                path: setup.output.clone(),
                source,
            }
        })?;
    if existing.torn_bytes > 0 {
        eprintln!(
            "{}: cut off a torn last line ({} bytes) of {}",
            setup.agent,
            existing.torn_bytes,
            setup.output.display()
        );
    }
    let saved: HashSet<IdKey> = existing.ids.into_iter().collect();
    // An item that failed every attempt in an earlier launch is not tried
    // again: item_retries bounds its attempts across relaunches too
    // (`nightshift resume --retry-failed` sets the failures aside to retry).
    let failed_before: HashSet<IdKey> =
        shared::failures::read_failures(&failures::failures_path(&setup.output))
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !saved.contains(id))
            .collect();
    if !failed_before.is_empty() {
        eprintln!(
            "{}: {} item(s) failed every attempt in an earlier launch; not tried again",
            setup.agent,
            failed_before.len()
        );
    }
    let pending: Vec<Pending> = task
        .items
        .iter()
        .zip(&setup.ids)
        .enumerate()
        .filter(|(_, (_, id))| !saved.contains(*id) && !failed_before.contains(*id))
        .map(|(index, (item, id))| Pending {
            index,
            item: item.as_ref(),
            id,
        })
        .collect();

    let mut writer = Writer::new(
        appender,
        FailureLog::beside(&setup.output),
        &setup.agent,
        &setup.output,
    );
    match &engine {
        Engine::Online(backend) => run_online(
            setup,
            backend.as_ref(),
            validator.as_ref(),
            &pending,
            &mut writer,
        )?,
        Engine::Batch(backend, poll) => {
            let run = backend::llm::batch::BatchRun {
                agent: &setup.agent,
                id_field: &task.id_field,
                output: &setup.output,
                validator: validator.as_ref(),
                item_retries: settings.item_retries,
                poll: *poll,
                online_at: online_at(settings),
            };
            // A permit per batch where the job sets limits (its budget).
            let permits = task
                .permits
                .then(|| Permits::new(setup.socket.clone(), &setup.agent, PermitPolicy::Always));
            let online = backend::llm::batch::run(backend, &run, &pending, &mut writer, permits)?;
            if !online.is_empty() {
                let online: HashSet<IdKey> = online.into_iter().collect();
                let left: Vec<Pending> = pending
                    .iter()
                    .filter(|p| online.contains(p.id))
                    .copied()
                    .collect();
                let backend: &backend::LlmBackend = backend;
                run_online(setup, backend, validator.as_ref(), &left, &mut writer)?;
            }
        }
    }
    let written = writer.finish();
    if let Some(reason) = written.stopped {
        return Err(AgentError::CannotGoOn {
            reason,
            saved: saved.len() + written.written,
            left: pending.len() - written.written - written.failed.len(),
        });
    }
    if let Some(reason) = written.out_of_budget {
        return Err(AgentError::BudgetSpent {
            reason,
            saved: saved.len() + written.written,
            left: pending.len() - written.written - written.failed.len(),
        });
    }
    let failed_now: HashSet<&IdKey> = written.failed.iter().collect();
    let failed = setup
        .ids
        .iter()
        .filter(|id| failed_before.contains(*id) || failed_now.contains(id))
        .cloned()
        .collect();
    Ok(Outcome {
        total: task.items.len(),
        already_saved: saved.len(),
        written: written.written,
        failed,
    })
}

/// `nightshift-agent --cancel-batches`: asks the provider to cancel every
/// batch of this agent still running (for `nightshift cancel RUN`).
pub fn cancel_batches(setup: &Setup) -> Result<backend::llm::batch::Cancelled, AgentError> {
    let backend = backend::llm::from_settings(&setup.task.settings)?;
    backend::llm::batch::cancel(&backend, &setup.output, &setup.agent)
}

/// mode = "auto": when the supervisor says the items left go online
/// (shared::batch::ONLINE_AT_VAR); None in batch mode or without a deadline.
fn online_at(settings: &shared::job::AgentSettings) -> Option<std::time::SystemTime> {
    let auto = settings
        .llm
        .as_ref()
        .is_some_and(|llm| llm.mode == shared::job::LlmMode::Auto);
    let text = std::env::var(shared::batch::ONLINE_AT_VAR)
        .ok()
        .filter(|_| auto)?;
    match text.trim().parse::<u64>() {
        Ok(millis) => Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis)),
        Err(_) => {
            eprintln!(
                "{} is {text:?}, not milliseconds since the epoch: staying in batch mode",
                shared::batch::ONLINE_AT_VAR
            );
            None
        }
    }
}

/// How the agent asks: one request per item (every backend), or provider
/// batches (`agent.llm.mode = "batch"`).
enum Engine {
    Online(Box<dyn backend::Backend>),
    Batch(Box<backend::LlmBackend>, std::time::Duration),
}

/// The online way: each pending item on one of agent.concurrency workers.
fn run_online(
    setup: &Setup,
    backend: &dyn backend::Backend,
    validator: Option<&Validator>,
    pending: &[Pending<'_>],
    writer: &mut Writer<'_, RecordAppender>,
) -> Result<(), AgentError> {
    let task = &setup.task;
    let settings = &task.settings;
    let context = ItemContext::new(
        backend,
        validator,
        &setup.agent,
        &task.id_field,
        setup.attempt,
        settings.item_retries,
    );
    // No more workers than items: each may open a broker connection.
    // A pool of keys needs the broker to choose each call's key.
    let policy = if task.permits || backend.permit_keys(0).len() > 1 {
        PermitPolicy::Always
    } else if matches!(
        settings.backend,
        shared::job::Backend::Openai | shared::job::Backend::Anthropic
    ) {
        PermitPolicy::Probe
    } else {
        PermitPolicy::OnLimit
    };
    let permits = Permits::new(setup.socket.clone(), &setup.agent, policy);
    let workers: Vec<ItemRunner> = (0..settings.concurrency.get().min(pending.len()))
        .map(|_| ItemRunner::new(&context, permits.another()))
        .collect();
    if backend.holds_thread() {
        return pool::run(pending, workers, writer, Spread::Threads);
    }
    let loops = EventLoops::for_workers(workers.len()).map_err(SetupError::Llm)?;
    pool::run(pending, workers, writer, Spread::EventLoops(&loops))
}
