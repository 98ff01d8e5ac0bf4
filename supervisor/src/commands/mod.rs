//! One file per command of the command line.

pub mod cache;
pub mod cancel;
pub mod completions;
pub mod control;
pub mod failures;
pub mod man;
pub mod merge;
pub mod permit;
pub mod plan;
pub mod report;
pub mod resume;
pub mod run;
pub mod stages;
pub mod status;
pub mod validate;
