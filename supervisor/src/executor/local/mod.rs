//! The local executor's parts: starting an agent in its own session, its log,
//! its process tree, the reaper, the sweep of leftovers, and the platform calls.

pub mod agent_log;
mod executor;
pub mod launch;
pub mod reaper;
mod spawn;
pub mod sweep;
pub mod tree;
pub(crate) mod unix;

pub use executor::LocalExecutor;
