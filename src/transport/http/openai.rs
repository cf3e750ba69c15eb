//! OpenAI's and llama.cpp server's wire shapes: `POST /v1/chat/completions`,
//! `POST /v1/completions`, `POST /tokenize` and `POST /detokenize`.
//!
//! Requests are translated into tabagent's own request objects before they
//! are parsed ([`translate`]), so the handler never sees these shapes; final
//! replies ([`render`]) and stream events ([`event`]) are translated back.
//! Streams end with `data: [DONE]`, as OpenAI's clients expect.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::reply::{Answer, ReplyContext};
use super::routes::Shape;
use crate::api::{ChatComplete, FinishReason, Reply, Response, Usage};

/// Rewrites an OpenAI or llama.cpp body into tabagent's request fields;
/// other shapes pass through. Errs with a message for a 400.
pub fn translate(shape: Shape, body: Option<Value>) -> Result<Option<Value>, String> {
    let (Some(Value::Object(body)), true) = (body.clone(), is_translated(shape)) else {
        return Ok(body);
    };
    let mut out = Map::new();
    let mut copy = |from: &str, to: &str| {
        if let Some(value) = body.get(from).filter(|v| !v.is_null()) {
            out.insert(to.to_string(), value.clone());
        }
    };
    match shape {
        Shape::OpenAiChat | Shape::OpenAiCompletion => {
            for key in [
                "id",
                "model",
                "temperature",
                "top_p",
                "top_k",
                "min_p",
                "repeat_penalty",
                "seed",
                "max_tokens",
            ] {
                copy(key, key);
            }
            copy("max_completion_tokens", "max_tokens");
            match body.get("n") {
                None | Some(Value::Null) => {}
                Some(n) if n.as_u64() == Some(1) => {}
                Some(n) => return Err(format!("n = {n} is not supported: one choice per request")),
            }
            // OpenAI streams only when asked, unlike tabagent's own routes.
            let stream = match body.get("stream") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(stream)) => *stream,
                Some(_) => return Err("stream must be true or false".into()),
            };
            out.insert("stream".into(), Value::Bool(stream));
            match body.get("stop") {
                None | Some(Value::Null) => {}
                Some(Value::String(stop)) => {
                    out.insert("stop".into(), json!([stop]));
                }
                Some(stop @ Value::Array(_)) => {
                    out.insert("stop".into(), stop.clone());
                }
                Some(_) => return Err("stop must be a string or a list of strings".into()),
            }
            if shape == Shape::OpenAiChat {
                out.insert("messages".into(), messages(body.get("messages"))?);
            } else {
                out.insert("prompt".into(), prompt(body.get("prompt"))?);
            }
        }
        Shape::LlamaTokenize => {
            for key in ["id", "model", "content", "add_special"] {
                copy(key, key);
            }
        }
        Shape::LlamaDetokenize => {
            for key in ["id", "model", "tokens"] {
                copy(key, key);
            }
        }
        _ => {}
    }
    Ok(Some(Value::Object(out)))
}

fn is_translated(shape: Shape) -> bool {
    matches!(
        shape,
        Shape::OpenAiChat | Shape::OpenAiCompletion | Shape::LlamaTokenize | Shape::LlamaDetokenize
    )
}

/// OpenAI messages as tabagent's: text parts joined, `developer` as `system`.
fn messages(value: Option<&Value>) -> Result<Value, String> {
    let Some(Value::Array(list)) = value else {
        return Err("messages must be a list of {role, content}".into());
    };
    let mut out = Vec::with_capacity(list.len());
    for message in list {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or("every message needs a role")?;
        let role = if role == "developer" { "system" } else { role };
        let content = match message.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(Value::Array(parts)) => parts
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
                .join(""),
            Some(_) => return Err("content must be a string or a list of parts".into()),
        };
        out.push(json!({"role": role, "content": content}));
    }
    Ok(Value::Array(out))
}

/// A completion prompt: a string, or a list holding one string.
fn prompt(value: Option<&Value>) -> Result<Value, String> {
    match value {
        Some(Value::String(text)) => Ok(Value::String(text.clone())),
        Some(Value::Array(list)) if list.len() == 1 && list[0].is_string() => Ok(list[0].clone()),
        Some(Value::Array(_)) => {
            Err("prompt must be one string (batches are not supported)".into())
        }
        _ => Err("prompt must be a string".into()),
    }
}

/// The model a translated request named, for the chunks of its stream.
pub fn requested_model(request: &crate::api::Request) -> Option<String> {
    match request {
        crate::api::Request::Chat(r) => r.model.clone(),
        crate::api::Request::Generate(r) => r.model.clone(),
        _ => None,
    }
}

/// A final reply in the route's shape, when the shape is one of these.
pub fn render(shape: Shape, reply: &Reply, context: &ReplyContext) -> Option<Answer> {
    let body = match (&reply.response, shape) {
        (Response::ChatComplete(done), Shape::OpenAiChat) => json!({
            "id": completion_id(shape, reply),
            "object": "chat.completion",
            "created": created(context),
            "model": done.model,
            "system_fingerprint": fingerprint(),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": done.text},
                "logprobs": null,
                "finish_reason": finish_reason(done.finish_reason),
            }],
            "usage": usage(&done.usage),
        }),
        (Response::ChatComplete(done), Shape::OpenAiCompletion) => json!({
            "id": completion_id(shape, reply),
            "object": "text_completion",
            "created": created(context),
            "model": done.model,
            "system_fingerprint": fingerprint(),
            "choices": [{
                "text": done.text,
                "index": 0,
                "logprobs": null,
                "finish_reason": finish_reason(done.finish_reason),
            }],
            "usage": usage(&done.usage),
        }),
        (Response::Tokens(tokens), Shape::LlamaTokenize) => json!({"tokens": tokens.tokens}),
        (Response::Text(text), Shape::LlamaDetokenize) => json!({"content": text.content}),
        _ => return None,
    };
    Some(Answer::json(body.to_string().into_bytes()))
}

/// One stream event (`data: ...\n\n`, plus `data: [DONE]` after the last)
/// in the route's shape, when the shape is OpenAI's.
pub fn event(shape: Shape, reply: &Reply, first: bool, context: &ReplyContext) -> Option<Vec<u8>> {
    if !matches!(shape, Shape::OpenAiChat | Shape::OpenAiCompletion) {
        return None;
    }
    let chat = shape == Shape::OpenAiChat;
    let head = |model: &str| {
        json!({
            "id": completion_id(shape, reply),
            "object": if chat { "chat.completion.chunk" } else { "text_completion" },
            "created": created(context),
            "model": model,
            "system_fingerprint": fingerprint(),
        })
    };
    let requested = context.model.as_deref().unwrap_or("");
    let body = match &reply.response {
        Response::ChatChunk(chunk) => {
            let mut body = head(requested);
            body["choices"] = if chat {
                let delta = if first {
                    json!({"role": "assistant", "content": chunk.delta})
                } else {
                    json!({"content": chunk.delta})
                };
                json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}])
            } else {
                json!([{"text": chunk.delta, "index": 0, "logprobs": null, "finish_reason": null}])
            };
            body
        }
        Response::ChatComplete(done) => final_chunk(head(&done.model), chat, done),
        Response::Error { error } => json!({"error": {
            "message": error.detail,
            "type": if error.status >= 500 { "server_error" } else { "invalid_request_error" },
            "code": error.status,
        }}),
        _ => return None,
    };
    let mut out = format!("data: {body}\n\n").into_bytes();
    if reply.response.is_final() {
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
    Some(out)
}

fn final_chunk(mut body: Value, chat: bool, done: &ChatComplete) -> Value {
    let reason = finish_reason(done.finish_reason);
    body["choices"] = if chat {
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason}])
    } else {
        json!([{"text": "", "index": 0, "logprobs": null, "finish_reason": reason}])
    };
    body["usage"] = usage(&done.usage);
    body
}

/// OpenAI's usage, with the reused prefix as `cached_tokens`.
fn usage(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    })
}

/// OpenAI's reasons; a cancelled generation ended by request, so `stop`.
fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::Cancelled => "stop",
        FinishReason::Length => "length",
    }
}

fn completion_id(shape: Shape, reply: &Reply) -> String {
    let prefix = if shape == Shape::OpenAiChat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    format!("{prefix}-{}", reply.id.key())
}

/// Unix seconds when the request arrived.
fn created(context: &ReplyContext) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(context.started.elapsed()).as_secs()
}

fn fingerprint() -> String {
    format!("tabagent-{}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_chat_bodies_become_chat_requests() {
        let body = json!({
            "model": "m", "stream": true, "stop": "END", "max_completion_tokens": 5,
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
            ],
        });
        let out = translate(Shape::OpenAiChat, Some(body)).unwrap().unwrap();
        assert_eq!(
            out["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(out["messages"][1]["content"], "hi there");
        assert_eq!(
            (out["stop"].clone(), out["max_tokens"].clone()),
            (json!(["END"]), json!(5))
        );
        let plain = translate(Shape::OpenAiCompletion, Some(json!({"prompt": ["x"]})))
            .unwrap()
            .unwrap();
        assert_eq!(
            (plain["prompt"].clone(), plain["stream"].clone()),
            (json!("x"), json!(false))
        );
        assert!(translate(Shape::OpenAiChat, Some(json!({"messages": [], "n": 2}))).is_err());
        assert!(translate(Shape::OpenAiCompletion, Some(json!({"prompt": ["a", "b"]}))).is_err());
    }
}
