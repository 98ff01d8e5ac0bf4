//! What runs next: the launch gate (warm-up, waves, stagger, deadline) and the
//! halt policy.

pub mod gate;
pub mod halt;
