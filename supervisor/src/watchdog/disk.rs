//! Free disk space under the run directory, against limits.min_disk: below it
//! no agent is launched, so the run stops cleanly before the disk is full
//! (like limits.min_free does for memory).

use std::path::{Path, PathBuf};

use nix::sys::statvfs::statvfs;

use crate::reporting::view::size;

pub struct DiskWatch {
    path: PathBuf,
    /// limits.min_disk in bytes; 0: no check.
    min: u64,
    /// Free bytes at the last sample (None before it, or when unknown).
    free: Option<u64>,
}

impl DiskWatch {
    pub fn new(path: &Path, min: u64) -> Self {
        let mut watch = Self {
            path: path.to_path_buf(),
            min,
            free: None,
        };
        watch.sample();
        watch
    }

    /// Reads the free space again (one statvfs: cheap enough for every tick).
    pub fn sample(&mut self) {
        if self.min == 0 {
            return;
        }
        self.free = free_bytes(&self.path);
    }

    /// May another agent be launched? Unknown free space does not stop a run.
    pub fn admits(&self) -> bool {
        self.free.is_none_or(|free| free >= self.min)
    }

    /// Says so when the disk has (next to) nothing left, whatever min_disk is.
    pub fn full(&self) -> Option<String> {
        let free = self.free.or_else(|| free_bytes(&self.path))?;
        (free < FULL).then(|| {
            format!(
                "the disk holding {} is full ({} free): free space, then `nightshift resume`",
                self.path.display(),
                size(free)
            )
        })
    }

    /// Why nothing more is launched, for the console and the journal.
    pub fn shortage(&self) -> Option<String> {
        let free = self.free.filter(|free| *free < self.min)?;
        Some(format!(
            "the disk holding {} has {} free, below limits.min_disk ({}): free space, then `nightshift resume`",
            self.path.display(),
            size(free),
            size(self.min)
        ))
    }
}

/// Below this, a disk counts as full: an agent file's next record may not fit.
const FULL: u64 = 1 << 20;

// The field types differ between platforms (u64 on Linux, u32 elsewhere).
#[allow(clippy::useless_conversion)]
fn free_bytes(path: &Path) -> Option<u64> {
    statvfs(path)
        .ok()
        .map(|s| u64::from(s.blocks_available()).saturating_mul(u64::from(s.fragment_size())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_above_the_free_space_stops_launches_and_says_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let roomy = DiskWatch::new(dir.path(), 1);
        assert!(roomy.admits());
        assert_eq!(roomy.shortage(), None);
        let tight = DiskWatch::new(dir.path(), u64::MAX);
        assert!(!tight.admits());
        assert!(tight
            .shortage()
            .is_some_and(|why| why.contains("limits.min_disk")));
        let off = DiskWatch::new(dir.path(), 0);
        assert!(off.admits(), "0B turns the check off");
    }
}
