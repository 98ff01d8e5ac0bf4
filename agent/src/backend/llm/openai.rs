//! The OpenAI-compatible chat completions API (OpenAI, vLLM, llama.cpp,
//! Ollama, LiteLLM, OpenRouter…): `POST {base_url}/chat/completions` with
//! `Authorization: Bearer KEY`; the request body and the answer's reading.

use serde_json::{json, Map, Value};

use super::error::LlmError;
use super::reply::{text_at, Reply, Usage};
use super::request::Request;

pub const PATH: &str = "/chat/completions";

pub fn body(request: &Request<'_>) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = request.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": request.prompt}));
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    body.insert("messages".into(), Value::Array(messages));
    if let Some(max_tokens) = request.max_tokens {
        body.insert("max_tokens".into(), json!(max_tokens));
    }
    if let Some(temperature) = request.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    match (request.json, request.schema) {
        (_, Some(schema)) => {
            body.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {
                    "name": schema_name(schema),
                    "schema": schema,
                    "strict": true,
                }}),
            );
        }
        (true, None) => {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        (false, None) => {}
    }
    for (key, value) in request.extra {
        body.insert(key.clone(), value.clone());
    }
    Value::Object(body)
}

/// The schema's title made fit for `json_schema.name` (letters, digits, _
/// and -, at most 64), else "reply".
fn schema_name(schema: &Map<String, Value>) -> String {
    let name: String = schema
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "reply".to_owned()
    } else {
        name
    }
}

/// Reads a chat completion: the first choice's text, its finish reason and
/// the usage (prompt tokens less the cached ones are the uncached input).
pub fn parse(answer: &Value) -> Result<Reply, LlmError> {
    let choice = answer
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| LlmError::BadBody("no choices in the answer".into()))?;
    let message = choice.get("message");
    let text = match message.and_then(|m| m.get("content")) {
        Some(Value::String(text)) => text.clone(),
        _ => {
            let refusal = message
                .and_then(|m| m.get("refusal"))
                .and_then(Value::as_str);
            return Err(LlmError::BadBody(match refusal {
                Some(refusal) => format!("the model refused: {refusal}"),
                None => "the first choice has no message content".into(),
            }));
        }
    };
    let finish_reason = text_at(choice, "finish_reason");
    let number = |value: Option<&Value>| value.and_then(Value::as_u64).unwrap_or(0);
    let usage = answer.get("usage");
    let prompt = number(usage.and_then(|u| u.get("prompt_tokens")));
    let cached = number(
        usage
            .and_then(|u| u.get("prompt_tokens_details"))
            .and_then(|d| d.get("cached_tokens")),
    );
    Ok(Reply {
        text,
        model: text_at(answer, "model"),
        truncated: finish_reason.as_deref() == Some("length"),
        finish_reason,
        usage: Usage {
            input_tokens: prompt.saturating_sub(cached),
            output_tokens: number(usage.and_then(|u| u.get("completion_tokens"))),
            cached_input_tokens: cached,
            cache_write_tokens: 0,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(
        extra: &'a Map<String, Value>,
        schema: Option<&'a Map<String, Value>>,
    ) -> Request<'a> {
        Request {
            model: "gpt-x",
            system: Some("Be brief."),
            prompt: "Say hi",
            max_tokens: Some(50),
            temperature: Some(0.2),
            json: schema.is_some(),
            schema,
            extra,
            cache_prefix: false,
        }
    }

    #[test]
    fn the_body_has_messages_parameters_and_extra() {
        let Value::Object(extra) = json!({"top_p": 0.9, "temperature": 0.0}) else {
            panic!("object")
        };
        assert_eq!(
            body(&request(&extra, None)),
            json!({"model": "gpt-x", "max_tokens": 50, "temperature": 0.0, "top_p": 0.9,
                   "messages": [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Say hi"}]})
        );
    }

    #[test]
    fn json_mode_asks_for_an_object_or_the_schema() {
        let none = Map::new();
        let mut plain = request(&none, None);
        plain.json = true;
        plain.system = None;
        let b = body(&plain);
        assert_eq!(b["response_format"], json!({"type": "json_object"}));
        assert_eq!(b["messages"].as_array().map(Vec::len), Some(1));
        let Value::Object(schema) = json!({"title": "A basket!", "type": "object"}) else {
            panic!("object")
        };
        let b = body(&request(&none, Some(&schema)));
        assert_eq!(
            b["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "A_basket_", "schema": schema, "strict": true}})
        );
    }

    #[test]
    fn answers_are_read_and_usage_normalised() {
        let answer = json!({
            "id": "chatcmpl-1", "model": "gpt-x-2024",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107,
                      "prompt_tokens_details": {"cached_tokens": 64}}
        });
        let reply = parse(&answer).expect("a reply");
        assert_eq!(reply.text, "Hi!");
        assert_eq!(reply.model.as_deref(), Some("gpt-x-2024"));
        assert!(reply.truncated);
        assert_eq!(
            reply.usage,
            Usage {
                input_tokens: 36,
                output_tokens: 7,
                cached_input_tokens: 64,
                cache_write_tokens: 0
            }
        );
        // A server without usage details still gives a reply.
        let bare = json!({"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]});
        let reply = parse(&bare).expect("a reply");
        assert!(!reply.truncated);
        assert_eq!(reply.usage, Usage::default());
    }

    #[test]
    fn answers_without_text_are_bad_bodies() {
        for answer in [
            json!({}),
            json!({"choices": []}),
            json!({"choices": [{"message": {"content": null, "refusal": "no"}}]}),
        ] {
            assert!(
                matches!(parse(&answer), Err(LlmError::BadBody(_))),
                "{answer}"
            );
        }
    }
}
