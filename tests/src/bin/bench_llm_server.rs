//! A fast OpenAI-compatible server for scripts/bench_llm.py: it answers every
//! `POST …/chat/completions` at once with the same valid chat completion.
//!
//! ```text
//! bench_llm_server [--lifetime 900s] [--model bench-model]
//! ```
//! It binds 127.0.0.1 on a free port and prints the port as its first line.
//! HTTP/1.1 with keep-alive, a thread per connection (so 64 connections at
//! once are served side by side); the request body is read but not parsed,
//! so the server costs as little as it can next to the client measured. Any
//! other method or path gets a 404 with an OpenAI-shaped error. It counts
//! the completions it served and prints the count on stderr when it exits,
//! after `--lifetime` (or when killed), so a benchmark that dies cannot
//! leave it behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nightshift_tests::agent_kit::{fail, or_fail, Args};
use serde_json::json;

/// The longest request head (request line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The largest request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

fn main() {
    let args = Args::parse(&[], &["--lifetime", "--model"]);
    let lifetime = args
        .text("--lifetime")
        .map_or(Duration::from_secs(900), duration);
    let model = args.text("--model").unwrap_or("bench-model").to_owned();

    let listener = or_fail(TcpListener::bind("127.0.0.1:0"), "bind 127.0.0.1:0");
    // std listens with a queue of 128: 10 agents x 64 connecting at once
    // overflow it, and each dropped SYN costs a second (its retransmission),
    // which the benchmark would charge to the client. Listening again sets
    // the queue's length.
    let backlog = or_fail(nix::sys::socket::Backlog::new(4096), "a listen backlog");
    or_fail(
        nix::sys::socket::listen(&listener, backlog),
        "widen the listen queue",
    );
    let port = or_fail(listener.local_addr(), "read the bound address").port();
    println!("{port}");
    or_fail(std::io::stdout().flush(), "print the port");

    let served = Arc::new(AtomicU64::new(0));
    let answers = Arc::new(Answers::new(&model));
    {
        let served = Arc::clone(&served);
        std::thread::spawn(move || {
            std::thread::sleep(lifetime);
            eprintln!(
                "bench_llm_server: lifetime of {lifetime:?} over after {} completions, exiting",
                served.load(Ordering::Relaxed)
            );
            std::process::exit(0);
        });
    }
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let answers = Arc::clone(&answers);
                let served = Arc::clone(&served);
                let spawned = std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || serve(stream, &answers, &served));
                if let Err(e) = spawned {
                    eprintln!("bench_llm_server: start a connection thread: {e}");
                }
            }
            Err(e) => eprintln!("bench_llm_server: accept: {e}"),
        }
    }
}

/// `300s`, `1500ms`, `5m` or a plain number of seconds.
fn duration(text: &str) -> Duration {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .unwrap_or_else(|_| fail(format!("--lifetime: cannot read `{text}`")));
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => fail(format!(
            "--lifetime: unknown unit in `{text}` (ms, s, m, h)"
        )),
    };
    Duration::from_secs_f64(seconds)
}

/// The answers, made once: every completion is the same bytes.
struct Answers {
    completion_keep_alive: Vec<u8>,
    completion_close: Vec<u8>,
    not_found_keep_alive: Vec<u8>,
    not_found_close: Vec<u8>,
}

impl Answers {
    fn new(model: &str) -> Self {
        let completion = json!({
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "A short answer from the benchmark server."},
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 24, "completion_tokens": 9, "total_tokens": 33}
        })
        .to_string();
        let not_found = json!({"error": {
            "message": "only POST …/chat/completions is served here",
            "type": "invalid_request_error"
        }})
        .to_string();
        Self {
            completion_keep_alive: answer("200 OK", &completion, true),
            completion_close: answer("200 OK", &completion, false),
            not_found_keep_alive: answer("404 Not Found", &not_found, true),
            not_found_close: answer("404 Not Found", &not_found, false),
        }
    }
}

/// A whole HTTP/1.1 answer with a JSON body.
fn answer(status: &str, body: &str, keep_alive: bool) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: {connection}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What the head of a request says.
struct Head {
    completion: bool,
    keep_alive: bool,
    body: Body,
    expect_continue: bool,
}

enum Body {
    Length(usize),
    Chunked,
}

/// Answers the requests of one connection until the client closes it (or
/// asks to), or sends something that is not HTTP.
fn serve(stream: TcpStream, answers: &Answers, served: &AtomicU64) {
    // Answers are written whole: Nagle's algorithm would only delay them.
    if let Err(e) = stream.set_nodelay(true) {
        eprintln!("bench_llm_server: set TCP_NODELAY: {e}");
    }
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(e) => return eprintln!("bench_llm_server: clone a connection: {e}"),
    };
    let mut reader = BufReader::with_capacity(16 * 1024, stream);
    let mut body = Vec::new();
    loop {
        let head = match read_head(&mut reader) {
            Ok(Some(head)) => head,
            Ok(None) => return, // closed between requests
            Err(why) => return eprintln!("bench_llm_server: {why}"),
        };
        if head.expect_continue {
            if let Err(e) = writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n") {
                return eprintln!("bench_llm_server: write 100 Continue: {e}");
            }
        }
        body.clear();
        let read = match head.body {
            Body::Length(length) => read_exact(&mut reader, length, &mut body),
            Body::Chunked => read_chunked(&mut reader, &mut body),
        };
        if let Err(why) = read {
            return eprintln!("bench_llm_server: {why}");
        }
        let bytes = match (head.completion, head.keep_alive) {
            (true, true) => &answers.completion_keep_alive,
            (true, false) => &answers.completion_close,
            (false, true) => &answers.not_found_keep_alive,
            (false, false) => &answers.not_found_close,
        };
        if let Err(e) = writer.write_all(bytes) {
            return eprintln!("bench_llm_server: write an answer: {e}");
        }
        if head.completion {
            served.fetch_add(1, Ordering::Relaxed);
        }
        if !head.keep_alive {
            return;
        }
    }
}

/// The request line and headers; None when the connection closed before a
/// new request began.
fn read_head(reader: &mut BufReader<TcpStream>) -> Result<Option<Head>, String> {
    let mut line = String::new();
    let mut total = 0;
    let mut next_line = |line: &mut String| -> Result<usize, String> {
        line.clear();
        let n = reader
            .read_line(line)
            .map_err(|e| format!("read a request: {e}"))?;
        total += n;
        if total > MAX_HEAD {
            return Err(format!("a request head longer than {MAX_HEAD} bytes"));
        }
        Ok(n)
    };
    // Blank lines before a request line are allowed (RFC 9112 §2.2).
    loop {
        if next_line(&mut line)? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut words = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return Err(format!("not an HTTP request line: {:?}", line.trim_end()));
    };
    let path = target.split('?').next().unwrap_or(target);
    let completion = method == "POST" && path.ends_with("/chat/completions");
    let mut keep_alive = version == "HTTP/1.1";
    let mut head = Head {
        completion,
        keep_alive,
        body: Body::Length(0),
        expect_continue: false,
    };
    loop {
        if next_line(&mut line)? == 0 {
            return Err("the connection closed inside a request head".to_owned());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(format!("not a header: {header:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length = value
                .parse()
                .map_err(|_| format!("a bad content-length: {value:?}"))?;
            if length > MAX_BODY {
                return Err(format!("a body of {length} bytes (at most {MAX_BODY})"));
            }
            head.body = Body::Length(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if value.to_ascii_lowercase().ends_with("chunked") {
                head.body = Body::Chunked;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                keep_alive = false;
            } else if value.contains("keep-alive") {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    head.keep_alive = keep_alive;
    Ok(Some(head))
}

/// Reads `length` bytes of body into `body`.
fn read_exact(
    reader: &mut BufReader<TcpStream>,
    length: usize,
    body: &mut Vec<u8>,
) -> Result<(), String> {
    let start = body.len();
    body.resize(start + length, 0);
    reader
        .read_exact(&mut body[start..])
        .map_err(|e| format!("read a request body of {length} bytes: {e}"))
}

/// Reads a chunked body (its trailers skipped) into `body`.
fn read_chunked(reader: &mut BufReader<TcpStream>, body: &mut Vec<u8>) -> Result<(), String> {
    let mut line = String::new();
    loop {
        line.clear();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("read a chunk size: {e}"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("a bad chunk size: {:?}", line.trim_end()))?;
        if body.len() + size > MAX_BODY {
            return Err(format!("a chunked body over {MAX_BODY} bytes"));
        }
        if size == 0 {
            // Trailers, if any, up to the blank line.
            loop {
                line.clear();
                let n = reader
                    .read_line(&mut line)
                    .map_err(|e| format!("read the trailers: {e}"))?;
                if n == 0 || line.trim_end().is_empty() {
                    return Ok(());
                }
            }
        }
        read_exact(reader, size, body)?;
        let mut crlf = [0u8; 2];
        reader
            .read_exact(&mut crlf)
            .map_err(|e| format!("read the end of a chunk: {e}"))?;
    }
}
