//! The HTTP clients of the thread that drives an agent's requests (the
//! pool's event loop): per endpoint, one client whose kept-alive
//! connections live on that thread's runtime, shared by every request in
//! flight. They are the thread's own, not the backend's, because a
//! connection belongs to the runtime it was opened on; a second event loop
//! (online items after a batch) opens its own.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::header::{HeaderName, HeaderValue};

use super::endpoint::Endpoint;
use super::http::{self, Answer, SendError};

/// Which backend a client is for: each `LlmBackend` takes its own number.
pub fn owner() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    /// (owner, endpoint choice) → this thread's client for it.
    static CLIENTS: RefCell<Vec<((u64, usize), reqwest::Client)>> = const { RefCell::new(Vec::new()) };
}

/// This thread's client for endpoint `choice` of backend `owner`.
fn client(owner: u64, choice: usize, endpoint: &Endpoint) -> Result<reqwest::Client, SendError> {
    CLIENTS.with(|cell| {
        let mut clients = cell.borrow_mut();
        if let Some((_, client)) = clients.iter().find(|(at, _)| *at == (owner, choice)) {
            return Ok(client.clone());
        }
        let client = http::client(endpoint.timeout)
            .map_err(|e| SendError::Connection(format!("cannot set up the HTTP client: {e}")))?;
        clients.push(((owner, choice), client.clone()));
        Ok(client)
    })
}

/// POSTs `body` to endpoint `choice` of backend `owner` and reads the whole
/// answer, over this thread's connections to it.
pub async fn post(
    owner: u64,
    choice: usize,
    endpoint: &Endpoint,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
) -> Result<Answer, SendError> {
    let client = client(owner, choice, endpoint)?;
    match &endpoint.parsed_url {
        Some(url) => http::post(&client, url.clone(), headers, body).await,
        None => http::post(&client, endpoint.url.as_str(), headers, body).await,
    }
}
