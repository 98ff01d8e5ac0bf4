//! The broker's one thread: every connection, Unix or TCP, served by one
//! epoll loop (mio), so the supervisor's threads do not grow with the agents
//! and their workers. Each connection is a line protocol with one reply per
//! request, in order: a permit that must wait parks its connection (its later
//! lines wait too) until `Broker::grant_due` grants it; the loop sleeps until
//! a request comes, a permit falls due, or a TCP hello is overdue.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Registry, Token};

use shared::broker::{BadRequest, Reply, Request};

use crate::rate::broker::{Answer, Broker, Ticket};

/// How long a TCP connection may take to say hello: a port scanner or a
/// stray client must not hold a connection for the rest of the run.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest line read from a TCP connection before its hello.
const MAX_HELLO_LINE: usize = 4096;

pub const WAKER: Token = Token(0);
pub const UNIX: Token = Token(1);
pub const TCP: Token = Token(2);
const FIRST_CONNECTION: usize = 3;

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.read(buffer),
            Self::Tcp(s) => s.read(buffer),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.write(bytes),
            Self::Tcp(s) => s.write(bytes),
        }
    }

    fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match self {
            Self::Unix(s) => registry.register(s, token, interest),
            Self::Tcp(s) => registry.register(s, token, interest),
        }
    }

    fn deregister(&mut self, registry: &Registry) {
        let _ = match self {
            Self::Unix(s) => registry.deregister(s),
            Self::Tcp(s) => registry.deregister(s),
        };
    }
}

struct Connection {
    stream: Stream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// A TCP connection must say hello with the secret before anything else.
    greeted: bool,
    /// The permit whose reply this connection waits for.
    waiting: Option<Ticket>,
    /// The peer hung up, or is to be hung up on once its replies are out.
    ended: bool,
    closing: bool,
}

impl Connection {
    fn new(stream: Stream, secret_needed: bool) -> Self {
        Self {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            greeted: !secret_needed,
            waiting: None,
            ended: false,
            closing: false,
        }
    }

    /// Reads what the socket holds now.
    fn fill(&mut self, buffer: &mut [u8]) {
        loop {
            match self.stream.read(buffer) {
                Ok(0) => {
                    self.ended = true;
                    return;
                }
                Ok(n) => self.input.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.ended = true;
                    return;
                }
            }
        }
    }

    /// Writes what the socket takes now.
    fn flush(&mut self) {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => {
                    self.ended = true;
                    return;
                }
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.ended = true;
                    return;
                }
            }
        }
    }

    fn reply(&mut self, reply: &Reply) {
        self.output.extend_from_slice(reply.to_line().as_bytes());
    }

    /// Answers the complete lines read, in order, until one is a permit that
    /// must wait (its ticket is then in `waiting`).
    fn answer_lines(&mut self, broker: &mut Broker, secret: Option<&str>, now: Instant) {
        while self.waiting.is_none() && !self.closing {
            let Some(end) = self.input.iter().position(|b| *b == b'\n') else {
                // Before the hello, a line is short: a stranger must not fill memory.
                if !self.greeted && self.input.len() > MAX_HELLO_LINE {
                    self.closing = true;
                }
                return;
            };
            let line: Vec<u8> = self.input.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            if line.trim().is_empty() {
                continue;
            }
            let request = Request::from_line(&line);
            let (reply, go_on) = match request {
                Ok(Request::Hello { secret: given }) => {
                    if secret.is_none_or(|secret| same_secret(&given, secret)) {
                        self.greeted = true;
                        (Reply::ok(), true)
                    } else {
                        (Reply::refused("wrong secret"), false)
                    }
                }
                Ok(_) | Err(BadRequest::UnknownOp | BadRequest::Invalid { .. })
                    if !self.greeted =>
                {
                    (
                        Reply::refused("say {\"op\":\"hello\",\"secret\":NIGHTSHIFT_SECRET} first"),
                        false,
                    )
                }
                Ok(request) => match broker.answer(&request, now) {
                    // A quiet report is settled without a word back.
                    Answer::Now(_) if !request.wants_reply() => continue,
                    Answer::Now(reply) => (reply, true),
                    Answer::Later(ticket) => {
                        self.waiting = Some(ticket);
                        return;
                    }
                },
                Err(error @ BadRequest::NotJson(_)) => {
                    (Reply::refused(error.to_string()), self.greeted)
                }
                Err(error) => (Reply::refused(error.to_string()), true),
            };
            self.reply(&reply);
            if !go_on {
                self.closing = true;
            }
        }
    }
}

/// Equal strings, compared in a time that does not depend on where they
/// differ: the secret must not leak one byte at a time to a timing client.
fn same_secret(given: &str, secret: &str) -> bool {
    given.len() == secret.len()
        && given
            .bytes()
            .zip(secret.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// Everything the loop serves.
pub struct Listeners {
    pub poll: Poll,
    pub unix: UnixListener,
    pub tcp: Option<(TcpListener, String)>,
}

/// The connections, and which permit each waits for.
#[derive(Default)]
struct Connections {
    by_token: HashMap<Token, Connection>,
    by_ticket: HashMap<Ticket, Token>,
    /// TCP connections yet to say hello, and by when they must.
    hellos: HashMap<Token, Instant>,
}

/// Serves every connection until `stop` is set (and the waker woken).
pub fn serve(listeners: Listeners, broker: &Arc<Mutex<Broker>>, stop: &AtomicBool) {
    let Listeners {
        mut poll,
        unix,
        mut tcp,
    } = listeners;
    let mut connections = Connections::default();
    let mut next = FIRST_CONNECTION;
    let mut events = Events::with_capacity(1024);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut timeout: Option<Duration> = None;
    let mut touched: Vec<Token> = Vec::new();
    loop {
        // Before waiting: the log lines of what was just answered.
        lock(broker).flush_log();
        if let Err(error) = poll.poll(&mut events, timeout) {
            if error.kind() != io::ErrorKind::Interrupted {
                tracing::warn!("rate broker: {error}; agents go on without permits");
                return;
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        touched.clear();
        for event in &events {
            let accepted = match event.token() {
                WAKER => continue,
                UNIX => accept_all(|| unix.accept().map(|(s, _)| Stream::Unix(s))),
                TCP => match tcp.as_mut() {
                    Some((listener, _)) => accept_all(|| {
                        let (stream, _) = listener.accept()?;
                        // Nagle would hold each one-line reply back for the
                        // peer's delayed ACK (40 ms).
                        let _ = stream.set_nodelay(true);
                        Ok(Stream::Tcp(stream))
                    }),
                    None => continue,
                },
                token => {
                    if let Some(connection) = connections.by_token.get_mut(&token) {
                        if event.is_readable() || event.is_read_closed() {
                            connection.fill(&mut buffer);
                        }
                        if event.is_writable() {
                            connection.flush();
                        }
                        touched.push(token);
                    }
                    continue;
                }
            };
            for mut stream in accepted {
                let token = Token(next);
                next += 1;
                if stream.register(poll.registry(), token).is_ok() {
                    let secret_needed = matches!(stream, Stream::Tcp(_));
                    if secret_needed {
                        connections.hellos.insert(token, now + HELLO_TIMEOUT);
                    }
                    let connection = Connection::new(stream, secret_needed);
                    connections.by_token.insert(token, connection);
                }
            }
        }
        let secret = tcp.as_ref().map(|(_, secret)| secret.as_str());
        let mut broker = lock(broker);
        // A TCP connection that never said hello, past its time.
        let overdue: Vec<Token> = connections
            .hellos
            .iter()
            .filter(|(_, by)| **by <= now)
            .map(|(token, _)| *token)
            .collect();
        for token in overdue {
            if let Some(connection) = connections.by_token.get_mut(&token) {
                connection.ended = true;
                touched.push(token);
            }
        }
        connections.answer(&touched, &mut broker, secret, now);
        connections.hang_up(&touched, &mut broker, poll.registry());
        let hello_due = connections.hellos.values().min().copied();
        let wake = [broker.next_due(), hello_due].into_iter().flatten().min();
        drop(broker);
        timeout = wake.map(|at| at.saturating_duration_since(Instant::now()));
    }
}

/// Every connection a listener has ready.
fn accept_all(mut accept: impl FnMut() -> io::Result<Stream>) -> Vec<Stream> {
    let mut accepted = Vec::new();
    loop {
        match accept() {
            Ok(stream) => accepted.push(stream),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return accepted,
        }
    }
}

impl Connections {
    /// Answers the lines of the connections in `touched` and hands out every
    /// permit that may go, until nothing more moves (a granted permit lets
    /// its connection's next lines be answered, which may ask for more).
    fn answer(
        &mut self,
        touched: &[Token],
        broker: &mut Broker,
        secret: Option<&str>,
        now: Instant,
    ) {
        let mut flush: Vec<Token> = Vec::new();
        for token in touched {
            self.answer_lines(*token, broker, secret, now);
            flush.push(*token);
        }
        loop {
            let granted = broker.grant_due(now);
            if granted.is_empty() {
                break;
            }
            for (ticket, reply) in granted {
                let Some(token) = self.by_ticket.remove(&ticket) else {
                    continue;
                };
                if let Some(connection) = self.by_token.get_mut(&token) {
                    connection.reply(&reply);
                    connection.waiting = None;
                }
                self.answer_lines(token, broker, secret, now);
                flush.push(token);
            }
        }
        for token in flush {
            if let Some(connection) = self.by_token.get_mut(&token) {
                connection.flush();
            }
        }
    }

    fn answer_lines(
        &mut self,
        token: Token,
        broker: &mut Broker,
        secret: Option<&str>,
        now: Instant,
    ) {
        let Some(connection) = self.by_token.get_mut(&token) else {
            return;
        };
        let secret = match connection.stream {
            Stream::Unix(_) => None,
            Stream::Tcp(_) => secret,
        };
        connection.answer_lines(broker, secret, now);
        if connection.greeted {
            self.hellos.remove(&token);
        }
        if let Some(ticket) = connection.waiting {
            self.by_ticket.insert(ticket, token);
        }
    }

    /// Hangs up on the touched connections that ended, once their replies
    /// are out (or cannot go); a permit one waited for is given up.
    fn hang_up(&mut self, touched: &[Token], broker: &mut Broker, registry: &Registry) {
        for token in touched {
            let Some(connection) = self.by_token.get(token) else {
                continue;
            };
            if !(connection.ended || (connection.closing && connection.output.is_empty())) {
                continue;
            }
            self.hellos.remove(token);
            if let Some(mut connection) = self.by_token.remove(token) {
                if let Some(ticket) = connection.waiting.take() {
                    self.by_ticket.remove(&ticket);
                    broker.cancel(ticket);
                }
                connection.stream.deregister(registry);
            }
        }
    }
}

pub fn lock(broker: &Mutex<Broker>) -> MutexGuard<'_, Broker> {
    broker
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
