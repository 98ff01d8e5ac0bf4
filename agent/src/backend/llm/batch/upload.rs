//! The body that submits a batch, written request by request as each body
//! is rendered: a batch of 50,000 requests is held once, as the bytes that
//! go on the wire (OpenAI: the multipart upload of the JSONL input file;
//! Anthropic: the JSON of `POST /messages/batches`), never as JSON values.
//! A body is full at the provider's limits (requests and bytes).

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
    bytes: Vec<u8>,
    requests: usize,
    /// Bytes of the requests alone (the limit is on the file).
    content: usize,
    /// The next request's line, written here first to learn its size.
    line: Vec<u8>,
}

impl BatchBody {
    pub fn new(provider: Provider) -> Self {
        let mut bytes = Vec::new();
        match provider {
            Provider::OpenAi => bytes.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
                     --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"batch.jsonl\"\r\n\
                     Content-Type: application/jsonl\r\n\r\n"
                )
                .as_bytes(),
            ),
            Provider::Anthropic => bytes.extend_from_slice(b"{\"requests\":["),
        }
        Self {
            provider,
            bytes,
            requests: 0,
            content: 0,
            line: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requests == 0
    }

    /// Adds a request, unless the batch is full: then false, and nothing is
    /// added (an empty batch takes any one request).
    pub fn push(&mut self, custom_id: &str, body: &Value) -> Result<bool, serde_json::Error> {
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
        match self.provider {
            Provider::OpenAi => {
                self.bytes.extend_from_slice(&self.line);
                self.bytes.push(b'\n');
            }
            Provider::Anthropic => {
                if !self.is_empty() {
                    self.bytes.push(b',');
                }
                self.bytes.extend_from_slice(&self.line);
            }
        }
        self.requests += 1;
        self.content += self.line.len() + 1;
        Ok(true)
    }

    /// The content type and the bytes to send.
    pub fn finish(mut self) -> (String, Vec<u8>) {
        match self.provider {
            Provider::OpenAi => {
                self.bytes
                    .extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
                (
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                    self.bytes,
                )
            }
            Provider::Anthropic => {
                self.bytes.extend_from_slice(b"]}");
                ("application/json".to_owned(), self.bytes)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_openai_body_is_the_multipart_upload_of_one_line_per_request() {
        let mut body = BatchBody::new(Provider::OpenAi);
        assert!(body.push("a", &json!({"model": "m"})).expect("push"));
        let (kind, bytes) = body.finish();
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
        let mut body = BatchBody::new(Provider::Anthropic);
        assert!(body.push("a", &json!({"model": "m"})).expect("push"));
        assert!(body.push("b", &json!({"model": "n"})).expect("push"));
        let (kind, bytes) = body.finish();
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
        let mut body = BatchBody::new(Provider::OpenAi);
        let (most, _) = limits(Provider::OpenAi);
        for i in 0..most {
            assert!(body.push(&format!("c{i}"), &json!({})).expect("push"));
        }
        assert!(!body.push("one-more", &json!({})).expect("push"), "full");
        assert_eq!(body.requests, most);
    }
}
