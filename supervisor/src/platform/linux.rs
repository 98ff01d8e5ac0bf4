//! The Linux implementation: the process table read from /proc (a process's
//! parent, group, session, start time and resident memory, its children, its
//! environment), MemAvailable, the boot id, and the child subreaper. Start
//! times make a pid an identity: a pid reused by another process has another
//! start time.

use std::fs;
use std::sync::OnceLock;

use super::ProcStat;

pub fn stat(pid: i32) -> Option<ProcStat> {
    let text = read_small(&format!("/proc/{pid}/stat"))?;
    parse_stat(pid, &text)
}

/// Reads a small /proc file with plain reads: std's whole-file helpers first
/// ask for the file's size, one system call too many when sampling hundreds
/// of processes twice a second (and /proc reports size 0 anyway).
fn read_small(path: &str) -> Option<String> {
    use std::io::Read;
    let mut file = fs::File::open(path).ok()?;
    let mut buffer = [0u8; 1024];
    let mut text = Vec::new();
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    String::from_utf8(text).ok()
}

/// Parses /proc/PID/stat. The command name (field 2) is in parentheses and may
/// itself hold spaces and parentheses, so fields are counted after the last ')'.
fn parse_stat(pid: i32, text: &str) -> Option<ProcStat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 of proc(5): state; ppid 4, pgrp 5, session 6,
    // starttime 22, rss 24.
    let state = fields.first()?.chars().next()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    Some(ProcStat {
        pid,
        gone: matches!(state, 'Z' | 'X' | 'x'),
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        sid: fields.get(3)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
        rss: rss_pages * page_size(),
        threads: fields.get(17)?.parse().ok()?,
    })
}

/// The children of a process, from every one of its threads (a child is listed
/// under the thread that forked it). For a single-threaded process (most
/// agents and their helpers) only the one thread's list is read.
pub fn children(pid: i32) -> Vec<i32> {
    match stat(pid) {
        Some(s) if s.threads <= 1 => thread_children(pid, pid),
        _ => all_threads_children(pid),
    }
}

/// Children listed under one thread.
pub fn thread_children(pid: i32, tid: i32) -> Vec<i32> {
    read_small(&format!("/proc/{pid}/task/{tid}/children"))
        .map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn all_threads_children(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            found.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    found
}

/// Every pid in the process table.
pub fn all_pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// The value of one variable in a process's initial environment (inherited by
/// every descendant that did not clear it).
pub fn environ_var(pid: i32, name: &str) -> Option<String> {
    let bytes = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    bytes
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// This boot's id: start times only compare within one boot.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Makes orphaned descendants of our agents (double forks, daemons) our
/// children instead of init's, so they are reaped by us and stay in view.
pub fn become_subreaper() -> std::io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)
}

/// MemAvailable from /proc/meminfo, in bytes: what the machine can still give
/// without swapping.
pub fn mem_available() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes per memory page (/proc counts resident memory in pages), asked once.
fn page_size() -> u64 {
    static SIZE: OnceLock<u64> = OnceLock::new();
    *SIZE.get_or_init(|| {
        // SAFETY: sysconf reads a constant of the system; no memory is passed.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (we(i)rd name) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 10000 321 18446744073709551615";
        let stat = parse_stat(4242, line).expect("parses");
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.pgid, 4242);
        assert_eq!(stat.sid, 4242);
        assert_eq!(stat.start, 987654);
        assert_eq!(stat.rss, 321 * page_size());
        assert!(!stat.is_gone());
        assert_eq!(stat.threads, 1);
    }

    #[test]
    fn our_own_process_is_readable() {
        let me = i32::try_from(std::process::id()).expect("pid");
        let stat = stat(me).expect("own stat");
        assert!(!stat.is_gone());
        assert!(environ_var(me, "PATH").is_some());
    }
}
