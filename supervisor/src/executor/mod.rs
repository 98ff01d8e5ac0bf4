//! Where agent attempts run: the local executor (child process groups of the
//! supervisor) and the Slurm executor (one batch job per attempt).

pub mod local;
pub mod slurm;
