//! The HTTP calls of the batch APIs on the main endpoint, with its key,
//! blocking on the backend's runtime: submit a batch, poll it, read its
//! results. An answer is sorted like an online one (`http::verdict`), so a
//! rejected key, a rate limit or a server error mean what they always mean.

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::Value;

use super::super::endpoint::{Endpoint, Key, Provider};
use super::super::http::{self, Answer, Verdict};
use super::super::LlmError;
use super::upload::Finished;
use super::{anthropic, openai, Outcome, Polled};

#[derive(Clone, Copy)]
pub struct Client<'a> {
    pub runtime: &'a tokio::runtime::Runtime,
    pub endpoint: &'a Endpoint,
}

impl Client<'_> {
    fn key(&self) -> Result<(usize, &Key), LlmError> {
        self.endpoint.key().ok_or_else(|| LlmError::NoUsableKey {
            endpoint: self.endpoint.base_url.clone(),
            vars: self.endpoint.rejected_vars(),
        })
    }

    /// The address of `path` at the endpoint; a full URL (Anthropic's
    /// results_url) only on the endpoint's own scheme, host and port, as
    /// the key goes with it.
    fn url(&self, path: &str) -> Result<String, LlmError> {
        if !(path.starts_with("http://") || path.starts_with("https://")) {
            return Ok(format!("{}{path}", self.endpoint.base_url));
        }
        if origin(path) == origin(&self.endpoint.base_url) {
            Ok(path.to_owned())
        } else {
            Err(LlmError::BadBody(format!(
                "the provider points at {path}, which is not on {}: the key is not sent there",
                self.endpoint.base_url
            )))
        }
    }

    /// Sends one request with the key and reads the whole answer.
    fn send(
        &self,
        build: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<(Answer, usize), LlmError> {
        let endpoint = self.endpoint;
        let (index, key) = self.key()?;
        let request = build(&endpoint.client);
        let sent = self
            .runtime
            .block_on(http::send(request, endpoint.auth_headers(key)));
        let answer = sent.map_err(|error| endpoint.no_answer(error))?;
        Ok((answer, index))
    }

    /// A JSON answer, or the error its status means.
    fn json(&self, answer: Answer, index: usize) -> Result<Value, LlmError> {
        let endpoint = self.endpoint;
        let key = self.key()?.1;
        let status = answer.status.as_u16();
        match http::verdict(answer.status, &answer.body, endpoint.secret(key)) {
            Verdict::Answered(value) => Ok(value),
            Verdict::RateLimited => Err(LlmError::RateLimited { retry_after: None }),
            Verdict::KeyRejected => {
                let var = self.key().ok().and_then(|(_, key)| key.var.clone());
                endpoint.reject(index);
                Err(LlmError::KeyRejected {
                    var,
                    endpoint: endpoint.base_url.clone(),
                    status,
                })
            }
            Verdict::Refused(message) => Err(LlmError::Refused { status, message }),
            Verdict::ServerError(message) => Err(LlmError::Server { status, message }),
            Verdict::Unreadable(reason) => Err(LlmError::BadBody(reason)),
        }
    }

    fn post_json(&self, path: &str, body: &Value) -> Result<Value, LlmError> {
        let bytes = serde_json::to_vec(body).map_err(|e| LlmError::BadBody(e.to_string()))?;
        let url = self.url(path)?;
        let (answer, index) = self.send(|client| {
            client
                .post(&url)
                .header(CONTENT_TYPE, "application/json")
                .body(bytes)
        })?;
        self.json(answer, index)
    }

    /// Submits a batch whose body is written (`upload::BatchBody`), sent
    /// from its file: the batch's id.
    pub fn submit(&self, body: &Finished) -> Result<String, LlmError> {
        let (path, then) = match self.endpoint.provider {
            Provider::OpenAi => ("/files", true),
            Provider::Anthropic => ("/messages/batches", false),
        };
        let url = self.url(path)?;
        let file = std::fs::File::open(&body.path).map_err(|e| {
            LlmError::BadBody(format!(
                "cannot read the batch {}: {e}",
                body.path.display()
            ))
        })?;
        let (answer, index) = self.send(|client| {
            client
                .post(&url)
                .header(CONTENT_TYPE, &body.kind)
                .header(CONTENT_LENGTH, body.length)
                .body(tokio::fs::File::from_std(file))
        })?;
        let created = self.json(answer, index)?;
        let batch = if then {
            // OpenAI: the file is up; the batch is created on it.
            let file_id = text(&created, "id", "the uploaded file")?;
            self.post_json("/batches", &openai::create(&file_id))?
        } else {
            created
        };
        text(&batch, "id", "the new batch")
    }

    /// The batch's state now.
    pub fn poll(&self, batch: &str) -> Result<Polled, LlmError> {
        let path = match self.endpoint.provider {
            Provider::OpenAi => format!("/batches/{batch}"),
            Provider::Anthropic => format!("/messages/batches/{batch}"),
        };
        let url = self.url(&path)?;
        let (answer, index) = self.send(|client| client.get(&url))?;
        let value = self.json(answer, index)?;
        self.read(&value)
    }

    /// Asks the provider to cancel the batch: its state after the ask.
    pub fn cancel(&self, batch: &str) -> Result<Polled, LlmError> {
        let path = match self.endpoint.provider {
            Provider::OpenAi => format!("/batches/{batch}/cancel"),
            Provider::Anthropic => format!("/messages/batches/{batch}/cancel"),
        };
        let value = self.post_json(&path, &Value::Object(serde_json::Map::new()))?;
        self.read(&value)
    }

    fn read(&self, batch: &Value) -> Result<Polled, LlmError> {
        match self.endpoint.provider {
            Provider::OpenAi => openai::read_batch(batch),
            Provider::Anthropic => anthropic::read_batch(batch),
        }
        .map_err(LlmError::BadBody)
    }

    /// Reads one results file chunk by chunk, handing each line, read as the
    /// provider shapes it, to `each` as soon as it is whole: a file of
    /// 50,000 answers is never held. Lines that cannot be read are skipped
    /// (their items have no result, and go into another batch). The outer
    /// error is the file's (not read to its end); the inner one `each`'s.
    pub fn each_result<E>(
        &self,
        at: &str,
        mut each: impl FnMut(String, Outcome) -> Result<(), E>,
    ) -> Result<Result<(), E>, LlmError> {
        let url = self.url(at)?;
        let endpoint = self.endpoint;
        let (index, key) = self.key()?;
        let read = match endpoint.provider {
            Provider::OpenAi => openai::read_result,
            Provider::Anthropic => anthropic::read_result,
        };
        let mut handle = |line: &[u8]| match serde_json::from_slice::<Value>(line)
            .ok()
            .and_then(|line| read(&line))
        {
            Some((custom_id, outcome)) => each(custom_id, outcome),
            None => Ok(()),
        };
        self.runtime.block_on(async {
            let request = endpoint.client.get(&url);
            let no_answer = |error| endpoint.no_answer(error);
            let mut response = http::open(request, endpoint.auth_headers(key))
                .await
                .map_err(no_answer)?;
            if !response.status().is_success() {
                // The error, sorted as any other answer's.
                let answer = http::read_whole(response).await.map_err(no_answer)?;
                return Err(self
                    .json(answer, index)
                    .err()
                    .unwrap_or_else(|| LlmError::BadBody("the results file is not JSONL".into())));
            }
            let mut pending: Vec<u8> = Vec::new();
            while let Some(chunk) = http::chunk(&mut response).await.map_err(no_answer)? {
                pending.extend_from_slice(&chunk);
                let mut start = 0;
                while let Some(end) = memchr::memchr(b'\n', &pending[start..]) {
                    if let Err(stop) = handle(&pending[start..start + end]) {
                        return Ok(Err(stop));
                    }
                    start += end + 1;
                }
                pending.drain(..start);
            }
            // The last line may lack its newline: it is whole all the same.
            if !pending.iter().all(u8::is_ascii_whitespace) {
                if let Err(stop) = handle(&pending) {
                    return Ok(Err(stop));
                }
            }
            Ok(Ok(()))
        })
    }
}

fn text(value: &Value, key: &str, what: &str) -> Result<String, LlmError> {
    value
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| LlmError::BadBody(format!("{what} has no {key}")))
}

/// "https://host:port" of a URL: what must match before a key goes there.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    let end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |at| after_scheme + at);
    &url[..end]
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn origins_are_scheme_host_and_port() {
        assert_eq!(
            origin("https://api.anthropic.com/v1/messages/batches/x/results"),
            "https://api.anthropic.com"
        );
        assert_eq!(origin("http://127.0.0.1:4000/v1"), "http://127.0.0.1:4000");
        assert_eq!(origin("http://127.0.0.1:4000"), "http://127.0.0.1:4000");
        assert_ne!(
            origin("https://evil.example/v1"),
            origin("https://api.anthropic.com/v1")
        );
    }
}
