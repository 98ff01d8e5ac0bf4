//! What nightshift's binaries and tests agree on: the job file, the plan, the
//! run directory's layout and files, the run's journal (events.jsonl), record
//! files, merges and validation, the rate broker's socket protocol and the
//! documented exit codes.

pub mod answer_cache;
pub mod atomic;
pub mod batch;
pub mod broker;
pub mod control;
pub mod disk;
pub mod exit_codes;
pub mod failures;
pub mod ids;
pub mod input;
pub mod job;
pub mod journal;
pub mod merge;
pub mod money;
pub mod plan;
pub mod prompt;
pub mod records;
pub mod rundir;
pub mod task;
pub mod validate;
