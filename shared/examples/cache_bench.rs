//! Answer cache lookups per second: `cargo run --release -p shared --example
//! cache_bench -- FILE ENTRIES WORKERS LOOKUPS`. Fills FILE with ENTRIES
//! answers (if it holds fewer), then WORKERS threads, each with its own
//! connection as an agent process has, look up LOOKUPS random keys each.
//! Prints the total rate, the p99 lookup time and the bytes per answer.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;
use shared::answer_cache::{AnswerCache, CacheKey};

fn key(n: u64) -> CacheKey {
    CacheKey::of("openai", "http://127.0.0.1:4000/v1", &json!({"n": n}))
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: cache_bench FILE [ENTRIES WORKERS LOOKUPS]")?,
    );
    let (entries, workers, lookups) = (arg(2, 100_000), arg(3, 8), arg(4, 20_000));
    let cache = AnswerCache::open(&file)?;
    let answer = json!({"id": "chatcmpl-x", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "a reply of a typical short length, some forty words or so, to stand for an answer"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 30, "completion_tokens": 40}}).to_string();
    let have = cache.stats()?.entries;
    let fill = Instant::now();
    for n in have..entries {
        cache.put(&key(n), "m", &answer)?;
    }
    eprintln!(
        "filled {} in {:?}",
        entries.saturating_sub(have),
        fill.elapsed()
    );
    let start = Instant::now();
    let threads: Vec<_> = (0..workers)
        .map(|w| {
            let file = file.clone();
            std::thread::spawn(move || -> Result<Vec<u128>, String> {
                let cache = AnswerCache::open(&file).map_err(|e| e.to_string())?;
                let mut times = Vec::with_capacity(lookups as usize);
                let mut x = w.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                for _ in 0..lookups {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let t = Instant::now();
                    cache.get(&key(x % entries)).map_err(|e| e.to_string())?;
                    times.push(t.elapsed().as_micros());
                }
                Ok(times)
            })
        })
        .collect();
    let mut times = Vec::new();
    for thread in threads {
        times.extend(thread.join().map_err(|_| "a worker panicked")??);
    }
    let seconds = start.elapsed().as_secs_f64();
    times.sort_unstable();
    let p99 = times.get(times.len() * 99 / 100).copied().unwrap_or(0);
    let stats = cache.stats()?;
    // The database file alone: the WAL is folded into it at the last close.
    let db = std::fs::metadata(&file)?.len();
    println!(
        "{} lookups by {workers} workers in {seconds:.2}s: {:.0}/s, p99 {p99} µs; {} answers, {} bytes/answer in the database file",
        times.len(),
        times.len() as f64 / seconds,
        stats.entries,
        db / stats.entries.max(1)
    );
    Ok(())
}
