//! The rate broker shared by every agent of a run: the run's budget, each
//! API key's pace to its learned limits, and the socket they are asked over.

pub mod broker;
pub mod bucket;
pub mod budget;
pub mod daily;
mod io_loop;
pub mod key_choice;
pub mod key_pacer;
pub mod learned;
pub mod log;
pub mod server;
pub mod spend;
pub mod warmup;
