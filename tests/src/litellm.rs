//! Servers the LLM tests talk to: a real LiteLLM proxy serving a
//! `mock_response` model ([`LiteLlm`]), and this crate's fault server
//! ([`FaultServer`]). Each test starts its own and each is stopped by its PID
//! (LiteLLM: its process group) when dropped, however the test ends.
//!
//! LiteLLM comes from `.ci/run litellm` (a virtualenv cached under
//! `~/.cache/nightshift-ci/litellm-<version>`), or from `NIGHTSHIFT_LITELLM`.
//! Without it the LLM tests skip, saying how to get it; with
//! `NIGHTSHIFT_LLM_TESTS` set (as `.ci/run` does) they fail instead.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::wait_until;

/// LiteLLM is Python: importing it takes seconds, more on a busy machine.
const START_DEADLINE: Duration = Duration::from_secs(120);

/// Where the LiteLLM binary is, if anywhere.
pub fn litellm_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NIGHTSHIFT_LITELLM") {
        return Some(PathBuf::from(path));
    }
    // The cache .ci/run fills; any complete version will do.
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache.join("nightshift-ci"))
        .ok()?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|dir| dir.join(".complete").is_file())
        .map(|dir| dir.join("bin").join("litellm"))
        .filter(|bin| bin.is_file())
        .collect();
    found.sort();
    found.pop()
}

/// The LiteLLM binary, or None (the test skips) — unless NIGHTSHIFT_LLM_TESTS
/// says it must be there.
pub fn litellm_ready() -> Option<PathBuf> {
    let binary = litellm_binary().filter(|b| b.is_file());
    if binary.is_none() {
        assert!(
            std::env::var_os("NIGHTSHIFT_LLM_TESTS").is_none(),
            "NIGHTSHIFT_LLM_TESTS is set but no LiteLLM is installed (NIGHTSHIFT_LITELLM or `.ci/run litellm`)"
        );
        eprintln!("skipped: no LiteLLM here. To run the LLM tests: `.ci/run litellm`, then export the line it prints");
    }
    binary
}

/// What the mock model is.
#[derive(Debug, Clone)]
pub struct Mock {
    pub model: String,
    pub response: String,
    /// Requests a minute the proxy allows this model.
    pub rpm: u32,
    pub master_key: String,
}

/// A running LiteLLM proxy, killed with its process group on drop.
pub struct LiteLlm {
    child: Child,
    pub port: u16,
    pub mock: Mock,
    dir: tempfile::TempDir,
}

impl LiteLlm {
    /// Starts LiteLLM on a free loopback port and waits until it answers.
    ///
    /// With the default routing LiteLLM only counts a deployment's `rpm` in
    /// its headers; `usage-based-routing-v2` enforces it, and `num_retries: 0`
    /// makes it answer 429 past the limit instead of holding the request
    /// until the next minute (as verified against 1.106.12).
    pub fn start(binary: &Path, mock: Mock) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nightshift-litellm-")
            .tempdir()
            .expect("temporary folder");
        let config = format!(
            "model_list:\n  - model_name: {model}\n    litellm_params:\n      model: openai/{model}\n      mock_response: {response}\n      rpm: {rpm}\nrouter_settings:\n  routing_strategy: usage-based-routing-v2\n  enable_pre_call_checks: true\n  num_retries: 0\ngeneral_settings:\n  master_key: {key}\n",
            model = mock.model,
            response = Value::String(mock.response.clone()),
            rpm = mock.rpm,
            key = mock.master_key,
        );
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config).expect("write the LiteLLM config");
        // A port can be taken between asking and binding: try a few.
        for _ in 0..3 {
            let port = free_port();
            let log_path = dir.path().join("litellm.log");
            let log = std::fs::File::create(&log_path).expect("LiteLLM log");
            let mut child = Command::new(binary)
                .arg("--config")
                .arg(&config_path)
                .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
                // Offline and quiet: no price-list download, no telemetry.
                .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                .env("LITELLM_TELEMETRY", "False")
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("LiteLLM log"))
                .stderr(log)
                .process_group(0)
                .spawn()
                .expect("start LiteLLM");
            let exited = |child: &mut Child| matches!(child.try_wait(), Ok(Some(_)));
            let up = wait_until(START_DEADLINE, || {
                exited(&mut child) || http_status(port, "/health/liveliness") == Some(200)
            });
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if up && !exited(&mut child) {
                return Self {
                    child,
                    port,
                    mock,
                    dir,
                };
            }
            kill_group(&mut child);
            assert!(
                up,
                "LiteLLM did not answer within {START_DEADLINE:?}:\n{log}"
            );
            eprintln!("LiteLLM exited at start (port {port} taken?):\n{log}");
        }
        panic!("LiteLLM would not start");
    }

    /// `http://127.0.0.1:PORT/v1`, the job's base_url.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// What LiteLLM printed, its access log included.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("litellm.log")).unwrap_or_default()
    }

    /// How many chat completions LiteLLM answered with this status (from
    /// uvicorn's access log lines).
    pub fn answered(&self, status: u16) -> usize {
        let needle = format!("\"POST /v1/chat/completions HTTP/1.1\" {status}");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }
}

impl Drop for LiteLlm {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Kills a child that leads its own process group, with the whole group
/// (LiteLLM may start workers), and reaps it.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.wait();
}

/// The fault server (src/bin/fault_server.rs), killed by PID on drop.
pub struct FaultServer {
    child: Child,
    pub port: u16,
    pub log_path: PathBuf,
}

impl FaultServer {
    /// Starts `fault_server` with these arguments, logging to `log_path`.
    pub fn start(binary: &Path, log_path: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(binary)
            .arg("--log")
            .arg(log_path)
            .args(["--lifetime", "300s"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fault_server");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        let read = BufReader::new(stdout).read_line(&mut line);
        let port = match (read, line.trim().parse()) {
            (Ok(_), Ok(port)) => port,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("fault_server printed no port (got {line:?})");
            }
        };
        Self {
            child,
            port,
            log_path: log_path.to_owned(),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Every request the server logged.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The items of `saved` that requests after the first `before` named:
    /// what a resume asked for again.
    pub fn asked_again(&self, before: usize, saved: &HashSet<String>) -> Vec<String> {
        self.requests()
            .iter()
            .skip(before)
            .filter_map(|r| r["item"].as_str())
            .filter(|id| saved.contains(*id))
            .map(str::to_owned)
            .collect()
    }

    /// Requests that named `item`.
    pub fn requests_for(&self, item: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["item"] == item)
            .collect()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The status of `GET path`, or None when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A test key: unique, so finding it anywhere means it leaked from this test.
pub fn test_key() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("sk-nightshift-test-{}-{nanos:09}", std::process::id())
}

/// `nightshift ARGS` in `dir` with extra environment variables (the API
/// keys), started in its own process group like [`crate::JobDir::spawn_nightshift`].
pub fn spawn_nightshift_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(crate::binary("nightshift"));
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn().expect("start nightshift")
}

/// Every file under `dir`, at any depth.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// The records of RUN/final.json.
pub fn final_records(run_dir: &Path) -> Vec<Value> {
    let path = run_dir.join("final.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    match serde_json::from_str(&text) {
        Ok(Value::Array(records)) => records,
        _ => panic!("{} is not a JSON array", path.display()),
    }
}
