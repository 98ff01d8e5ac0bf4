//! Which program runs as an agent: the job's `agent.program`, or the bundled
//! `nightshift-agent`, found next to the `nightshift` binary or on PATH.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Result, SupervisorError};

/// Environment variable that names the nightshift-agent binary explicitly.
pub const AGENT_BIN_ENV: &str = "NIGHTSHIFT_AGENT_BIN";
const AGENT_BIN: &str = "nightshift-agent";

/// The argv of the agent program; checked to exist before anything starts.
pub fn resolve(program: Option<&[String]>, job_dir: &Path) -> Result<Vec<OsString>> {
    match program {
        Some([first, rest @ ..]) => {
            let path = find_program(first, job_dir).ok_or_else(|| {
                let there = job_dir.join(first);
                if first.contains('/') && there.is_file() {
                    return SupervisorError::AgentProgram(format!(
                        "agent.program {first:?} ({}) is not executable: make it so with `chmod +x {}`",
                        there.display(),
                        there.display()
                    ));
                }
                SupervisorError::AgentProgram(format!(
                    "agent.program {first:?} was not found (relative paths start from the job file's folder {}, bare names are looked up on PATH)",
                    job_dir.display()
                ))
            })?;
            let mut argv = vec![path.into_os_string()];
            argv.extend(rest.iter().map(OsString::from));
            Ok(argv)
        }
        _ => Ok(vec![bundled_agent()?.into_os_string()]),
    }
}

fn bundled_agent() -> Result<PathBuf> {
    if let Some(explicit) = std::env::var_os(AGENT_BIN_ENV) {
        let path = PathBuf::from(explicit);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(SupervisorError::AgentProgram(format!(
                "{AGENT_BIN_ENV}={} is not an executable file",
                path.display()
            )))
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(AGENT_BIN)));
    if let Some(path) = beside.as_ref().filter(|p| is_executable(p)) {
        return Ok(path.clone());
    }
    search_path(AGENT_BIN).ok_or_else(|| {
        SupervisorError::AgentProgram(format!(
            "cannot find {AGENT_BIN}: it is not next to this nightshift ({}) nor on PATH. \
             Build both binaries with `cargo build --release` at the workspace root \
             (`cargo run --bin nightshift` builds only the supervisor), or set {AGENT_BIN_ENV}",
            beside.map_or_else(|| "?".into(), |p| p.display().to_string())
        ))
    })
}

/// A program name as a command line would find it: a path (relative to the
/// job folder) when it has a slash, else a PATH lookup.
pub fn find_program(name: &str, job_dir: &Path) -> Option<PathBuf> {
    if name.contains('/') {
        let path = job_dir.join(name);
        is_executable(&path).then_some(path)
    } else {
        search_path(name)
    }
}

fn search_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
