//! A chat for an upstream model, relayed (`crate::upstream::relay`): the
//! conversation is fitted to the upstream model's context as a local one is
//! (`chat_context`), counted by the upstream's `/tokenize` or an estimate
//! (`super::upstream::count_tokens`), then sent as the client's OpenAI body
//! (less the messages dropped) or as one built from tabagent's fields; the
//! local `upstream_fallback` model answers when no upstream can.

use super::chat::ChatRunner;
use super::chat_context::{Fitted, fit_conversation};
use crate::api::{ChatComplete, ChatMessage, Sampling, Structure};
use crate::error::ApiError;
use crate::jobs::JobContext;
use crate::upstream::Route;
use crate::upstream::relay::{self, Generation, Relayed};

impl ChatRunner {
    /// Relays a generation, or runs the local fallback model with `local`.
    pub(super) fn relay(
        &self,
        ctx: &JobContext,
        route: &Route,
        generation: Generation,
        local: impl FnOnce(&str) -> Result<ChatComplete, ApiError>,
    ) -> Result<ChatComplete, ApiError> {
        match relay::generate(ctx, route, generation, self.upstreams.fallback())? {
            Relayed::Done(complete) => Ok(complete),
            Relayed::Fallback(model) => {
                let mut complete = local(&model)?;
                complete.fallback_from = Some(route.requested.clone());
                Ok(complete)
            }
        }
    }

    /// Relays a chat: the conversation fitted to the upstream model's
    /// context first (as a local one is), then sent as `body` (the client's
    /// OpenAI body, less the messages dropped) or as one built from the
    /// fields.
    #[allow(clippy::too_many_arguments)] // run_chat_body's, with the route
    pub(super) fn relay_chat(
        &self,
        ctx: &JobContext,
        route: &Route,
        messages: &[ChatMessage],
        sampling: &Sampling,
        structure: &Structure,
        stream: bool,
        body: Option<serde_json::Value>,
    ) -> Result<ChatComplete, ApiError> {
        if messages.is_empty() {
            return Err(ApiError::invalid("messages is empty"));
        }
        let reply_tokens = sampling.max_tokens.unwrap_or(self.defaults.max_tokens);
        let fitted = if super::upstream::surely_fits(route, messages, reply_tokens) {
            // No need to ask the upstream's /tokenize.
            Fitted {
                messages: messages.to_vec(),
                dropped: 0,
            }
        } else {
            fit_conversation(
                messages,
                reply_tokens,
                structure.truncate != Some(false),
                |m| {
                    let budget = super::upstream::count_tokens(route, m);
                    Ok((budget.prompt_tokens, budget.context_size))
                },
            )?
        };
        let body = match body {
            Some(mut body) => {
                if let Some(fields) = body.as_object_mut() {
                    // Handled here; an upstream may not know the field.
                    fields.remove("truncate");
                    if fitted.dropped > 0 {
                        let kept = relay::drop_messages(
                            fields.get("messages"),
                            messages,
                            fitted.dropped as usize,
                        )
                        .unwrap_or_else(|| serde_json::json!(fitted.messages));
                        fields.insert("messages".into(), kept);
                    }
                }
                body
            }
            None => relay::chat_body(&fitted.messages, sampling, structure),
        };
        let generation = Generation {
            body,
            chat: true,
            stream,
        };
        let mut complete = self.relay(ctx, route, generation, |local| {
            self.run_chat(ctx, Some(local), messages, sampling, structure, stream)
        })?;
        if complete.fallback_from.is_none() {
            complete.trimmed_messages = fitted.dropped;
        }
        Ok(complete)
    }
}
