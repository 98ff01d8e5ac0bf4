//! The priced LLM job of the money tests (budgets, batch mode) against the
//! fault server, whose answers carry a usage the tests know: prices large
//! enough that a few requests cost cents, and the cost of a usage at them.

use serde_json::Value;

use crate::litellm::FaultServer;
use crate::{Job, JobDir};

/// USD per million tokens.
pub const INPUT: f64 = 1000.0;
pub const OUTPUT: f64 = 2000.0;
pub const CACHED: f64 = 500.0;
pub const CACHE_WRITE: f64 = 1250.0;

/// The fault server of `job`, logging to its requests.jsonl.
pub fn fault_server(job: &JobDir, args: &[&str]) -> FaultServer {
    FaultServer::start(
        &crate::binary("fault_server"),
        &job.path().join("requests.jsonl"),
        args,
    )
}

/// A priced openai (or anthropic) job over `items` items, two agents of
/// two requests in flight each, its key in `key_var`.
pub fn priced_job(
    job: &JobDir,
    server: &FaultServer,
    key_var: &str,
    items: usize,
    anthropic: bool,
) -> Job {
    job.items(items);
    let spec = Job::new("items.jsonl").layout(1, 1, 2);
    let spec = if anthropic {
        spec.anthropic(&server.base_url(), "fault-model")
    } else {
        spec.openai(&server.base_url(), "fault-model")
    };
    spec.llm("api_key_env", key_var)
        .llm("prompt", "{{prompt}}")
        .llm("max_tokens", 20)
        .llm("request_timeout", "5s")
        .concurrency(2)
        .item_retries(2)
        .timeout("5m")
        .raw(
            "agent.price",
            &format!("input = {INPUT}\noutput = {OUTPUT}\ncached_input = {CACHED}\ncache_write = {CACHE_WRITE}"),
        )
}

/// The cost of a record's usage at these prices (online).
pub fn priced(usage: &Value) -> f64 {
    let n = |key: &str| usage[key].as_u64().unwrap_or(0) as f64;
    (n("input_tokens") * INPUT
        + n("output_tokens") * OUTPUT
        + n("cached_input_tokens") * CACHED
        + n("cache_write_tokens") * CACHE_WRITE)
        / 1e6
}
