//! A full disk is an input like any other: errors that mean "no space left"
//! (or a read-only filesystem, or a spent quota) are told apart here, once,
//! for every process, so that each stops cleanly with exit code 5 instead of
//! counting items as failed.

use std::io;

/// True when `error` says the filesystem cannot take more writes: full,
/// over quota, or read-only. Fixed by an operator, not by retrying.
pub fn is_full(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_quota_and_read_only_are_told_apart_from_other_errors() {
        for code in [libc::ENOSPC, libc::EDQUOT, libc::EROFS] {
            assert!(is_full(&io::Error::from_raw_os_error(code)));
        }
        assert!(!is_full(&io::Error::from_raw_os_error(libc::EACCES)));
        assert!(
            !is_full(&io::Error::other("no space left on device")),
            "never by wording"
        );
    }
}
