//! The HTTP calls of the batch APIs on the main endpoint, with its key,
//! blocking on the backend's runtime: submit a batch, poll it, read its
//! results. An answer is sorted like an online one (`http::verdict`), so a
//! rejected key, a rate limit or a server error mean what they always mean.

use reqwest::header::CONTENT_TYPE;
use serde_json::Value;
use shared::records::Lines;

use super::super::endpoint::{Endpoint, Key, Provider};
use super::super::http::{self, Answer, Verdict};
use super::super::LlmError;
use super::{anthropic, openai, Outcome, Polled};

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

    /// Submits the requests (custom_id, body) as one batch: its id.
    pub fn submit(&self, requests: &[(String, Value)]) -> Result<String, LlmError> {
        let batch = match self.endpoint.provider {
            Provider::OpenAi => {
                let (kind, body) = openai::upload(&openai::input_file(requests));
                let url = self.url("/files")?;
                let (answer, index) =
                    self.send(|client| client.post(&url).header(CONTENT_TYPE, kind).body(body))?;
                let file = self.json(answer, index)?;
                let file_id = text(&file, "id", "the uploaded file")?;
                self.post_json("/batches", &openai::create(&file_id))?
            }
            Provider::Anthropic => {
                self.post_json("/messages/batches", &anthropic::create(requests))?
            }
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

    /// Every result line of one results file, read as the provider shapes
    /// them; lines that cannot be read are skipped (their items have no
    /// result, and go into another batch).
    pub fn results(&self, at: &str) -> Result<Vec<(String, Outcome)>, LlmError> {
        let url = self.url(at)?;
        let (answer, index) = self.send(|client| client.get(&url))?;
        if !answer.status.is_success() {
            // The error, sorted as any other answer's.
            return Err(self
                .json(answer, index)
                .err()
                .unwrap_or_else(|| LlmError::BadBody("the results file is not JSONL".into())));
        }
        let read = match self.endpoint.provider {
            Provider::OpenAi => openai::read_result,
            Provider::Anthropic => anthropic::read_result,
        };
        let body = &answer.body;
        // The last line may lack its newline: it is whole all the same.
        let lines = Lines::new(body);
        let tail = (!lines.torn.is_empty()).then_some(lines.torn);
        let complete = lines.iter().map(|(_, range)| &body[range]);
        Ok(complete
            .chain(tail)
            .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
            .filter_map(|line| read(&line))
            .collect())
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
