//! The documented exit codes, in one place (README: "Exit codes").

/// Every item present and valid.
pub const SUCCESS: i32 = 0;
/// The run (or the checked files) has missing or invalid items.
pub const INCOMPLETE: i32 = 1;
/// Bad usage, a bad job file, or a bad input file: nothing was started.
pub const USAGE: i32 = 2;
/// The run stopped at its deadline before it was complete; resumable.
pub const DEADLINE: i32 = 3;
/// The run's budget (limits.max_cost / max_tokens) is spent; resumable
/// with a larger one. An agent exits with it too when the broker refused
/// it a permit for the budget: its items did not fail.
pub const BUDGET_SPENT: i32 = 4;
/// Cannot go on: no usable API key (every key was rejected), or the disk is
/// full. Resumable once fixed. An agent exits with it too, to tell the
/// supervisor that its items did not fail: the run cannot go on.
pub const CANNOT_GO_ON: i32 = 5;
/// Interrupted by a signal; resumable.
pub const INTERRUPTED: i32 = 130;
