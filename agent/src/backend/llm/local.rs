//! The HTTP of one worker thread: a current-thread tokio runtime and, per
//! endpoint, a client whose connections live on that runtime. A worker runs
//! its request to the end on its own thread (`block_on`), so the request,
//! its connection and the socket's readiness are all handled there: no
//! hand-over to another thread and back for each request, which is what
//! most of the agent's CPU went to when every worker shared one runtime.
//! A worker has one request in flight, so its pool holds one connection
//! per endpoint, kept alive from one item to the next.

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

struct Here {
    runtime: tokio::runtime::Runtime,
    /// (owner, endpoint choice) → this thread's client for it.
    clients: Vec<((u64, usize), reqwest::Client)>,
}

impl Here {
    fn new() -> Result<Self, SendError> {
        let runtime = http::current_thread_runtime().map_err(SendError::Connection)?;
        Ok(Self {
            runtime,
            clients: Vec::new(),
        })
    }

    fn client(
        &mut self,
        owner: u64,
        choice: usize,
        endpoint: &Endpoint,
    ) -> Result<reqwest::Client, SendError> {
        if let Some((_, client)) = self.clients.iter().find(|(at, _)| *at == (owner, choice)) {
            return Ok(client.clone());
        }
        let client = http::client(endpoint.timeout)
            .map_err(|e| SendError::Connection(format!("cannot set up the HTTP client: {e}")))?;
        self.clients.push(((owner, choice), client.clone()));
        Ok(client)
    }
}

thread_local! {
    static HERE: RefCell<Option<Here>> = const { RefCell::new(None) };
}

/// POSTs `body` to endpoint `choice` of backend `owner` and reads the whole
/// answer, on this thread, over this thread's connection to it.
pub fn post(
    owner: u64,
    choice: usize,
    endpoint: &Endpoint,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
) -> Result<Answer, SendError> {
    HERE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let here = match slot.take() {
            Some(here) => here,
            None => Here::new()?,
        };
        let here = slot.insert(here);
        let client = here.client(owner, choice, endpoint)?;
        match &endpoint.parsed_url {
            Some(url) => here
                .runtime
                .block_on(http::post(&client, url.clone(), headers, body)),
            None => {
                here.runtime
                    .block_on(http::post(&client, endpoint.url.as_str(), headers, body))
            }
        }
    })
}

/// Drops this thread's runtime and clients, closing their connections: the
/// worker is done (so they go while the thread is still whole, not in its
/// thread-local destructors).
pub fn release() {
    let here = HERE
        .try_with(|cell| cell.borrow_mut().take())
        .ok()
        .flatten();
    drop(here);
}
