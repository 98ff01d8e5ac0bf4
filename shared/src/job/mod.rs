//! The job file: typed settings, value types, and loading with located errors.

mod cache;
mod executor;
mod keys;
mod llm;
mod load;
mod notify;
mod positive;
mod price;
mod settings;
mod stages;
mod values;

pub use cache::CacheSettings;
pub use executor::{ExecutorKind, ExecutorSettings};
pub use llm::{FallbackSettings, KeyVars, LlmMode, LlmSettings, ResponseFormat, Schema};
pub use load::{line_column, Job, JobError, JobFileError};
pub use notify::{default_notify_timeout, NotifySettings};
pub use settings::*;
pub use stages::{stage_dir_name, StageSettings};
pub use values::{AgentTimeout, ByteSize, Count, Deadline, HumanDuration, PositiveRate, Share};
