//! The supervisor's errors, and the one place that maps them to exit codes.

use std::path::PathBuf;

use shared::exit_codes;
use shared::input::InputError;
use shared::job::JobError;
use shared::journal::JournalError;
use shared::plan::PlanError;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{}: key `input.path`: the input file {} does not exist", job.display(), path.display())]
    InputMissing { job: PathBuf, path: PathBuf },
    #[error("run directory {0} is not empty; give a new one with --run-dir, or continue that run with `nightshift resume {0}`")]
    RunDirNotEmpty(PathBuf),
    #[error("{0}")]
    AgentProgram(String),
    #[error("cannot use {0} as the run directory: {1}")]
    RunDirUnusable(PathBuf, std::io::Error),
    #[error("{0} is not a run directory (it has no plan.json)")]
    NotARunDir(PathBuf),
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "another supervisor (pid {1}) is running {0}; wait for it, or stop it with `kill -INT {1}`"
    )]
    Busy(PathBuf, String),
    #[error("no supervisor is running {0}: control changes a live run (start it again with `nightshift resume {0}`)")]
    NotLive(PathBuf),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The job's answer cache cannot be used.
    #[error(transparent)]
    Cache(#[from] shared::answer_cache::CacheError),
    #[error(transparent)]
    Platform(#[from] crate::platform::PlatformError),
    #[error("{}{what}: {source}", if shared::disk::is_full(source) { "the disk is full or read-only (free space, then `nightshift resume`): " } else { "" })]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl SupervisorError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    /// The documented exit code for this error (README: "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Job(_)
            | Self::Input(_)
            | Self::Plan(_)
            | Self::InputMissing { .. }
            | Self::RunDirNotEmpty(_)
            | Self::AgentProgram(_)
            | Self::RunDirUnusable(..)
            | Self::NotARunDir(_)
            | Self::Unsupported(_)
            | Self::Busy(..)
            | Self::NotLive(_)
            | Self::Platform(_)
            | Self::Cache(_) => exit_codes::USAGE,
            Self::Io { source, .. } if shared::disk::is_full(source) => exit_codes::CANNOT_GO_ON,
            Self::Io { .. } | Self::Journal(_) => exit_codes::INCOMPLETE,
        }
    }
}

pub type Result<T, E = SupervisorError> = std::result::Result<T, E>;
