//! What must stop: relative timeouts, memory sampling and limits, the run's
//! RAM ceiling and the machine's free-memory floor, cgroups.

pub mod checks;
pub mod disk;
pub mod memory;
pub mod timeouts;
