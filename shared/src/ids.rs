//! Item ids. An id is a JSON string or integer; two ids are the same when their
//! canonical JSON text is the same, so `"7"` and `7` are different ids.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The canonical JSON text of an id: `"abc"` or `42`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdKey(String);

impl IdKey {
    /// The key of an id value, or `None` when the value cannot be an id.
    pub fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::String(_) => serde_json::to_string(value).ok().map(Self),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(Self(n.to_string())),
            _ => None,
        }
    }

    pub fn from_line_number(line: usize) -> Self {
        Self(line.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a person reads it: a string id without its quotes.
    pub fn plain(&self) -> String {
        match self.to_value() {
            Value::String(text) => text,
            other => other.to_string(),
        }
    }

    /// The id as a JSON value, for records and plan.json.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or_else(|_| Value::String(self.0.clone()))
    }
}

impl fmt::Display for IdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_and_numbers_are_distinct() {
        let s = IdKey::from_value(&json!("7")).expect("string id");
        let n = IdKey::from_value(&json!(7)).expect("number id");
        assert_ne!(s, n);
        assert_eq!(s.to_value(), json!("7"));
        assert_eq!(n.to_value(), json!(7));
    }

    #[test]
    fn floats_objects_and_null_are_not_ids() {
        assert!(IdKey::from_value(&json!(1.5)).is_none());
        assert!(IdKey::from_value(&json!(null)).is_none());
        assert!(IdKey::from_value(&json!({"a": 1})).is_none());
    }
}
