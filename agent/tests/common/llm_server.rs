//! A tiny HTTP/1.1 server for the LLM backend tests: canned answers, every
//! request it got kept for the test to check, each connection on its own
//! thread.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;

/// One request as the server got it.
#[derive(Debug, Clone)]
pub struct Got {
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An answer: status, extra headers, body. Status 0 hangs up without an
/// answer; status 1 says nothing for two seconds, then hangs up.
pub type Canned = (u16, Vec<(&'static str, String)>, String);

/// The server: answers the n-th request (from 0) with `answer(n, request)`.
pub struct Server {
    pub url: String,
    got: Arc<Mutex<Vec<Got>>>,
    /// The most requests it was answering at once.
    most_at_once: Arc<AtomicUsize>,
}

impl Server {
    /// Answers each connection on its own thread, so requests in flight
    /// together are answered together.
    pub fn start(answer: impl Fn(usize, &Got) -> Canned + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let url = format!("http://{}/v1", listener.local_addr().expect("its address"));
        let got = Arc::new(Mutex::new(Vec::new()));
        let most_at_once = Arc::new(AtomicUsize::new(0));
        let (log, most) = (Arc::clone(&got), Arc::clone(&most_at_once));
        let answer = Arc::new(answer);
        let at_once = Arc::new(AtomicUsize::new(0));
        // Detached: it ends with the test process.
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, most, answer, at_once) = (
                    Arc::clone(&log),
                    Arc::clone(&most),
                    Arc::clone(&answer),
                    Arc::clone(&at_once),
                );
                thread::spawn(move || {
                    let Some(request) = read_request(&stream) else {
                        return;
                    };
                    let n = {
                        let mut log = log.lock().expect("log");
                        log.push(request.clone());
                        log.len() - 1
                    };
                    let now = at_once.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let (status, headers, body) = answer(n, &request);
                    match status {
                        0 => drop(stream),
                        1 => thread::sleep(Duration::from_secs(2)),
                        _ => respond(stream, status, &headers, &body),
                    }
                    at_once.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            url,
            got,
            most_at_once,
        }
    }

    pub fn most_at_once(&self) -> usize {
        self.most_at_once.load(Ordering::SeqCst)
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().expect("log").clone()
    }
}

fn read_request(stream: &TcpStream) -> Option<Got> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Got {
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

fn respond(mut stream: TcpStream, status: u16, headers: &[(&str, String)], body: &str) {
    let mut text = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    // The agent may have given up on this answer already.
    let _ = stream.write_all(text.as_bytes());
}
