//! Anthropic's prompt caching, as the fault server plays it (`cache` mode):
//! a request whose system prompt is a block marked with `cache_control`
//! writes the cache when it finds the prefix unwritten — or still being
//! written by a request whose answer has not gone out yet, as the real API
//! does — and reads it once an earlier answer has gone out. The prefix's
//! tokens (its characters / 4) are then `cache_creation_input_tokens` or
//! `cache_read_input_tokens`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

/// What one request did with the cache: tokens written, tokens read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheUse {
    pub write: u64,
    pub read: u64,
}

#[derive(Debug, Default)]
pub struct PromptCache {
    /// Per cached prefix: when its first writer's answer goes out.
    written_at: HashMap<String, Instant>,
}

impl PromptCache {
    /// The cache use of a request with `body` whose answer goes out after
    /// `delay`; None when it marks nothing for caching.
    pub fn serve(&mut self, body: &Value, delay: Duration) -> Option<CacheUse> {
        let prefix = marked_prefix(body)?;
        let tokens = (prefix.len() as u64).div_ceil(4);
        let now = Instant::now();
        match self.written_at.get(&prefix) {
            Some(at) if *at <= now => Some(CacheUse {
                write: 0,
                read: tokens,
            }),
            Some(_) => Some(CacheUse {
                write: tokens,
                read: 0,
            }),
            None => {
                self.written_at.insert(prefix, now + delay);
                Some(CacheUse {
                    write: tokens,
                    read: 0,
                })
            }
        }
    }
}

/// The text of the system blocks up to the last one marked `cache_control`.
fn marked_prefix(body: &Value) -> Option<String> {
    let blocks = body["system"].as_array()?;
    let last = blocks
        .iter()
        .rposition(|block| block.get("cache_control").is_some())?;
    Some(
        blocks[..=last]
            .iter()
            .filter_map(|block| block["text"].as_str())
            .collect(),
    )
}
