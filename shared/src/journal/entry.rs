//! One line of events.jsonl: the envelope (`ts`, `agent`) around an event, and
//! the one place that turns it into JSON and back.

use std::time::SystemTime;

use serde_json::Value;

use super::event::Event;

/// An event as journalled: when, for which agent (if one is concerned), what.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub ts: SystemTime,
    pub agent: Option<String>,
    pub event: Event,
}

/// What a journal line holds, once it is JSON.
#[derive(Debug)]
pub(super) enum Decoded {
    Known(Entry),
    /// An event this version does not know (written by a newer one), as read.
    Unknown {
        name: String,
        raw: Value,
    },
}

/// Why a JSON line is not a journal entry.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("not a JSON object with an \"event\" name")]
    NoEventName,
    #[error("a `{name}` event without a valid \"ts\" (RFC 3339, UTC)")]
    BadTime { name: String },
    #[error("a `{name}` event with unexpected fields: {source}")]
    BadFields {
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Appends the line for one event, newline included, to `out`. Keys come out
/// sorted (serde_json's map), as the journal has always been written.
pub fn encode(
    ts: SystemTime,
    agent: Option<&str>,
    event: &Event,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    // An internally tagged enum always serializes to an object.
    let Value::Object(mut object) = serde_json::to_value(event)? else {
        return Err(serde::ser::Error::custom("an event is not a JSON object"));
    };
    object.insert(
        "ts".into(),
        Value::String(humantime::format_rfc3339_millis(ts).to_string()),
    );
    if let Some(agent) = agent {
        object.insert("agent".into(), Value::String(agent.to_owned()));
    }
    serde_json::to_writer(&mut *out, &Value::Object(object))?;
    out.push(b'\n');
    Ok(())
}

/// Reads one parsed line back. Fields the event does not have are ignored, so
/// an older version reads what a newer one added to a known event.
pub(super) fn decode(value: Value) -> Result<Decoded, EntryError> {
    let Value::Object(mut object) = value else {
        return Err(EntryError::NoEventName);
    };
    let Some(name) = object
        .get("event")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return Err(EntryError::NoEventName);
    };
    if !Event::NAMES.contains(&name.as_str()) {
        return Ok(Decoded::Unknown {
            name,
            raw: Value::Object(object),
        });
    }
    let ts = object
        .remove("ts")
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|ts| humantime::parse_rfc3339(ts).ok())
        .ok_or_else(|| EntryError::BadTime { name: name.clone() })?;
    let agent = match object.remove("agent") {
        Some(Value::String(agent)) => Some(agent),
        _ => None,
    };
    let event = serde_json::from_value(Value::Object(object))
        .map_err(|source| EntryError::BadFields { name, source })?;
    Ok(Decoded::Known(Entry { ts, agent, event }))
}
