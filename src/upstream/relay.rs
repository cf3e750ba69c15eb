//! Relaying one request to the upstreams of its [`Route`]: chat and
//! completions streamed (the upstream's SSE parsed as it arrives and
//! re-emitted as `ChatChunk`s through the job, so every transport gets them
//! the way it gets local generation), embeddings and rerank answered whole.
//!
//! Candidates are tried in the route's order: an upstream at its cap is
//! skipped, a connect failure, a timeout or a 5xx before the first token
//! moves on to the next, a failure after it ends the stream with an error.
//! Every choice of a request with `n` > 1 is passed on with its index.
//! A stop or a client gone ends the read, and dropping the response closes
//! the upstream's connection, which stops its generation. When no upstream
//! could answer and a fallback model is set, the caller runs that local
//! model instead (`Relayed::Fallback`).

use std::io::BufReader;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client::{self, Failure};
use super::sse::{self, Assembled, Event};
use super::{Health, Route, Upstream};
use crate::api::{ChatChoice, ChatChunk, ChatComplete, FinishReason, RerankHit, Response, Usage};
use crate::error::ApiError;
use crate::jobs::JobContext;

pub use super::body::{chat_body, completion_body, drop_messages};

/// How a relay ended.
pub enum Relayed<T> {
    /// An upstream answered.
    Done(T),
    /// None could; the local model named should answer instead.
    Fallback(String),
}

/// What a relayed generation needs besides its route.
pub struct Generation {
    /// The OpenAI request body (its `model` and `stream` are set per upstream).
    pub body: Value,
    /// Chat (`/chat/completions`) or a raw prompt (`/completions`).
    pub chat: bool,
    /// Whether the client wants chunks.
    pub stream: bool,
}

/// Streams a chat or completion from the route's upstreams.
pub fn generate(
    ctx: &JobContext,
    route: &Route,
    generation: Generation,
    fallback: Option<&str>,
) -> Result<Relayed<ChatComplete>, ApiError> {
    if let Some(local) = fallback
        && route
            .candidates
            .iter()
            .all(|(u, _)| u.health() == Health::Unhealthy)
    {
        log::info!(
            "no upstream of {} is healthy: falling back to {local}",
            route.requested
        );
        return Ok(Relayed::Fallback(local.to_string()));
    }
    let path = if generation.chat {
        "/chat/completions"
    } else {
        "/completions"
    };
    let mut last = None;
    for (upstream, remote) in &route.candidates {
        if ctx.is_cancelled() {
            break;
        }
        let Some(_slot) = upstream.try_acquire() else {
            last = Some(at_cap(upstream));
            continue;
        };
        upstream
            .relayed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut body = generation.body.clone();
        if let Value::Object(fields) = &mut body {
            fields.insert("model".into(), json!(remote));
            fields.insert("stream".into(), json!(true));
            fields.insert("stream_options".into(), json!({"include_usage": true}));
        }
        let started = Instant::now();
        let outcome = client::post(upstream, path, &body)
            .and_then(|response| read_stream(ctx, upstream, response, route, &generation, started));
        match outcome {
            Ok(done) => return Ok(Relayed::Done(done)),
            Err(Failure::Retry(error)) => {
                upstream
                    .failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                upstream.mark_down(&error.detail, Instant::now());
                log::warn!("{}; trying the next upstream", error.detail);
                last = Some(error);
            }
            Err(Failure::Final(error)) => {
                upstream
                    .failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(error);
            }
        }
    }
    match (fallback, last) {
        (Some(local), _) => {
            log::info!(
                "no upstream answered {}: falling back to {local}",
                route.requested
            );
            Ok(Relayed::Fallback(local.to_string()))
        }
        (None, Some(error)) => Err(error),
        (None, None) => Err(ApiError::new(
            499,
            "cancelled",
            "Cancelled",
            "the request was stopped",
        )),
    }
}

/// 503 for an upstream at its cap.
fn at_cap(upstream: &Upstream) -> ApiError {
    ApiError::busy(
        format!(
            "upstream {} has {} requests running (its max_concurrent); try again shortly",
            upstream.name(),
            upstream.config.cap()
        ),
        1,
    )
}

/// Reads one upstream's event stream into chunks and the final reply.
fn read_stream(
    ctx: &JobContext,
    upstream: &Upstream,
    response: ureq::http::Response<ureq::Body>,
    route: &Route,
    generation: &Generation,
    started: Instant,
) -> Result<ChatComplete, Failure> {
    let mut reader = BufReader::new(response.into_body().into_reader());
    let mut line = String::new();
    let mut all = Assembled::default();
    let mut emitted = 0usize;
    let mut first_token: Option<Instant> = None;
    let mut cancelled = false;
    let broken = |emitted: usize, error: ApiError| {
        if emitted == 0 {
            Failure::Retry(error)
        } else {
            upstream.mark_down(&error.detail, Instant::now());
            Failure::Final(error)
        }
    };
    loop {
        if ctx.is_cancelled() {
            cancelled = true;
            break;
        }
        match sse::next_event(&mut reader, &mut line) {
            Ok(Event::Data(value)) => match all.push(&value, generation.chat) {
                Ok(chunks) => {
                    for chunk in chunks {
                        first_token.get_or_insert_with(Instant::now);
                        emitted += 1;
                        let present = if generation.stream {
                            ctx.emit(Response::ChatChunk(chunk))
                        } else {
                            ctx.client_present()
                        };
                        if !present {
                            cancelled = true;
                        }
                    }
                    if cancelled {
                        break;
                    }
                }
                Err(message) => {
                    let error = client::failed(upstream, format!("it sent an error: {message}"));
                    return Err(broken(emitted, error));
                }
            },
            Ok(Event::Done) => break,
            Ok(Event::End) if all.finished() => break,
            Ok(Event::End) => {
                let error = client::failed(
                    upstream,
                    "it closed the stream before the generation finished",
                );
                return Err(broken(emitted, error));
            }
            Err(e) => {
                let error = if e.kind() == std::io::ErrorKind::TimedOut
                    || e.to_string().contains("timeout")
                {
                    ApiError::new(
                        504,
                        "upstream-timeout",
                        "Upstream timed out",
                        format!(
                            "upstream {} sent nothing for {} s mid-stream",
                            upstream.name(),
                            upstream.config.answer().as_secs()
                        ),
                    )
                } else {
                    log::warn!("upstream {}: reading its stream: {e}", upstream.name());
                    client::failed(
                        upstream,
                        "the stream broke off (the server log has the detail)",
                    )
                };
                return Err(broken(emitted, error));
            }
        }
    }
    // Dropping the reader closes the connection: the upstream sees its
    // client gone and stops generating.
    drop(reader);
    let ended = Instant::now();
    if generation.stream && emitted == 0 && !cancelled {
        ctx.emit(Response::ChatChunk(ChatChunk::text(String::new())));
    }
    let usage = all.usage.unwrap_or_default();
    crate::metrics::GENERATION.record(
        usage.prompt_tokens,
        usage.completion_tokens,
        first_token.map(|first| first.saturating_duration_since(started)),
        first_token.map_or(Duration::ZERO, |first| {
            ended.saturating_duration_since(first)
        }),
    );
    let mut choices: Vec<ChatChoice> = all
        .choices
        .into_iter()
        .enumerate()
        .map(|(index, choice)| {
            let tool_calls: Vec<_> = choice
                .tool_calls
                .into_iter()
                .filter(|c| !c.function.name.is_empty())
                .collect();
            let finish_reason = match (cancelled, choice.finish) {
                (true, _) => FinishReason::Cancelled,
                (false, Some(FinishReason::Stop)) if !tool_calls.is_empty() => {
                    FinishReason::ToolCalls
                }
                (false, reason) => reason.unwrap_or(FinishReason::Stop),
            };
            ChatChoice {
                index: index as u32,
                text: choice.text,
                reasoning: (!choice.reasoning.is_empty()).then_some(choice.reasoning),
                tool_calls,
                logprobs: Vec::new(),
                finish_reason,
            }
        })
        .collect();
    if choices.is_empty() {
        choices.push(ChatChoice {
            index: 0,
            text: String::new(),
            reasoning: None,
            tool_calls: Vec::new(),
            logprobs: Vec::new(),
            finish_reason: if cancelled {
                FinishReason::Cancelled
            } else {
                FinishReason::Stop
            },
        });
    }
    // The first choice is the reply; the others (n > 1) its `choices`.
    let reply = choices.remove(0);
    Ok(ChatComplete {
        model: route.requested.clone(),
        text: reply.text,
        reasoning: reply.reasoning,
        tool_calls: reply.tool_calls,
        logprobs: Vec::new(),
        trimmed_messages: 0,
        usage: Usage {
            total_tokens: usage.prompt_tokens + usage.completion_tokens,
            ..usage
        },
        finish_reason: reply.finish_reason,
        session_id: None,
        upstream: Some(upstream.name().to_string()),
        fallback_from: None,
        citations: Vec::new(),
        choices,
    })
}

/// POSTs a JSON request (embeddings, rerank) to the route's upstreams in
/// turn; the first answer, with the upstream's name.
fn call(route: &Route, path: &str, body: &Value) -> Result<(Value, String), ApiError> {
    let mut last = None;
    for (upstream, remote) in &route.candidates {
        let Some(_slot) = upstream.try_acquire() else {
            last = Some(at_cap(upstream));
            continue;
        };
        upstream
            .relayed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut body = body.clone();
        body["model"] = json!(remote);
        let answer = client::post(upstream, path, &body)
            .and_then(|r| client::json(upstream, r).map_err(Failure::Retry));
        match answer {
            Ok(value) => return Ok((value, upstream.name().to_string())),
            Err(Failure::Retry(error)) => {
                upstream
                    .failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                upstream.mark_down(&error.detail, Instant::now());
                last = Some(error);
            }
            Err(Failure::Final(error)) => return Err(error),
        }
    }
    Err(last.unwrap_or_else(|| ApiError::internal("a route without upstreams")))
}

/// Embeddings from an upstream: the vectors in input order and the tokens read.
pub fn embed(route: &Route, texts: &[String]) -> Result<(Vec<Vec<f32>>, u32), ApiError> {
    let (answer, name) = call(
        route,
        "/embeddings",
        &json!({"input": texts, "encoding_format": "float"}),
    )?;
    let bad = || {
        ApiError::new(
            502,
            "upstream-failed",
            "Upstream failed",
            format!("upstream {name}: its embeddings answer has no `data` list of vectors"),
        )
    };
    let data = answer
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(bad)?;
    let mut vectors: Vec<(u64, Vec<f32>)> = data
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let index = item
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(i as u64);
            let vector = item.get("embedding").and_then(Value::as_array).map(|v| {
                v.iter()
                    .filter_map(Value::as_f64)
                    .map(|x| x as f32)
                    .collect()
            });
            vector.map(|v| (index, v)).ok_or_else(bad)
        })
        .collect::<Result<_, _>>()?;
    vectors.sort_by_key(|(i, _)| *i);
    if vectors.len() != texts.len() {
        return Err(bad());
    }
    let tokens = answer
        .pointer("/usage/prompt_tokens")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    Ok((vectors.into_iter().map(|(_, v)| v).collect(), tokens))
}

/// Rerank on an upstream (llama-server's, Jina's and tabagent's shape).
pub fn rerank(
    route: &Route,
    query: &str,
    documents: &[String],
    top_n: Option<u32>,
) -> Result<Vec<RerankHit>, ApiError> {
    let mut body = json!({"query": query, "documents": documents});
    if let Some(n) = top_n {
        body["top_n"] = json!(n);
    }
    let (answer, name) = call(route, "/rerank", &body)?;
    let results = answer
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::new(
                502,
                "upstream-failed",
                "Upstream failed",
                format!("upstream {name}: its rerank answer has no `results` list"),
            )
        })?;
    let mut hits: Vec<RerankHit> = results
        .iter()
        .filter_map(|r| {
            let index = usize::try_from(r.get("index")?.as_u64()?).ok()?;
            let score = r
                .get("relevance_score")
                .or_else(|| r.get("score"))?
                .as_f64()? as f32;
            (index < documents.len()).then_some(RerankHit {
                index,
                relevance_score: score,
            })
        })
        .collect();
    hits.sort_by(|a, b| b.relevance_score.total_cmp(&a.relevance_score));
    if let Some(n) = top_n {
        hits.truncate(n as usize);
    }
    Ok(hits)
}
