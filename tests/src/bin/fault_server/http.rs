//! Just enough HTTP/1.1 for an LLM client: read one request (headers and a
//! Content-Length or chunked body) from a kept-alive connection, write one
//! answer. std only, so the fault server depends on nothing that could hide
//! what goes over the wire.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// Requests larger than this are refused rather than buffered: a test's
/// prompts are small, and a runaway client must not eat the test machine.
// A provider batch file may be 200 MB (OpenAI's limit).
const MAX_BODY: usize = 256 * 1024 * 1024;

/// One request as the server saw it.
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The key the client sent: `Authorization: Bearer K` (OpenAI) or
    /// `x-api-key: K` (Anthropic).
    pub fn api_key(&self) -> Option<&str> {
        self.header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| self.header("x-api-key"))
            .map(str::trim)
    }

    /// Whether the client wants the connection kept open after the answer.
    pub fn keep_alive(&self) -> bool {
        !self
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection between requests: the normal end.
    Closed,
    /// Anything else: an I/O error or a request this server cannot parse.
    Bad(String),
}

/// Reads the next request from a connection.
pub fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Request, ReadError> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => return Err(ReadError::Closed),
        Ok(_) => {}
        Err(e) => return Err(ReadError::Bad(format!("read the request line: {e}"))),
    }
    let mut words = line.split_whitespace();
    let (Some(method), Some(path)) = (words.next(), words.next()) else {
        return Err(ReadError::Bad(format!("not a request line: {line:?}")));
    };
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => {
                return Err(ReadError::Bad(
                    "connection closed inside the headers".into(),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(ReadError::Bad(format!("read a header: {e}"))),
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Bad(format!("not a header: {line:?}")));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut request = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    request.body = if chunked {
        read_chunked(reader)?
    } else {
        let length = match request.header("content-length") {
            Some(text) => text
                .parse::<usize>()
                .map_err(|_| ReadError::Bad(format!("bad content-length {text:?}")))?,
            None => 0,
        };
        if length > MAX_BODY {
            return Err(ReadError::Bad(format!("a {length}-byte body is too large")));
        }
        let mut body = vec![0; length];
        reader
            .read_exact(&mut body)
            .map_err(|e| ReadError::Bad(format!("read the body: {e}")))?;
        body
    };
    Ok(request)
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader
            .read_line(&mut size_line)
            .map_err(|e| ReadError::Bad(format!("read a chunk size: {e}")))?;
        let size_text = size_line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| ReadError::Bad(format!("bad chunk size {size_line:?}")))?;
        if body.len() + size > MAX_BODY {
            return Err(ReadError::Bad("chunked body too large".into()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader
            .read_exact(&mut body[start..])
            .map_err(|e| ReadError::Bad(format!("read a chunk: {e}")))?;
        // Every chunk ends with CRLF; the last (empty) one with trailers, then CRLF.
        let mut end = String::new();
        reader
            .read_line(&mut end)
            .map_err(|e| ReadError::Bad(format!("read a chunk end: {e}")))?;
        if size == 0 {
            while !end.trim().is_empty() {
                end.clear();
                match reader.read_line(&mut end) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(ReadError::Bad(format!("read trailers: {e}"))),
                }
            }
            return Ok(body);
        }
    }
}

/// An answer to write.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: value.to_string().into_bytes(),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl ToString) -> Self {
        self.headers.push((name.to_owned(), value.to_string()));
        self
    }
}

/// Writes `answer` with a Content-Length, so a kept-alive client knows where it ends.
pub fn write_answer(
    stream: &mut TcpStream,
    answer: &Answer,
    keep_alive: bool,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", answer.status, reason(answer.status));
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n", answer.body.len()));
    if !keep_alive {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&answer.body);
    stream.write_all(&bytes)?;
    stream.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Status",
    }
}
