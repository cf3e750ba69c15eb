//! OpenAI's and llama.cpp server's request bodies, rewritten into tabagent's
//! Chat, Generate, Tokenize and Detokenize fields before they are parsed.
//!
//! Every field of OpenAI's chat and completions requests is either carried
//! over or refused with a 400 naming it: a client must never believe a
//! setting took effect when it did not. `user` and `safety_identifier` are
//! accepted and ignored (they only label the caller for OpenAI's abuse
//! monitoring); llama.cpp server's extras that tabagent implements
//! (`top_k`, `min_p`, `repeat_penalty`, `ignore_eos`, `min_tokens`, `grammar`,
//! `json_schema`, `chat_template_kwargs`) pass through.

use serde_json::{Map, Value, json};

use super::routes::Shape;

/// Fields copied as they are, by shape (the value is checked by the
/// request's own parsing).
const SAMPLING: [&str; 14] = [
    "id",
    "model",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "seed",
    "max_tokens",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "ignore_eos",
    "min_tokens",
];
/// Chat-only fields copied as they are.
const CHAT_ONLY: [&str; 8] = [
    "tools",
    "truncate",
    "tool_choice",
    "parallel_tool_calls",
    "grammar",
    "json_schema",
    "chat_template_kwargs",
    "top_logprobs",
];
/// Accepted and deliberately ignored (documented in openapi.yaml).
const IGNORED: [&str; 2] = ["user", "safety_identifier"];

/// How the reply must be shaped beyond what the handler's reply says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireOptions {
    /// `stream_options.include_usage`: usage in a last chunk with empty
    /// `choices`, as OpenAI sends it.
    pub include_usage: bool,
}

/// The reply options a body asks for (read before it is translated).
pub fn wire_options(body: Option<&Value>) -> WireOptions {
    WireOptions {
        include_usage: body
            .and_then(|b| b.pointer("/stream_options/include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }
}

/// Whether `translate` rewrites bodies of this shape.
pub fn is_translated(shape: Shape) -> bool {
    matches!(
        shape,
        Shape::OpenAiChat | Shape::OpenAiCompletion | Shape::LlamaTokenize | Shape::LlamaDetokenize
    )
}

/// [`translate`] for the HTTP routes, where a chat or completion may be
/// for an upstream model: the body as sent goes along as `openai_body` (an
/// upstream judges its fields), and what a local model cannot take is not a
/// 400 yet but `unsupported`, which the handler answers for a local model.
pub fn translate_relayable(shape: Shape, body: Option<Value>) -> Result<Option<Value>, String> {
    if !matches!(shape, Shape::OpenAiChat | Shape::OpenAiCompletion) {
        return translate(shape, body);
    }
    let Some(Value::Object(raw)) = body else {
        return translate(shape, body);
    };
    let mut out = match translate(shape, Some(Value::Object(raw.clone()))) {
        Ok(Some(Value::Object(out))) => out,
        Ok(_) => Map::new(),
        Err(why) => {
            let mut out = Map::new();
            if let Some(model) = raw.get("model").filter(|m| m.is_string()) {
                out.insert("model".into(), model.clone());
            }
            let stream = raw.get("stream").and_then(Value::as_bool).unwrap_or(false);
            out.insert("stream".into(), Value::Bool(stream));
            if shape == Shape::OpenAiChat {
                out.insert("messages".into(), json!([]));
            } else {
                out.insert("prompt".into(), json!(""));
            }
            out.insert("unsupported".into(), Value::String(why));
            out
        }
    };
    out.insert("openai_body".into(), Value::Object(raw));
    Ok(Some(Value::Object(out)))
}

/// Rewrites an OpenAI or llama.cpp body into tabagent's request fields;
/// other shapes pass through. Errs with a message for a 400.
pub fn translate(shape: Shape, body: Option<Value>) -> Result<Option<Value>, String> {
    if !is_translated(shape) {
        return Ok(body);
    }
    let Some(Value::Object(body)) = body else {
        return Ok(body);
    };
    let mut out = Map::new();
    match shape {
        Shape::OpenAiChat | Shape::OpenAiCompletion => {
            let chat = shape == Shape::OpenAiChat;
            for (key, value) in &body {
                if value.is_null() {
                    continue;
                }
                let key = key.as_str();
                if SAMPLING.contains(&key) || (chat && CHAT_ONLY.contains(&key)) {
                    out.insert(key.into(), value.clone());
                    continue;
                }
                match key {
                    _ if IGNORED.contains(&key) && value.is_string() => {}
                    _ if IGNORED.contains(&key) => return Err(format!("{key} must be a string")),
                    "max_completion_tokens" => {
                        out.insert("max_tokens".into(), value.clone());
                    }
                    "n" => match value.as_u64() {
                        Some(1) => {}
                        Some(n) if n > 1 && n <= u64::from(u32::MAX) => {
                            out.insert("n".into(), value.clone());
                        }
                        _ => return Err(format!("n = {value}: choices are 1 or more")),
                    },
                    "stream" => match value {
                        Value::Bool(_) => {
                            out.insert("stream".into(), value.clone());
                        }
                        _ => return Err("stream must be true or false".into()),
                    },
                    "stream_options" => stream_options(value)?,
                    "stop" => {
                        out.insert("stop".into(), stop(value)?);
                    }
                    "logprobs" if chat => {
                        out.insert("logprobs".into(), value.clone());
                    }
                    "logprobs" => {
                        // The legacy completions API counts alternatives here.
                        let top = value
                            .as_u64()
                            .filter(|n| *n <= 5)
                            .ok_or("logprobs must be an integer in 0..=5")?;
                        out.insert("logprobs".into(), Value::Bool(true));
                        out.insert("top_logprobs".into(), json!(top));
                    }
                    "messages" if chat => {
                        out.insert("messages".into(), messages(value)?);
                    }
                    "prompt" if !chat => {
                        out.insert("prompt".into(), prompt(value)?);
                    }
                    "response_format" if chat => response_format(value, &mut out)?,
                    "reasoning_effort" if chat => reasoning_effort(value, &mut out)?,
                    "store" if value == &Value::Bool(false) => {}
                    "echo" | "best_of" if !chat && is_default(key, value) => {}
                    "service_tier" if matches!(value.as_str(), Some("auto" | "default")) => {}
                    "modalities" if value == &json!(["text"]) => {}
                    _ => return Err(unsupported(key)),
                }
            }
            // OpenAI streams only when asked, unlike tabagent's own routes.
            out.entry("stream").or_insert(Value::Bool(false));
            if chat && !out.contains_key("messages") {
                return Err("messages must be a list of {role, content}".into());
            }
            if !chat && !out.contains_key("prompt") {
                return Err("prompt must be a string".into());
            }
        }
        Shape::LlamaTokenize => copy(&body, &mut out, &["id", "model", "content", "add_special"]),
        Shape::LlamaDetokenize => copy(&body, &mut out, &["id", "model", "tokens"]),
        _ => {}
    }
    Ok(Some(Value::Object(out)))
}

fn copy(body: &Map<String, Value>, out: &mut Map<String, Value>, keys: &[&str]) {
    for key in keys {
        if let Some(value) = body.get(*key).filter(|v| !v.is_null()) {
            out.insert(key.to_string(), value.clone());
        }
    }
}

/// The 400's text for a field tabagent does not implement.
pub fn unsupported(key: &str) -> String {
    format!("the field `{key}` is not supported by tabagent's local models")
}

/// `echo: false` and `best_of: 1` ask for what tabagent does anyway.
fn is_default(key: &str, value: &Value) -> bool {
    match key {
        "echo" => value == &Value::Bool(false),
        _ => value.as_u64() == Some(1),
    }
}

fn stream_options(value: &Value) -> Result<(), String> {
    let Value::Object(options) = value else {
        return Err("stream_options must be an object".into());
    };
    for (key, value) in options {
        match key.as_str() {
            "include_usage" if value.is_boolean() => {}
            "include_usage" => return Err("stream_options.include_usage must be a boolean".into()),
            other => return Err(unsupported(&format!("stream_options.{other}"))),
        }
    }
    Ok(())
}

fn stop(value: &Value) -> Result<Value, String> {
    match value {
        Value::String(stop) => Ok(json!([stop])),
        Value::Array(_) => Ok(value.clone()),
        _ => Err("stop must be a string or a list of strings".into()),
    }
}

/// `text`, `json_object` (any JSON object) or `json_schema` (the schema).
fn response_format(value: &Value, out: &mut Map<String, Value>) -> Result<(), String> {
    match value.get("type").and_then(Value::as_str) {
        Some("text") => Ok(()),
        Some("json_object") => {
            out.insert("json_schema".into(), json!({"type": "object"}));
            Ok(())
        }
        Some("json_schema") => {
            let schema = value
                .pointer("/json_schema/schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"}));
            out.insert("json_schema".into(), schema);
            Ok(())
        }
        _ => Err("response_format.type must be text, json_object or json_schema".into()),
    }
}

/// OpenAI's effort levels for templates that take `reasoning_effort`; the
/// lowest ones turn thinking off where the template can.
fn reasoning_effort(value: &Value, out: &mut Map<String, Value>) -> Result<(), String> {
    let effort = value
        .as_str()
        .filter(|e| ["none", "minimal", "low", "medium", "high"].contains(e))
        .ok_or("reasoning_effort must be none, minimal, low, medium or high")?;
    if matches!(effort, "none" | "minimal") {
        out.insert("think".into(), Value::Bool(false));
    }
    let kwargs = out
        .entry("chat_template_kwargs")
        .or_insert_with(|| json!({}));
    if let Value::Object(kwargs) = kwargs {
        kwargs.insert("reasoning_effort".into(), json!(effort));
    }
    Ok(())
}

/// OpenAI messages as tabagent's: text parts joined, `developer` as
/// `system`, tool calls and tool results kept.
fn messages(value: &Value) -> Result<Value, String> {
    let Value::Array(list) = value else {
        return Err("messages must be a list of {role, content}".into());
    };
    let mut out = Vec::with_capacity(list.len());
    for message in list {
        let Value::Object(message) = message else {
            return Err("every message must be an object".into());
        };
        let mut turn = Map::new();
        for (key, value) in message {
            match key.as_str() {
                "role" => {
                    let role = value.as_str().ok_or("every message needs a role")?;
                    let role = if role == "developer" { "system" } else { role };
                    turn.insert("role".into(), json!(role));
                }
                "content" => {
                    turn.insert("content".into(), json!(content(value)?));
                }
                "tool_calls" | "tool_call_id" | "name" | "reasoning_content" => {
                    if !value.is_null() {
                        turn.insert(key.clone(), value.clone());
                    }
                }
                "refusal" if value.is_null() => {}
                other => return Err(unsupported(&format!("messages[].{other}"))),
            }
        }
        if !turn.contains_key("role") {
            return Err("every message needs a role".into());
        }
        out.push(Value::Object(turn));
    }
    Ok(Value::Array(out))
}

/// A message's content: a string, null, or text parts (joined).
fn content(value: &Value) -> Result<String, String> {
    match value {
        Value::Null => Ok(String::new()),
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => Ok(parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => part
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| "a text part needs a string `text`".to_string()),
                other => Err(format!(
                    "content parts of type {} are not supported (text only)",
                    other.unwrap_or("?")
                )),
            })
            .collect::<Result<Vec<_>, _>>()?
            .join("")),
        _ => Err("content must be a string or a list of parts".into()),
    }
}

/// A completion prompt: a string, or a list holding one string.
fn prompt(value: &Value) -> Result<Value, String> {
    match value {
        Value::String(text) => Ok(Value::String(text.clone())),
        Value::Array(list) if list.len() == 1 && list[0].is_string() => Ok(list[0].clone()),
        Value::Array(_) => Err("prompt must be one string (batches are not supported)".into()),
        _ => Err("prompt must be a string".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Result<Value, String> {
        translate(Shape::OpenAiChat, Some(body)).map(Option::unwrap)
    }

    #[test]
    fn openai_chat_bodies_become_chat_requests() {
        let out = chat(json!({
            "model": "m", "stream": true, "stop": "END", "max_completion_tokens": 5,
            "user": "u1",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
            ],
        }))
        .unwrap();
        assert_eq!(
            out["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(out["messages"][1]["content"], "hi there");
        assert_eq!(
            (out["stop"].clone(), out["max_tokens"].clone()),
            (json!(["END"]), json!(5))
        );
        assert!(out.get("user").is_none());
        let plain = translate(Shape::OpenAiCompletion, Some(json!({"prompt": ["x"]})))
            .unwrap()
            .unwrap();
        assert_eq!(
            (plain["prompt"].clone(), plain["stream"].clone()),
            (json!("x"), json!(false))
        );
        assert_eq!(chat(json!({"messages": [], "n": 3})).unwrap()["n"], 3);
        assert!(chat(json!({"messages": [], "n": 0})).is_err());
        assert!(translate(Shape::OpenAiCompletion, Some(json!({"prompt": ["a", "b"]}))).is_err());
    }

    #[test]
    fn every_field_is_carried_or_refused_by_name() {
        for field in [
            "audio",
            "functions",
            "function_call",
            "prediction",
            "web_search_options",
            "verbosity",
            "metadata",
            "prompt_cache_key",
            "made_up",
        ] {
            let error = chat(json!({"messages": [], field: {"x": 1}})).unwrap_err();
            assert!(error.contains(&format!("`{field}`")), "{field}: {error}");
        }
        let error = chat(json!({"messages": [], "stream_options": {"include_obfuscation": true}}))
            .unwrap_err();
        assert!(
            error.contains("stream_options.include_obfuscation"),
            "{error}"
        );
        let error =
            chat(json!({"messages": [{"role": "user", "content": "x", "audio": {}}]})).unwrap_err();
        assert!(error.contains("messages[].audio"), "{error}");
        let error = translate(
            Shape::OpenAiCompletion,
            Some(json!({"prompt": "x", "suffix": "y"})),
        )
        .unwrap_err();
        assert!(error.contains("`suffix`"), "{error}");
        assert!(chat(json!({"messages": [], "store": true})).is_err());
        assert!(chat(json!({"messages": [], "store": false})).is_ok());
    }

    #[test]
    fn tools_formats_and_logprobs_are_carried() {
        let out = chat(json!({
            "messages": [
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array"}}},
            "logprobs": true, "top_logprobs": 2,
            "reasoning_effort": "minimal",
            "stream_options": {"include_usage": true},
        }))
        .unwrap();
        assert_eq!(out["messages"][0]["content"], "");
        assert_eq!(out["messages"][0]["tool_calls"][0]["id"], "c1");
        assert_eq!(out["messages"][1]["tool_call_id"], "c1");
        assert_eq!(out["tool_choice"], "required");
        assert_eq!(out["json_schema"], json!({"type": "array"}));
        assert_eq!(
            (out["logprobs"].clone(), out["top_logprobs"].clone()),
            (json!(true), json!(2))
        );
        assert_eq!(out["think"], false);
        assert_eq!(out["chat_template_kwargs"]["reasoning_effort"], "minimal");
        let legacy = translate(
            Shape::OpenAiCompletion,
            Some(json!({"prompt": "x", "logprobs": 3})),
        )
        .unwrap()
        .unwrap();
        assert_eq!(legacy["top_logprobs"], 3);
        assert!(
            wire_options(Some(&json!({"stream_options": {"include_usage": true}}))).include_usage
        );
    }
}
