//! What runs next: the scheduler's queue of attempts and its retries, the
//! launch gate (warm-up, waves, stagger, deadline) and the halt policy.

pub mod gate;
pub mod halt;
pub mod scheduler;
pub mod stage_link;
