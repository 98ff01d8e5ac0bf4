//! The agent's core: a bounded pool of items in flight (`pool`) feeding the
//! single writer of the agent file and the failures file (`writer`).

pub mod pool;
pub mod writer;
