//! Chat history: SaveMessage, ChatHistory, ListSessions, DeleteSession,
//! SearchHistory, TruncateSession, SetSessionSettings, and Responses
//! (session chat).
//!
//! The event loop never touches the database. Reads and deletes are I/O-lane
//! jobs. SaveMessage is handed straight to the store's writer thread
//! ([`Outcome::Deferred`]): checking the request and queueing it is all the
//! caller's thread does, and the writer delivers `MessageSaved` after the
//! group commit that made it durable. No pool thread waits on an fsync, so
//! the number of writes in one commit is not capped by the pool's size (with
//! a job per write, two I/O threads meant at most two writes per fsync).
//!
//! Responses is a model-lane job: it stores the user's message (durably,
//! before the model runs, so what the user typed survives a failed or killed
//! generation), builds the prompt from the session's history — the request's
//! system prompt first, then the newest turns that fit the model's context
//! with room left for the reply, oldest dropped first — runs the chat through
//! [`super::chat::ChatRunner`] (streaming `ChatChunk`s exactly like Chat), and stores the
//! reply with its model, usage and finish reason as metadata. A generation
//! that fails stores no reply. A cancelled one (StopGeneration, or the client
//! went away) stores the text generated so far, marked `"partial": true`:
//! the user saw it streamed, so the next turn's prompt includes it too.

use std::sync::Arc;

use serde_json::json;

use super::{Handler, Outcome};
use crate::api::{
    ChatHistoryRequest, ChatMessage, FinishReason, ListSessionsRequest, Reply, Response,
    ResponsesRequest, SaveMessageRequest, SavedMessage, SearchHistoryRequest, SessionRef,
    SessionSettings, Structure, TruncateSessionRequest,
};
use crate::error::ApiError;
use crate::jobs::{Job, Lane};
use crate::store::{Store, StoreSlot};

/// Stored messages read back to build a session's prompt, at most.
const HISTORY_WINDOW: u32 = 1000;
/// Tokens kept free for the reply when the request sets no `max_tokens`.
const DEFAULT_REPLY_TOKENS: u32 = 512;

impl Handler {
    pub(super) fn save_message(&self, request: SaveMessageRequest) -> Outcome {
        // Not open yet (or it failed): a job opens it, off the caller's thread.
        let Some(store) = self.store.if_open() else {
            return self.store_job(move |store| {
                let message = store.save_message(request)?;
                Ok(Response::MessageSaved(SavedMessage { message }))
            });
        };
        Outcome::Deferred(Box::new(move |id, sink| {
            store.save_message_then(request, move |result| {
                let response = match result {
                    Ok(message) => Response::MessageSaved(SavedMessage { message }),
                    Err(error) => Response::error(error.into()),
                };
                sink.deliver(Reply::new(id, response));
            });
        }))
    }

    pub(super) fn chat_history(&self, request: ChatHistoryRequest) -> Outcome {
        self.store_job(move |store| Ok(Response::History(store.chat_history(&request)?)))
    }

    pub(super) fn list_sessions(&self, request: ListSessionsRequest) -> Outcome {
        self.store_job(move |store| Ok(Response::Sessions(store.list_sessions(&request)?)))
    }

    pub(super) fn delete_session(&self, request: SessionRef) -> Outcome {
        self.store_job(move |store| {
            store.delete_session(&request.session_id)?;
            Ok(Response::SessionDeleted(request))
        })
    }

    pub(super) fn search_history(&self, request: SearchHistoryRequest) -> Outcome {
        // A query with no text is a malformed request (400); one whose text
        // has no words to search for (only punctuation) finds nothing.
        if request.query.trim().is_empty() {
            return Outcome::Reply(Response::error(ApiError::bad_request("query is empty")));
        }
        self.store_job(move |store| Ok(Response::HistoryResults(store.search_history(&request)?)))
    }

    pub(super) fn truncate_session(&self, request: TruncateSessionRequest) -> Outcome {
        self.store_job(move |store| {
            Ok(Response::SessionTruncated(
                store.truncate_session(&request)?,
            ))
        })
    }

    pub(super) fn set_session_settings(&self, request: SessionSettings) -> Outcome {
        self.store_job(move |store| {
            store.set_session_settings(&request)?;
            Ok(Response::SessionSettings(request))
        })
    }

    pub(super) fn responses(&self, request: ResponsesRequest) -> Outcome {
        if request.input.trim().is_empty() {
            return Outcome::Reply(Response::error(ApiError::invalid("input is empty")));
        }
        if let Err(error) = super::grounding::check(&request.collections) {
            return Outcome::Reply(Response::error(error));
        }
        let (slot, runner) = (Arc::clone(&self.store), self.chat_runner());
        let source = self.embedder_source(std::time::Instant::now());
        Outcome::Job(Job::new(
            self.chat_lane(request.model.as_deref()),
            move |ctx| {
                let store = slot.get()?;
                let session = request.session_id.clone();
                let model = request.model.as_deref();
                // The turns so far, oldest first (before this one is stored).
                let page = store.chat_history(&ChatHistoryRequest {
                    session_id: session.clone(),
                    limit: Some(HISTORY_WINDOW),
                    before: None,
                    order: None,
                })?;
                let mut turns: Vec<ChatMessage> = page
                    .messages
                    .into_iter()
                    .rev()
                    .filter(|m| matches!(m.role.as_str(), "system" | "user" | "assistant"))
                    .map(|m| ChatMessage::new(m.role, m.content))
                    .collect();
                store.save_message(SaveMessageRequest {
                    session_id: session.clone(),
                    role: "user".into(),
                    content: request.input.clone(),
                    metadata: None,
                })?;
                turns.push(ChatMessage::new("user", request.input.clone()));
                let mut reply_tokens = request.sampling.max_tokens.unwrap_or(DEFAULT_REPLY_TOKENS);
                if !request.collections.is_empty() {
                    // Room for the excerpts added after the fit.
                    reply_tokens += super::grounding::EXCERPT_TOKENS;
                }
                let messages =
                    fit_to_context(request.system.as_deref(), &turns, reply_tokens, |m| {
                        runner
                            .count_tokens(model, m)
                            .map(|b| (b.prompt_tokens, b.context_size))
                    })?;
                let (messages, mut citations) = if request.collections.is_empty() {
                    (messages, Vec::new())
                } else {
                    super::grounding::ground(&store, &source, &request.collections, &messages)?
                };
                let mut complete = runner.run_chat(
                    ctx,
                    model,
                    &messages,
                    &request.sampling,
                    &Structure::default(),
                    request.stream,
                )?;
                let partial = complete.finish_reason == FinishReason::Cancelled;
                super::grounding::mark_cited(&complete.text, &mut citations);
                complete.citations = citations;
                store.save_message(SaveMessageRequest {
                session_id: session.clone(),
                role: "assistant".into(),
                content: complete.text.clone(),
                metadata: Some(json!({
                    "model": complete.model,
                    "finish_reason": complete.finish_reason,
                    "usage": complete.usage,
                    "partial": partial,
                    "citations": (!complete.citations.is_empty()).then_some(&complete.citations),
                })),
            })?;
                complete.session_id = Some(session);
                Ok(Response::ChatComplete(complete))
            },
        ))
    }

    /// An I/O-lane job with the open store (or the reason there is none).
    pub(super) fn store_job(
        &self,
        work: impl FnOnce(&Store) -> Result<Response, ApiError> + Send + 'static,
    ) -> Outcome {
        let slot: Arc<StoreSlot> = Arc::clone(&self.store);
        Outcome::Job(Job::new(Lane::Io, move |_| work(&*slot.get()?)))
    }
}

/// The prompt's messages: `system` first (always kept), then the newest of
/// `turns` that fit, leaving `reply_tokens` (at most half the context) for
/// the reply. `count` gives a message list's (prompt tokens, context size).
/// The last turn (the new user message) is always kept; if even it does not
/// fit, that is the request's error.
fn fit_to_context(
    system: Option<&str>,
    turns: &[ChatMessage],
    reply_tokens: u32,
    mut count: impl FnMut(&[ChatMessage]) -> Result<(u32, u32), ApiError>,
) -> Result<Vec<ChatMessage>, ApiError> {
    let build = |dropped: usize| -> Vec<ChatMessage> {
        let head = system.map(|text| ChatMessage::new("system", text.to_string()));
        head.into_iter()
            .chain(turns[dropped..].iter().cloned())
            .collect()
    };
    let mut fits = |dropped: usize| -> Result<bool, ApiError> {
        let (prompt, context) = count(&build(dropped))?;
        Ok(prompt.saturating_add(reply_tokens.min(context / 2)) <= context)
    };
    let last = turns.len().saturating_sub(1);
    if fits(0)? {
        return Ok(build(0));
    }
    if !fits(last)? {
        return Err(ApiError::too_large(
            "the new message (with the system prompt) does not fit in the model's context",
        ));
    }
    // Dropping more turns only shrinks the prompt: binary search the fewest.
    let (mut too_few, mut enough) = (0, last);
    while enough - too_few > 1 {
        let middle = too_few + (enough - too_few) / 2;
        if fits(middle)? {
            enough = middle;
        } else {
            too_few = middle;
        }
    }
    Ok(build(enough))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns(n: usize) -> Vec<ChatMessage> {
        (0..n)
            .map(|i| {
                ChatMessage::new(
                    if i % 2 == 0 { "user" } else { "assistant" },
                    format!("turn {i}"),
                )
            })
            .collect()
    }

    /// Ten tokens a message, a context of 100.
    fn count(messages: &[ChatMessage]) -> Result<(u32, u32), ApiError> {
        Ok((messages.len() as u32 * 10, 100))
    }

    #[test]
    fn the_oldest_turns_go_first_and_the_system_prompt_stays() {
        let all = turns(20);
        let kept = fit_to_context(Some("be brief"), &all, 30, count).unwrap();
        // 100 - 30 for the reply = 70 tokens = 7 messages: system + the newest 6.
        assert_eq!(kept.len(), 7);
        assert_eq!(kept[0].role, "system");
        assert_eq!(kept[1].content, "turn 14");
        assert_eq!(kept.last().unwrap().content, "turn 19");

        let short = fit_to_context(None, &turns(3), 30, count).unwrap();
        assert_eq!(short.len(), 3, "everything fits: nothing dropped");
        // The reply budget is capped at half the context.
        let capped = fit_to_context(None, &all, 10_000, count).unwrap();
        assert_eq!(capped.len(), 5);
    }

    #[test]
    fn a_message_too_long_for_the_context_is_an_error() {
        let huge = |m: &[ChatMessage]| Ok((m.len() as u32 * 1000, 100));
        let error = fit_to_context(Some("s"), &turns(4), 10, huge).unwrap_err();
        assert_eq!(error.status, 413);
    }
}
