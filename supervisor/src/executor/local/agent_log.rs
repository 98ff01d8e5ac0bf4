//! agent_NN.log: an agent's stdout and stderr, through a pipe. One thread
//! (`LogPump`) reads every agent's pipe as it becomes readable (epoll through
//! mio), so the supervisor's threads do not grow with the agents alive, and a
//! child that floods its output, or closes it early, never stalls the event
//! loop. The log is bounded (`BoundedLog`): past the limit it is rotated to
//! agent_NN.log.1 and started afresh.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::bounded_log::BoundedLog;

/// The write end goes to the child as stdout and stderr; the read end to the
/// log pump.
pub fn open_pipe() -> io::Result<(File, OwnedFd)> {
    // Close-on-exec, so agents started later do not hold this pipe open.
    let (read, write) = io::pipe()?;
    Ok((File::from(OwnedFd::from(read)), OwnedFd::from(write)))
}

/// One agent's pipe and where it goes.
struct PipeLog {
    pipe: File,
    log: BoundedLog,
}

const WAKER: Token = Token(0);

/// The thread that copies every agent's output into its log.
pub struct LogPump {
    new_pipes: Sender<PipeLog>,
    waker: Waker,
}

impl LogPump {
    pub fn start() -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (new_pipes, incoming) = channel();
        std::thread::Builder::new()
            .name("agent-logs".into())
            .spawn(move || pump(poll, &incoming))?;
        Ok(Self { new_pipes, waker })
    }

    /// Copies everything from `pipe` into the log at `path` (appending: a
    /// relaunched agent keeps the earlier attempts' output) until every
    /// writer has closed it — the agent and anything it started with the
    /// same stdout.
    pub fn add(&self, pipe: File, path: PathBuf, limit: u64) -> io::Result<()> {
        nix::fcntl::fcntl(
            &pipe,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(io::Error::from)?;
        // Opened here, so the log exists from the launch on, as readers expect.
        let log = BoundedLog::create(path, limit)?;
        self.new_pipes
            .send(PipeLog { pipe, log })
            .map_err(|_| io::Error::other("the agent log thread has stopped"))?;
        self.waker.wake()
    }
}

fn pump(mut poll: Poll, incoming: &Receiver<PipeLog>) {
    let mut pipes: HashMap<Token, PipeLog> = HashMap::new();
    let mut next = 1usize;
    let mut events = Events::with_capacity(256);
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if let Err(error) = poll.poll(&mut events, None) {
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::warn!("agent logs: {error}");
            return;
        }
        for event in &events {
            let token = event.token();
            if token == WAKER {
                continue;
            }
            let done = match pipes.get_mut(&token) {
                Some(pipe) => drain(pipe, &mut buffer),
                None => continue,
            };
            if done {
                if let Some(pipe) = pipes.remove(&token) {
                    let _ = poll
                        .registry()
                        .deregister(&mut SourceFd(&pipe.pipe.as_raw_fd()));
                }
            }
        }
        // New pipes: registered after the events, so a token is never reused
        // within one batch of events.
        loop {
            match incoming.try_recv() {
                Ok(pipe) => {
                    let token = Token(next);
                    next += 1;
                    let registered = poll.registry().register(
                        &mut SourceFd(&pipe.pipe.as_raw_fd()),
                        token,
                        Interest::READABLE,
                    );
                    match registered {
                        Ok(()) => {
                            pipes.insert(token, pipe);
                        }
                        Err(error) => {
                            tracing::warn!("agent log {}: {error}", pipe.log.path().display());
                        }
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                // The executor is gone: finish the pipes still open.
                Err(std::sync::mpsc::TryRecvError::Disconnected) if pipes.is_empty() => return,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
            }
        }
    }
}

/// Reads what `pipe` holds now into its log; true when it is finished with
/// (every writer closed it, or its log cannot be written).
fn drain(pipe: &mut PipeLog, buffer: &mut [u8]) -> bool {
    loop {
        let n = match pipe.pipe.read(buffer) {
            Ok(0) => return true,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                tracing::warn!("agent log {}: {e}", pipe.log.path().display());
                return true;
            }
        };
        if let Err(error) = pipe.log.append(&buffer[..n]) {
            // Closing the pipe tells the agent (EPIPE) rather than leaving it
            // blocked on a pipe nobody reads.
            tracing::warn!("agent log {}: {error}", pipe.log.path().display());
            return true;
        }
    }
}
