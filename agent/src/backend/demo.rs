//! The `demo` backend: a deterministic stand-in for a generator, with knobs
//! for latency, resident memory, failures and crashes (agent.demo). Every
//! decision is a stable hash of the item and the attempt, so the same item and
//! attempt always behave the same, in every run.

use std::hint::black_box;

use serde_json::{Map, Value};
use shared::ids::IdKey;
use shared::job::DemoSettings;

use super::{AttemptError, Backend, Call, CallFuture, Meter};
use crate::hash::StableHasher;
use crate::setup::SetupError;

/// Touching one byte per page makes the whole allocation resident.
const PAGE: usize = 4096;

/// How much of the item's "text" or "prompt" a record quotes.
const QUOTED_CHARS: usize = 60;

const WORDS: [&str; 32] = [
    "amber", "brisk", "cedar", "dawn", "ember", "fjord", "glade", "harbor", "ivory", "jasper",
    "kettle", "lantern", "meadow", "nectar", "orbit", "pebble", "quartz", "river", "saffron",
    "timber", "umber", "velvet", "willow", "xenon", "yarrow", "zephyr", "quiet", "swift", "hollow",
    "silver", "copper", "misty",
];

/// What one attempt does, decided before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Crash,
    Fail,
    Succeed,
}

pub struct DemoBackend {
    settings: DemoSettings,
    /// Held until the agent exits, so the agent's resident memory is
    /// agent.demo.memory for its whole life.
    _ballast: Vec<u8>,
}

impl DemoBackend {
    pub fn new(settings: &DemoSettings) -> Result<Self, SetupError> {
        Ok(Self {
            settings: settings.clone(),
            _ballast: resident_ballast(settings.memory.bytes())?,
        })
    }
}

impl Backend for DemoBackend {
    fn label(&self, _choice: usize) -> String {
        "demo".to_owned()
    }

    /// A crash aborts the whole agent, whatever else is in flight: that is
    /// what the knob is for. The latency is a pause on the event loop.
    fn call<'a>(&'a self, call: Call<'a>, _choice: usize, _meter: &'a mut Meter) -> CallFuture<'a> {
        let item_text = canonical_text(call.item);
        let fate = fate(
            &self.settings,
            &item_text,
            call.launch_attempt,
            call.item_attempt,
        );
        if fate == Fate::Crash {
            eprintln!("demo crash at item {}", call.id);
            std::process::abort();
        }
        let latency = self.settings.latency.get();
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            match fate {
                Fate::Succeed => Ok(record(call, &item_text)),
                Fate::Crash | Fate::Fail => Err(AttemptError::Demo),
            }
        })
    }

    fn holds_thread(&self) -> bool {
        false
    }
}

/// Allocates `bytes` and writes one byte per page, so the memory is really
/// resident (a fresh allocation is only reserved until it is touched).
fn resident_ballast(bytes: u64) -> Result<Vec<u8>, SetupError> {
    let mut ballast = Vec::new();
    if bytes == 0 {
        return Ok(ballast);
    }
    let size = usize::try_from(bytes).map_err(|_| SetupError::DemoMemory { bytes })?;
    ballast
        .try_reserve_exact(size)
        .map_err(|_| SetupError::DemoMemory { bytes })?;
    // Writing into the spare capacity touches the pages without the cost of
    // zeroing every byte.
    for slot in ballast.spare_capacity_mut().iter_mut().step_by(PAGE) {
        slot.write(1);
    }
    // Without this the writes could be optimized away as never read.
    Ok(black_box(ballast))
}

/// The item's JSON text: the same item gives the same text in every run.
fn canonical_text(item: &Value) -> String {
    // Serializing a Value cannot fail (its keys are strings); an empty text
    // would still be deterministic.
    serde_json::to_string(item).unwrap_or_default()
}

/// A share in [0, 1) for one decision about one attempt at one item.
fn draw(salt: &str, item_text: &str, launch_attempt: u32, item_attempt: u32) -> f64 {
    StableHasher::new()
        .part(salt.as_bytes())
        .part(item_text.as_bytes())
        .part_u64(u64::from(launch_attempt))
        .part_u64(u64::from(item_attempt))
        .unit()
}

/// Crash first, then failure, each from its own draw so the two rates do not
/// pick the same attempts.
pub fn fate(
    settings: &DemoSettings,
    item_text: &str,
    launch_attempt: u32,
    item_attempt: u32,
) -> Fate {
    if draw("crash", item_text, launch_attempt, item_attempt) < settings.crash_rate.0 {
        Fate::Crash
    } else if draw("fail", item_text, launch_attempt, item_attempt) < settings.fail_rate.0 {
        Fate::Fail
    } else {
        Fate::Succeed
    }
}

/// The record of a successful attempt. Its output depends on the item only,
/// so a retried item gets the same text; "attempt" says which attempt it was.
fn record(call: Call<'_>, item_text: &str) -> Map<String, Value> {
    let words = StableHasher::new()
        .part(b"words")
        .part(item_text.as_bytes())
        .finish();
    let chosen: Vec<&str> = (0..4)
        .map(|n| WORDS[((words >> (n * 5)) & 31) as usize])
        .collect();
    let mut output = format!(
        "demo result for {}: {}",
        plain_id(call.id),
        chosen.join(" ")
    );
    let quoted = ["text", "prompt"]
        .iter()
        .find_map(|field| call.item.get(*field).and_then(Value::as_str));
    if let Some(quoted) = quoted {
        output.push_str(" | ");
        output.extend(quoted.chars().take(QUOTED_CHARS));
    }
    let mut record = Map::new();
    record.insert(call.id_field.to_owned(), call.id.to_value());
    record.insert("output".to_owned(), Value::String(output));
    record.insert("attempt".to_owned(), Value::from(call.item_attempt));
    record
}

/// An id as a reader would write it: strings without their JSON quotes.
fn plain_id(id: &IdKey) -> String {
    match id.to_value() {
        Value::String(text) => text,
        _ => id.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use serde_json::json;
    use shared::job::{HumanDuration, Share};

    fn settings(fail_rate: f64) -> DemoSettings {
        DemoSettings {
            latency: HumanDuration::from_millis(0),
            fail_rate: Share(fail_rate),
            ..DemoSettings::default()
        }
    }

    fn run(backend: &DemoBackend, item: &Value, attempt: u32) -> Option<Map<String, Value>> {
        let id = IdKey::from_value(&item["id"]).expect("test items have ids");
        let call = Call {
            item,
            id: &id,
            id_field: "id",
            launch_attempt: 1,
            item_attempt: attempt,
        };
        let mut meter = Meter::default();
        // No latency: the call ends at its first poll.
        let result = backend.call(call, 0, &mut meter).now_or_never();
        result.expect("no pause").ok()
    }

    #[test]
    fn same_item_and_attempt_same_outcome() {
        let backend = DemoBackend::new(&settings(0.5)).expect("no ballast");
        for n in 0..50 {
            let item = json!({"id": n, "text": format!("sentence number {n}")});
            for attempt in 1..=3 {
                assert_eq!(run(&backend, &item, attempt), run(&backend, &item, attempt));
            }
        }
    }

    #[test]
    fn fail_rate_zero_never_fails_and_one_always_fails() {
        let never = DemoBackend::new(&settings(0.0)).expect("no ballast");
        let always = DemoBackend::new(&settings(1.0)).expect("no ballast");
        for n in 0..200 {
            let item = json!({"id": format!("item-{n}")});
            assert!(run(&never, &item, 1).is_some());
            assert!(run(&always, &item, 1).is_none());
        }
    }

    #[test]
    fn fail_rate_picks_about_its_share() {
        let demo = settings(0.3);
        let failed = (0..1000)
            .filter(|n| fate(&demo, &format!("{{\"id\":{n}}}"), 1, 1) == Fate::Fail)
            .count();
        assert!((220..380).contains(&failed), "{failed} of 1000");
    }

    #[test]
    fn record_carries_id_attempt_and_quoted_text() {
        let backend = DemoBackend::new(&settings(0.0)).expect("no ballast");
        let item = json!({"id": "a1", "prompt": "Translate: good morning"});
        let record = run(&backend, &item, 2).expect("fail_rate 0");
        assert_eq!(record["id"], json!("a1"));
        assert_eq!(record["attempt"], json!(2));
        let output = record["output"].as_str().expect("output is text");
        assert!(output.starts_with("demo result for a1: "), "{output}");
        assert!(output.ends_with("| Translate: good morning"), "{output}");
        let line = serde_json::to_string(&record).expect("serializes");
        assert!(line.len() < 200, "{line}");
    }

    #[test]
    fn ballast_is_allocated() {
        let ballast = resident_ballast(3 * PAGE as u64 + 1).expect("small allocation");
        assert!(ballast.capacity() > 3 * PAGE);
    }
}
