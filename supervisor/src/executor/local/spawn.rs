//! Starting a child with posix_spawn: a new session (so a new process group
//! whose id is its pid), stdin from /dev/null, stdout and stderr into one
//! pipe, a working folder, and default signal dispositions.
//!
//! Why not `std::process::Command`: a `pre_exec` hook (the only way to call
//! setsid there) makes the standard library fork, and a fork copies the
//! supervisor's address space and page tables, so each launch got slower the
//! more agents were alive. glibc's posix_spawn starts the child vfork-style,
//! sharing memory until the exec: its cost does not grow with the supervisor.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

/// What to start.
pub struct SpawnRequest<'a> {
    pub argv: &'a [OsString],
    /// The child's whole environment, by name.
    pub env: &'a BTreeMap<OsString, OsString>,
    pub dir: &'a Path,
    /// Becomes the child's stdout and stderr.
    pub output: &'a OwnedFd,
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{:?} holds a NUL byte",
                String::from_utf8_lossy(bytes).into_owned()
            ),
        )
    })
}

/// `NAME=value` entries of an environment.
fn environment(env: &BTreeMap<OsString, OsString>) -> io::Result<Vec<CString>> {
    env.iter()
        .map(|(name, value)| {
            let mut entry = name.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            c_string(&entry)
        })
        .collect()
}

/// A NULL-terminated array of pointers into `strings` (which must outlive it).
fn pointers(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(ptr::null_mut()))
        .collect()
}

fn check(code: libc::c_int) -> io::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(code))
    }
}

/// posix_spawn's two attribute objects, destroyed however the spawn ends.
struct Attributes {
    attr: libc::posix_spawnattr_t,
    actions: libc::posix_spawn_file_actions_t,
}

impl Attributes {
    fn new() -> io::Result<Box<Self>> {
        // SAFETY: both objects are plain C structs that the init calls fill;
        // a zeroed one is a valid place for them to do so. Boxed, so their
        // address does not change after init (glibc keeps pointers inside).
        let mut this = Box::new(unsafe { std::mem::zeroed::<Self>() });
        // SAFETY: init on memory we own.
        check(unsafe { libc::posix_spawnattr_init(&mut this.attr) })?;
        // SAFETY: as above.
        if let Err(error) = check(unsafe { libc::posix_spawn_file_actions_init(&mut this.actions) })
        {
            // SAFETY: attr was initialised just above.
            unsafe { libc::posix_spawnattr_destroy(&mut this.attr) };
            return Err(error);
        }
        Ok(this)
    }
}

impl Drop for Attributes {
    fn drop(&mut self) {
        // SAFETY: both were initialised by `new` and are destroyed once.
        unsafe {
            libc::posix_spawn_file_actions_destroy(&mut self.actions);
            libc::posix_spawnattr_destroy(&mut self.attr);
        }
    }
}

/// The flag that makes the child lead a new session: Linux has
/// POSIX_SPAWN_SETSID; elsewhere a new process group is what posix_spawn
/// offers (signals reach the tree through the group all the same).
#[cfg(target_os = "linux")]
fn new_session_flags(_attr: &mut libc::posix_spawnattr_t) -> io::Result<libc::c_short> {
    Ok(libc::POSIX_SPAWN_SETSID as libc::c_short)
}

#[cfg(not(target_os = "linux"))]
fn new_session_flags(attr: &mut libc::posix_spawnattr_t) -> io::Result<libc::c_short> {
    // SAFETY: attr is initialised; 0 = a group whose id is the child's pid.
    check(unsafe { libc::posix_spawnattr_setpgroup(attr, 0) })?;
    Ok(libc::POSIX_SPAWN_SETPGROUP as libc::c_short)
}

/// Starts the child; returns its pid. An exec that fails (no such program,
/// not executable) is an error here, and the failed child is already reaped.
pub fn spawn(request: &SpawnRequest<'_>) -> io::Result<i32> {
    let program = request
        .argv
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty agent program"))?;
    let program = c_string(program.as_bytes())?;
    let args = request
        .argv
        .iter()
        .map(|a| c_string(a.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let env = environment(request.env)?;
    let dir = c_string(request.dir.as_os_str().as_bytes())?;
    let dev_null = c_string(b"/dev/null")?;
    let argv = pointers(&args);
    let envp = pointers(&env);
    let output = request.output.as_raw_fd();

    let mut attributes = Attributes::new()?;
    let Attributes { attr, actions } = &mut *attributes;
    let session = new_session_flags(attr)?;
    // SAFETY: every call below gets the initialised objects and C strings
    // that live until posix_spawnp returns; the sigset_t values are ours.
    unsafe {
        // Rust ignores SIGPIPE, and an ignored signal stays ignored across
        // exec: give the agent every signal at its default, none blocked.
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        check(libc::posix_spawnattr_setsigdefault(attr, &all))?;
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        check(libc::posix_spawnattr_setsigmask(attr, &none))?;
        let flags = session
            | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short
            | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short;
        check(libc::posix_spawnattr_setflags(attr, flags))?;

        check(libc::posix_spawn_file_actions_addopen(
            actions,
            0,
            dev_null.as_ptr(),
            libc::O_RDONLY,
            0,
        ))?;
        check(libc::posix_spawn_file_actions_adddup2(actions, output, 1))?;
        check(libc::posix_spawn_file_actions_adddup2(actions, output, 2))?;
        check(libc::posix_spawn_file_actions_addchdir_np(
            actions,
            dir.as_ptr(),
        ))?;

        let mut pid: libc::pid_t = 0;
        check(libc::posix_spawnp(
            &mut pid,
            program.as_ptr(),
            actions,
            attr,
            argv.as_ptr(),
            envp.as_ptr(),
        ))?;
        Ok(pid)
    }
}
