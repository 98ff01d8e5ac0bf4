//! Anthropic's Messages API: `POST {base_url}/messages` with `x-api-key` and
//! `anthropic-version`; the request body (max_tokens is required there, the
//! system prompt may be marked for prompt caching) and the answer's reading.

use serde_json::{json, Map, Value};

use super::error::LlmError;
use super::reply::{text_at, Reply, Usage};
use super::request::Request;

pub const PATH: &str = "/messages";
pub const VERSION: &str = "2023-06-01";

/// The API requires max_tokens; this is sent when the job sets none.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

pub fn body(request: &Request<'_>) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    body.insert(
        "max_tokens".into(),
        json!(request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    if let Some(system) = request.system {
        let system = if request.cache_prefix {
            // A block with cache_control: the prefix up to it is cached.
            json!([{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}])
        } else {
            json!(system)
        };
        body.insert("system".into(), system);
    }
    body.insert(
        "messages".into(),
        json!([{"role": "user", "content": request.prompt}]),
    );
    if let Some(temperature) = request.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    for (key, value) in request.extra {
        body.insert(key.clone(), value.clone());
    }
    Value::Object(body)
}

/// Reads a message: its text blocks joined, the stop reason, and the usage
/// (Anthropic's input_tokens already leave out cache reads and writes).
pub fn parse(answer: &Value) -> Result<Reply, LlmError> {
    let blocks = answer
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| LlmError::BadBody("no content in the answer".into()))?;
    let text: String = blocks
        .iter()
        .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|block| block.get("text").and_then(Value::as_str))
        .collect();
    let stop_reason = text_at(answer, "stop_reason");
    let usage = answer.get("usage");
    let number = |name: &str| {
        usage
            .and_then(|u| u.get(name))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Ok(Reply {
        text,
        model: text_at(answer, "model"),
        truncated: stop_reason.as_deref() == Some("max_tokens"),
        finish_reason: stop_reason,
        usage: Usage {
            input_tokens: number("input_tokens"),
            output_tokens: number("output_tokens"),
            cached_input_tokens: number("cache_read_input_tokens"),
            cache_write_tokens: number("cache_creation_input_tokens"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &Map<String, Value>) -> Request<'_> {
        Request {
            model: "claude-x",
            system: Some("Be brief."),
            prompt: "Say hi",
            max_tokens: None,
            temperature: Some(0.5),
            json: false,
            schema: None,
            extra,
            cache_prefix: false,
        }
    }

    #[test]
    fn the_body_has_max_tokens_system_messages_and_extra() {
        let Value::Object(extra) = json!({"top_k": 5}) else {
            panic!("object")
        };
        assert_eq!(
            body(&request(&extra)),
            json!({"model": "claude-x", "max_tokens": 1024, "system": "Be brief.", "temperature": 0.5,
                   "top_k": 5, "messages": [{"role": "user", "content": "Say hi"}]})
        );
    }

    #[test]
    fn cache_prefix_marks_the_system_block() {
        let none = Map::new();
        let mut cached = request(&none);
        cached.cache_prefix = true;
        cached.max_tokens = Some(10);
        let b = body(&cached);
        assert_eq!(b["max_tokens"], 10);
        assert_eq!(
            b["system"],
            json!([{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}])
        );
    }

    #[test]
    fn answers_are_read_and_usage_normalised() {
        let answer = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x-1",
            "content": [{"type": "text", "text": "Hel"}, {"type": "tool_use", "id": "t"}, {"type": "text", "text": "lo"}],
            "stop_reason": "max_tokens",
            "usage": {"input_tokens": 12, "output_tokens": 30, "cache_read_input_tokens": 900, "cache_creation_input_tokens": 40}
        });
        let reply = parse(&answer).expect("a reply");
        assert_eq!(reply.text, "Hello");
        assert!(reply.truncated);
        assert_eq!(reply.finish_reason.as_deref(), Some("max_tokens"));
        assert_eq!(
            reply.usage,
            Usage {
                input_tokens: 12,
                output_tokens: 30,
                cached_input_tokens: 900,
                cache_write_tokens: 40
            }
        );
        assert!(matches!(
            parse(&json!({"type": "message"})),
            Err(LlmError::BadBody(_))
        ));
    }
}
