//! A provider's answer in one shape — text, model, finish reason, whether
//! max_tokens cut it, usage normalised so that `input_tokens` counts only
//! input neither read from nor written to a prompt cache — and the record
//! made of it: the text as `output`, or in json mode the reply object's
//! fields, checked against the schema when there is one.

use jsonschema::Validator;
use serde_json::{Map, Value};

use super::error::LlmError;

pub use shared::money::Usage;

#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub text: String,
    pub model: Option<String>,
    pub finish_reason: Option<String>,
    /// max_tokens cut the reply short.
    pub truncated: bool,
    pub usage: Usage,
}

/// How replies become records.
pub struct Shape<'a> {
    /// json mode: the reply must be a JSON object.
    pub json: bool,
    pub schema: Option<&'a Validator>,
}

impl Reply {
    /// The record of this reply (its id is added by the item runner). In
    /// json mode the reply's fields come first and the metadata after, so
    /// a reply field named like one (`model`, `usage`…) is replaced by it.
    pub fn into_record(
        self,
        shape: &Shape<'_>,
        id_field: &str,
        endpoint: &str,
    ) -> Result<Map<String, Value>, LlmError> {
        let mut record = if shape.json {
            let mut object = json_object(&self.text)?;
            if let Some(schema) = shape.schema {
                check_schema(schema, &object)?;
            }
            // The item's id is the record's id, whatever the model wrote.
            object.remove(id_field);
            object
        } else {
            let mut record = Map::new();
            record.insert("output".into(), Value::String(self.text));
            record
        };
        record.insert(
            "model".into(),
            self.model.map_or(Value::Null, Value::String),
        );
        record.insert(
            "finish_reason".into(),
            self.finish_reason.map_or(Value::Null, Value::String),
        );
        if self.truncated {
            record.insert("truncated".into(), Value::Bool(true));
        }
        record.insert("usage".into(), self.usage.to_json());
        record.insert("endpoint".into(), Value::String(endpoint.to_owned()));
        Ok(record)
    }
}

/// `value[key]` when it is a string.
pub fn text_at(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// The JSON object a reply holds, tolerating a Markdown code fence around it.
pub fn json_object(text: &str) -> Result<Map<String, Value>, LlmError> {
    let inner = strip_fence(text.trim());
    match serde_json::from_str::<Value>(inner) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(LlmError::NotJson(format!(
            "it is a JSON {}",
            kind_of(&other)
        ))),
        Err(e) => Err(LlmError::NotJson(format!(
            "{e}; it starts with {:?}",
            start(inner)
        ))),
    }
}

/// "```json\n{…}\n```" → "{…}"; anything else as it is.
fn strip_fence(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    // The rest of the opening line is the language tag.
    let body = rest.split_once('\n').map_or("", |(_, body)| body);
    body.trim_end().strip_suffix("```").unwrap_or(body).trim()
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn start(text: &str) -> String {
    text.chars().take(80).collect()
}

/// The first way `object` breaks the schema, named by its path in the reply.
pub fn check_schema(schema: &Validator, object: &Map<String, Value>) -> Result<(), LlmError> {
    let instance = Value::Object(object.clone());
    let Some(error) = schema.iter_errors(&instance).next() else {
        return Ok(());
    };
    let path = error.instance_path().to_string();
    Err(LlmError::Schema {
        path: if path.is_empty() {
            "/".to_owned()
        } else {
            path
        },
        message: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reply(text: &str) -> Reply {
        Reply {
            text: text.into(),
            model: Some("m-1".into()),
            finish_reason: Some("stop".into()),
            truncated: false,
            usage: Usage {
                input_tokens: 3,
                output_tokens: 4,
                cached_input_tokens: 5,
                cache_write_tokens: 0,
            },
        }
    }

    const TEXT: Shape<'static> = Shape {
        json: false,
        schema: None,
    };
    const JSON: Shape<'static> = Shape {
        json: true,
        schema: None,
    };

    #[test]
    fn text_records_carry_output_and_metadata() {
        let mut truncated = reply("Hello");
        truncated.truncated = true;
        let record = truncated
            .into_record(&TEXT, "id", "http://x/v1")
            .expect("text is always fine");
        assert_eq!(
            Value::Object(record),
            json!({"output": "Hello", "model": "m-1", "finish_reason": "stop", "truncated": true,
                   "usage": {"input_tokens": 3, "output_tokens": 4, "cached_input_tokens": 5, "cache_write_tokens": 0},
                   "endpoint": "http://x/v1"})
        );
        assert_eq!(reply("x").usage.total(), 12);
    }

    #[test]
    fn json_replies_merge_and_fences_are_tolerated() {
        for text in [
            r#"{"answer": 42, "id": "made up"}"#,
            "```json\n{\"answer\": 42}\n```",
            "```\n{\"answer\": 42}\n```\n",
        ] {
            let record = reply(text)
                .into_record(&JSON, "id", "e")
                .expect("a JSON object");
            assert_eq!(record["answer"], 42, "{text}");
            assert!(!record.contains_key("id"));
            assert!(!record.contains_key("output"));
        }
    }

    #[test]
    fn anything_but_an_object_is_not_json() {
        for text in ["[1, 2]", "Sure! {\"a\": 1}", "```json\n\"x\"\n```", ""] {
            let error = reply(text).into_record(&JSON, "id", "e").expect_err(text);
            assert!(matches!(error, LlmError::NotJson(_)), "{text}: {error}");
        }
    }

    #[test]
    fn schema_failures_name_the_path() {
        let schema = jsonschema::validator_for(&json!({
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": {"type": "integer"}}}
        }))
        .expect("a schema");
        let shape = Shape {
            json: true,
            schema: Some(&schema),
        };
        let good = reply(r#"{"items": [1, 2]}"#).into_record(&shape, "id", "e");
        assert!(good.is_ok());
        let bad = reply(r#"{"items": [1, "two"]}"#)
            .into_record(&shape, "id", "e")
            .expect_err("a string in the list");
        assert!(
            matches!(&bad, LlmError::Schema { path, .. } if path == "/items/1"),
            "{bad}"
        );
        let missing = reply("{}")
            .into_record(&shape, "id", "e")
            .expect_err("no items");
        assert!(
            matches!(&missing, LlmError::Schema { path, message } if path == "/" && message.contains("items")),
            "{missing}"
        );
    }
}
