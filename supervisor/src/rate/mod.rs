//! The rate broker shared by every agent of a run: the budget and its socket.

pub mod budget;
pub mod server;
