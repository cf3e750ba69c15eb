//! One local generation of a chat or a raw prompt: `n` choices from one
//! reading of the prompt, each shaped into text, reasoning and tool calls,
//! streamed as `ChatChunk`s while they come, and recorded in the metrics.

use std::time::{Duration, Instant};

use super::chat_output::{OutputPlan, OutputShaper};
use crate::api::{ChatChoice, ChatChunk, ChatComplete, FinishReason, Response, Sampling, Usage};
use crate::engine::manager::Resident;
use crate::engine::text::{SamplingConfig, TextModel};
use crate::error::ApiError;
use crate::jobs::JobContext;

/// Generates `n` choices (the prompt read once) and shapes each; the first
/// is the reply, the others its `choices`.
#[allow(clippy::too_many_arguments)] // one call site each in run_chat and run_generate_body
pub(super) fn generate_choices(
    ctx: &JobContext,
    resident: &Resident,
    text: &dyn TextModel,
    prompt: &str,
    sampling: &SamplingConfig,
    n: u32,
    plan: &OutputPlan,
    stream: bool,
) -> Result<ChatComplete, ApiError> {
    let cancel = ctx.cancel_flag();
    let n = n.max(1) as usize;
    let mut chunks = 0usize;
    let mut shapers: Vec<OutputShaper> = (0..n)
        .map(|_| OutputShaper::new(plan, prompt, sampling.logprobs.is_some()))
        .collect();
    let mut emit = |index: usize, chunk: Option<ChatChunk>| match chunk {
        Some(mut chunk) if stream => {
            chunks += 1;
            chunk.index = index as u32;
            ctx.emit(Response::ChatChunk(chunk))
        }
        _ => ctx.client_present(),
    };
    let started = Instant::now();
    let mut first_token = None;
    let generations = if n == 1 {
        text.generate(prompt, sampling, &cancel, &mut |piece| {
            first_token.get_or_insert_with(Instant::now);
            let chunk = shapers[0].push(piece);
            emit(0, chunk)
        })
        .map(|generation| vec![generation])
    } else {
        // Each choice its own seed.
        let choices: Vec<SamplingConfig> = (0..n)
            .map(|i| SamplingConfig {
                seed: sampling.seed.wrapping_add(i as u32),
                ..sampling.clone()
            })
            .collect();
        text.generate_choices(prompt, &choices, &cancel, &mut |i, piece| {
            first_token.get_or_insert_with(Instant::now);
            let chunk = shapers.get_mut(i).and_then(|s| s.push(piece));
            emit(i, chunk)
        })
    };
    let ended = Instant::now();
    resident.touch(ended);
    let generations = generations?;
    // One generation for the metrics: the prompt is read once for all choices.
    crate::metrics::GENERATION.record(
        generations.first().map_or(0, |g| g.prompt_tokens),
        generations.iter().map(|g| g.completion_tokens).sum(),
        first_token.map(|first| first.saturating_duration_since(started)),
        first_token.map_or(Duration::ZERO, |first| {
            ended.saturating_duration_since(first)
        }),
    );
    for (i, (generation, shaper)) in generations.iter().zip(&mut shapers).enumerate() {
        if generation.finish_reason != FinishReason::Cancelled {
            let chunk = shaper.finish();
            emit(i, chunk);
        }
    }
    if stream && chunks == 0 {
        // A streaming client always gets its stream, even for an empty reply.
        ctx.emit(Response::ChatChunk(ChatChunk::text(String::new())));
    }
    let first = generations
        .first()
        .ok_or_else(|| ApiError::internal("the model generated no choice"))?;
    log::debug!(
        "{}: {} prompt tokens ({} reused), {} generated, {:?}",
        resident.file.id,
        first.prompt_tokens,
        first.reused_tokens,
        first.completion_tokens,
        first.finish_reason
    );
    let mut choices: Vec<ChatChoice> = generations
        .iter()
        .zip(shapers)
        .enumerate()
        .map(|(index, (generation, shaper))| {
            let (text, reasoning, tool_calls, logprobs) = shaper.into_parts();
            let finish_reason = match generation.finish_reason {
                FinishReason::Stop if !tool_calls.is_empty() => FinishReason::ToolCalls,
                other => other,
            };
            ChatChoice {
                index: index as u32,
                text,
                reasoning,
                tool_calls,
                logprobs,
                finish_reason,
            }
        })
        .collect();
    let reply = choices.remove(0);
    let completion_tokens = generations.iter().map(|g| g.completion_tokens).sum();
    Ok(ChatComplete {
        model: resident.file.id.clone(),
        text: reply.text,
        usage: Usage {
            prompt_tokens: first.prompt_tokens,
            completion_tokens,
            total_tokens: first.prompt_tokens + completion_tokens,
            cached_tokens: first.reused_tokens,
        },
        finish_reason: reply.finish_reason,
        session_id: None,
        upstream: None,
        fallback_from: None,
        citations: Vec::new(),
        reasoning: reply.reasoning,
        tool_calls: reply.tool_calls,
        logprobs: reply.logprobs,
        trimmed_messages: 0,
        choices,
    })
}

/// A request's `n`: 1 when left out; at least 1 (the model bounds it by its slots).
pub(super) fn choice_count(sampling: &Sampling) -> Result<u32, ApiError> {
    match sampling.n {
        None => Ok(1),
        Some(0) => Err(ApiError::out_of_range(
            "n",
            0,
            "1..=the model's parallel slots",
        )),
        Some(n) => Ok(n),
    }
}
