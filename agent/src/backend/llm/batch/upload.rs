//! The body that submits a batch, written request by request as each body
//! is rendered into a file beside the agent's records, and sent from there:
//! a batch of 50,000 requests (up to 200 MB) is never held in memory (OpenAI:
//! the multipart upload of the JSONL input file; Anthropic: the JSON of
//! `POST /messages/batches`). A body is full at the provider's limits
//! (requests and bytes).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::super::endpoint::Provider;
use super::openai::ENDPOINT;

/// Written by hand: two parts, and the boundary cannot occur in JSONL of
/// escaped JSON lines.
const BOUNDARY: &str = "nightshift-batch-boundary-7d1f3c";

/// The most a batch may hold: (requests, bytes of its requests), a little
/// under each provider's published limit (OpenAI: 50,000 requests and a
/// 200 MB file; Anthropic: 100,000 requests and 256 MB).
pub fn limits(provider: Provider) -> (usize, usize) {
    match provider {
        Provider::OpenAi => (50_000, 190_000_000),
        Provider::Anthropic => (100_000, 240_000_000),
    }
}

pub struct BatchBody {
    provider: Provider,
    path: PathBuf,
    file: BufWriter<File>,
    /// Bytes written so far.
    written: u64,
    requests: usize,
    /// Bytes of the requests alone (the limit is on the file).
    content: usize,
    /// The next request's line, written here first to learn its size.
    line: Vec<u8>,
}

/// A batch body ready to send: its content type, file and length.
pub struct Finished {
    pub kind: String,
    pub path: PathBuf,
    pub length: u64,
}

impl BatchBody {
    /// A new body in `path` (made or emptied).
    pub fn new(provider: Provider, path: &Path) -> io::Result<Self> {
        let mut body = Self {
            provider,
            path: path.to_owned(),
            file: BufWriter::new(File::create(path)?),
            written: 0,
            requests: 0,
            content: 0,
            line: Vec::new(),
        };
        match provider {
            Provider::OpenAi => body.write(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
                     --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"batch.jsonl\"\r\n\
                     Content-Type: application/jsonl\r\n\r\n"
                )
                .as_bytes(),
            )?,
            Provider::Anthropic => body.write(b"{\"requests\":[")?,
        }
        Ok(body)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_empty(&self) -> bool {
        self.requests == 0
    }

    /// Adds a request, unless the batch is full: then false, and nothing is
    /// added (an empty batch takes any one request).
    pub fn push(&mut self, custom_id: &str, body: &Value) -> io::Result<bool> {
        self.line.clear();
        let line = match self.provider {
            Provider::OpenAi => {
                json!({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body})
            }
            Provider::Anthropic => json!({"custom_id": custom_id, "params": body}),
        };
        serde_json::to_writer(&mut self.line, &line)?;
        let (most, most_bytes) = limits(self.provider);
        let full = self.requests >= most || self.content + self.line.len() + 1 > most_bytes;
        if full && !self.is_empty() {
            return Ok(false);
        }
        let line = std::mem::take(&mut self.line);
        let written = match self.provider {
            Provider::OpenAi => self.write(&line).and_then(|()| self.write(b"\n")),
            Provider::Anthropic if self.is_empty() => self.write(&line),
            Provider::Anthropic => self.write(b",").and_then(|()| self.write(&line)),
        };
        self.line = line;
        written?;
        self.requests += 1;
        self.content += self.line.len() + 1;
        Ok(true)
    }

    /// The file complete, and what sending it needs.
    pub fn finish(mut self) -> io::Result<Finished> {
        let kind = match self.provider {
            Provider::OpenAi => {
                self.write(format!("\r\n--{BOUNDARY}--\r\n").as_bytes())?;
                format!("multipart/form-data; boundary={BOUNDARY}")
            }
            Provider::Anthropic => {
                self.write(b"]}")?;
                "application/json".to_owned()
            }
        };
        self.file.flush()?;
        Ok(Finished {
            kind,
            path: self.path,
            length: self.written,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body's file, read back.
    fn sent(body: BatchBody) -> (String, Vec<u8>) {
        let finished = body.finish().expect("finish");
        let bytes = std::fs::read(&finished.path).expect("read");
        assert_eq!(bytes.len() as u64, finished.length);
        (finished.kind, bytes)
    }

    #[test]
    fn an_openai_body_is_the_multipart_upload_of_one_line_per_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut body = BatchBody::new(Provider::OpenAi, &dir.path().join("up")).expect("body");
        assert!(body.push("a", &json!({"model": "m"})).expect("push"));
        let (kind, bytes) = sent(body);
        assert!(kind.starts_with("multipart/form-data; boundary="));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("name=\"purpose\"\r\n\r\nbatch\r\n"), "{text}");
        let file_start = text
            .find("application/jsonl\r\n\r\n")
            .expect("the file part")
            + 21;
        let line = text[file_start..].lines().next().expect("a line");
        let line: Value = serde_json::from_str(line).expect("json");
        assert_eq!(
            line,
            json!({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}})
        );
        assert!(
            text.ends_with("\n\r\n--nightshift-batch-boundary-7d1f3c--\r\n"),
            "{text}"
        );
    }

    #[test]
    fn an_anthropic_body_is_the_json_of_its_requests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut body = BatchBody::new(Provider::Anthropic, &dir.path().join("up")).expect("body");
        assert!(body.push("a", &json!({"model": "m"})).expect("push"));
        assert!(body.push("b", &json!({"model": "n"})).expect("push"));
        let (kind, bytes) = sent(body);
        assert_eq!(kind, "application/json");
        let value: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            value,
            json!({"requests": [{"custom_id": "a", "params": {"model": "m"}},
                                {"custom_id": "b", "params": {"model": "n"}}]})
        );
    }

    #[test]
    fn a_body_is_full_at_the_providers_request_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut body = BatchBody::new(Provider::OpenAi, &dir.path().join("up")).expect("body");
        let (most, _) = limits(Provider::OpenAi);
        for i in 0..most {
            assert!(body.push(&format!("c{i}"), &json!({})).expect("push"));
        }
        assert!(!body.push("one-more", &json!({})).expect("push"), "full");
        assert_eq!(body.requests, most);
    }
}
