//! OpenAI's and llama.cpp server's reply shapes: `POST /v1/chat/completions`,
//! `POST /v1/completions`, `POST /tokenize` and `POST /detokenize`.
//!
//! Requests are translated into tabagent's own request objects before they
//! are parsed (`openai_request.rs`), so the handler never sees these shapes;
//! final replies ([`render`]) and stream events ([`event`]) are translated
//! back here. Streams end with `data: [DONE]`, as OpenAI's clients expect.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::reply::{Answer, ReplyContext};
use super::routes::Shape;
use crate::api::{ChatChunk, FinishReason, Reply, Response, TokenLogprob, ToolCall, Usage};

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
            "id": completion_id(shape, context),
            "object": "chat.completion",
            "created": created(context),
            "model": done.model,
            "system_fingerprint": fingerprint(),
            "choices": std::iter::once(json!({
                "index": 0,
                "message": message(&done.text, &done.tool_calls, done.reasoning.as_deref()),
                "logprobs": chat_logprobs(&done.logprobs),
                "finish_reason": finish_reason(done.finish_reason),
            }))
            .chain(done.choices.iter().map(|c| json!({
                "index": c.index,
                "message": message(&c.text, &c.tool_calls, c.reasoning.as_deref()),
                "logprobs": chat_logprobs(&c.logprobs),
                "finish_reason": finish_reason(c.finish_reason),
            })))
            .collect::<Vec<Value>>(),
            "usage": usage(&done.usage),
            "trimmed_messages": done.trimmed_messages,
        }),
        (Response::ChatComplete(done), Shape::OpenAiCompletion) => json!({
            "id": completion_id(shape, context),
            "object": "text_completion",
            "created": created(context),
            "model": done.model,
            "system_fingerprint": fingerprint(),
            "choices": std::iter::once(json!({
                "text": done.text,
                "index": 0,
                "logprobs": completion_logprobs(&done.logprobs),
                "finish_reason": finish_reason(done.finish_reason),
            }))
            .chain(done.choices.iter().map(|c| json!({
                "text": c.text,
                "index": c.index,
                "logprobs": completion_logprobs(&c.logprobs),
                "finish_reason": finish_reason(c.finish_reason),
            })))
            .collect::<Vec<Value>>(),
            "usage": usage(&done.usage),
        }),
        (Response::Tokens(tokens), Shape::LlamaTokenize) => json!({"tokens": tokens.tokens}),
        (Response::Text(text), Shape::LlamaDetokenize) => json!({"content": text.content}),
        _ => return None,
    };
    Some(Answer::json(body.to_string().into_bytes()))
}

/// The assistant's message: its text (null when it only called tools), its
/// tool calls and its reasoning.
fn message(text: &str, tool_calls: &[ToolCall], reasoning: Option<&str>) -> Value {
    let mut message = json!({"role": "assistant", "content": text});
    if !tool_calls.is_empty() {
        if text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = json!(tool_calls);
    }
    if let Some(reasoning) = reasoning {
        message["reasoning_content"] = json!(reasoning);
    }
    message
}

/// One stream event (`data: ...\n\n`, plus `data: [DONE]` after the last)
/// in the route's shape, when the shape is OpenAI's.
pub fn event(shape: Shape, reply: &Reply, first: bool, context: &ReplyContext) -> Option<Vec<u8>> {
    if !matches!(shape, Shape::OpenAiChat | Shape::OpenAiCompletion) {
        return None;
    }
    let chat = shape == Shape::OpenAiChat;
    let head = |model: &str| {
        let mut head = json!({
            "id": completion_id(shape, context),
            "object": if chat { "chat.completion.chunk" } else { "text_completion" },
            "created": created(context),
            "model": model,
            "system_fingerprint": fingerprint(),
        });
        if context.wire.include_usage {
            head["usage"] = Value::Null;
        }
        head
    };
    let requested = context.model.as_deref().unwrap_or("");
    let mut events = Vec::with_capacity(2);
    match &reply.response {
        Response::ChatChunk(chunk) => {
            let mut body = head(requested);
            body["choices"] = if chat {
                json!([{
                    "index": chunk.index, "delta": delta(chunk, first),
                    "logprobs": chat_logprobs(&chunk.logprobs), "finish_reason": null,
                }])
            } else {
                json!([{
                    "text": chunk.delta, "index": chunk.index,
                    "logprobs": completion_logprobs(&chunk.logprobs), "finish_reason": null,
                }])
            };
            events.push(body);
        }
        Response::ChatComplete(done) => {
            let reason = finish_reason(done.finish_reason);
            let mut body = head(&done.model);
            if chat && done.trimmed_messages > 0 {
                body["trimmed_messages"] = json!(done.trimmed_messages);
            }
            let reasons = std::iter::once((0, reason)).chain(
                done.choices
                    .iter()
                    .map(|c| (c.index, finish_reason(c.finish_reason))),
            );
            body["choices"] = reasons
                .map(|(index, reason)| {
                    if chat {
                        json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": reason})
                    } else {
                        json!({"text": "", "index": index, "logprobs": null, "finish_reason": reason})
                    }
                })
                .collect::<Vec<Value>>()
                .into();
            if context.wire.include_usage {
                // OpenAI's order: the finish reason, then usage alone.
                events.push(body);
                let mut tail = head(&done.model);
                tail["choices"] = json!([]);
                tail["usage"] = usage(&done.usage);
                events.push(tail);
            } else {
                body["usage"] = usage(&done.usage);
                events.push(body);
            }
        }
        Response::Error { error } => events.push(json!({"error": {
            "message": error.detail,
            "type": if error.status >= 500 { "server_error" } else { "invalid_request_error" },
            "code": error.status,
        }})),
        _ => return None,
    };
    let mut out = Vec::new();
    for body in events {
        out.extend_from_slice(format!("data: {body}\n\n").as_bytes());
    }
    if reply.response.is_final() {
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
    Some(out)
}

/// A chat chunk's delta: the role first, then text, reasoning and tool-call
/// pieces (OpenAI's shape: id, type and name only on a call's first piece).
fn delta(chunk: &ChatChunk, first: bool) -> Value {
    let mut delta = Map::new();
    if first {
        delta.insert("role".into(), json!("assistant"));
    }
    if !chunk.delta.is_empty() || (chunk.reasoning.is_empty() && chunk.tool_calls.is_empty()) {
        delta.insert("content".into(), json!(chunk.delta));
    }
    if !chunk.reasoning.is_empty() {
        delta.insert("reasoning_content".into(), json!(chunk.reasoning));
    }
    if !chunk.tool_calls.is_empty() {
        let calls: Vec<Value> = chunk
            .tool_calls
            .iter()
            .map(|call| {
                let mut function = json!({"arguments": call.arguments});
                let mut piece = json!({"index": call.index});
                if let Some(id) = &call.id {
                    piece["id"] = json!(id);
                    piece["type"] = json!("function");
                }
                if let Some(name) = &call.name {
                    function["name"] = json!(name);
                }
                piece["function"] = function;
                piece
            })
            .collect();
        delta.insert("tool_calls".into(), Value::Array(calls));
    }
    Value::Object(delta)
}

/// Chat's logprobs: `{content: [{token, logprob, bytes, top_logprobs}]}`.
fn chat_logprobs(logprobs: &[TokenLogprob]) -> Value {
    if logprobs.is_empty() {
        return Value::Null;
    }
    json!({"content": logprobs, "refusal": null})
}

/// The legacy completions' logprobs: parallel lists and a map per token.
fn completion_logprobs(logprobs: &[TokenLogprob]) -> Value {
    if logprobs.is_empty() {
        return Value::Null;
    }
    let mut offset = 0;
    let mut offsets = Vec::with_capacity(logprobs.len());
    for t in logprobs {
        offsets.push(offset);
        offset += t.token.len();
    }
    json!({
        "tokens": logprobs.iter().map(|t| &t.token).collect::<Vec<_>>(),
        "token_logprobs": logprobs.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": logprobs
            .iter()
            .map(|t| {
                t.top_logprobs
                    .iter()
                    .map(|a| (a.token.clone(), json!(a.logprob)))
                    .collect::<Map<_, _>>()
            })
            .collect::<Vec<_>>(),
        "text_offset": offsets,
    })
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
        FinishReason::ToolCalls => "tool_calls",
    }
}

fn completion_id(shape: Shape, context: &ReplyContext) -> String {
    let prefix = if shape == Shape::OpenAiChat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    format!("{prefix}-{}", context.completion_key)
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
