//! Setting up and reopening a run directory: the job checked and frozen, the
//! lock, the session shared by `run` and `resume`, the journal, task files,
//! live.json, what an existing run says about its progress, and the notify
//! command told when a session ends.

pub mod agent_program;
pub mod answer_cache;
pub mod budget;
pub mod existing;
pub mod journal;
pub mod live;
pub mod lock;
pub mod notify;
pub mod pipeline;
pub mod resume;
pub mod session;
pub mod setup;
pub mod stage_feed;
pub mod stage_group;
pub mod tasks;
