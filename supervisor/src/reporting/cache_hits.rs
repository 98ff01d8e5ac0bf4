//! What the answer cache gave a run: the records marked `"cached": true`
//! and the USD they say were saved (the price of their usage, which the
//! agent wrote as `saved`). Read from the agent files alone, like the rest
//! of `status`.

use serde::{Deserialize, Serialize};

use shared::money::{dollars, round_usd};
use shared::plan::Plan;
use shared::records::Lines;
use shared::rundir::RunDir;

/// The marker as the agent writes it (compact JSON): lines without it are
/// not parsed.
const MARKER: &[u8] = b"\"cached\":true";

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CacheHits {
    /// Records answered from the cache.
    pub hits: usize,
    /// USD those answers would have cost (None: no price was known).
    pub saved: Option<f64>,
}

impl CacheHits {
    /// Adds the cached records of one agent file's bytes.
    fn add_lines(&mut self, bytes: &[u8]) {
        #[derive(Deserialize)]
        struct Marked {
            #[serde(default)]
            cached: bool,
            #[serde(default)]
            saved: Option<f64>,
        }
        let lines = Lines::new(bytes);
        for (_, range) in lines.iter() {
            let line = &bytes[range];
            if memchr::memmem::find(line, MARKER).is_none() {
                continue;
            }
            let Ok(marked) = serde_json::from_slice::<Marked>(line) else {
                continue;
            };
            if marked.cached {
                self.hits += 1;
                if let Some(saved) = marked.saved.filter(|s| s.is_finite()) {
                    self.saved = Some(round_usd(self.saved.unwrap_or(0.0) + saved));
                }
            }
        }
    }

    /// "answer cache: 40 hits, saved $0.12"; None without a hit.
    pub fn describe(&self) -> Option<String> {
        (self.hits > 0).then(|| {
            let saved = self
                .saved
                .map_or_else(String::new, |usd| format!(", saved {}", dollars(usd)));
            format!(
                "answer cache: {} hit{}{saved}",
                self.hits,
                if self.hits == 1 { "" } else { "s" }
            )
        })
    }

    /// The HTML report's line; nothing without a hit.
    pub fn html_section(&self) -> String {
        self.describe()
            .map_or_else(String::new, |line| format!("<p>{line}</p>\n"))
    }
}

/// The cache hits in every agent file of the run.
pub fn cache_hits(run: &RunDir, plan: &Plan) -> CacheHits {
    let mut hits = CacheHits::default();
    for agent in plan.agents() {
        if let Ok(bytes) = std::fs::read(run.agent_output(agent.at)) {
            hits.add_lines(&bytes);
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cached_records_count() {
        let mut hits = CacheHits::default();
        hits.add_lines(
            b"{\"id\":1,\"cached\":true,\"cost\":0.0,\"saved\":0.25}\n{\"id\":2,\"cost\":0.5}\n{\"id\":3,\"output\":\"\\\"cached\\\":true\"}\n{\"id\":4,\"cached\":true,\"saved\":0.5}\n{\"id\":5,\"cached\":true",
        );
        assert_eq!(
            hits,
            CacheHits {
                hits: 2,
                saved: Some(0.75)
            }
        );
        assert_eq!(
            hits.describe().as_deref(),
            Some("answer cache: 2 hits, saved $0.75")
        );
        assert_eq!(CacheHits::default().describe(), None);
    }
}
