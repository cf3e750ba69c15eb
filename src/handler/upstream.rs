//! The handler's side of the upstreams (`crate::upstream`): which lane a
//! request for a model runs on, embeddings and rerank relayed, upstream
//! models in ListModels and ModelInfo, their state in SystemInfo and
//! `/metrics`, and the token counts used to trim a history for an upstream
//! model (its `/tokenize` when it has one, else an estimate).

use std::sync::Arc;
use std::time::Instant;

use super::{Handler, Outcome};
use crate::api::{
    ChatMessage, EmbeddingList, ModelDetails, ModelFormat, ModelKind, RerankResults, Response,
};
use crate::error::ApiError;
use crate::jobs::{Job, Lane};
use crate::metrics::{Exposition, Kind};
use crate::upstream::{Health, Route, Upstreams, relay};

use super::chat::TokenBudget;
use super::embeddings::Encoding;

/// One `tabagent_upstream_*` family: name, help, kind and its value per upstream.
type Family = (
    &'static str,
    &'static str,
    Kind,
    fn(&crate::upstream::UpstreamState) -> f64,
);

/// Tokens a message's template markers take, by estimate (the upstream's
/// template is not ours to render).
const MESSAGE_OVERHEAD: u32 = 4;
/// Tokens the template adds around the whole conversation, by estimate.
const PROMPT_OVERHEAD: u32 = 8;

/// Tokens of `messages` for the route's first upstream, and its context.
/// Each message's text is counted by the upstream's `/tokenize` when it has
/// one, else estimated at four characters a token; each message adds
/// [`MESSAGE_OVERHEAD`] and the conversation [`PROMPT_OVERHEAD`].
pub fn count_tokens(route: &Route, messages: &[ChatMessage]) -> TokenBudget {
    let Some((upstream, model)) = route.candidates.first() else {
        return TokenBudget {
            prompt_tokens: estimate(messages),
            context_size: crate::upstream::DEFAULT_CONTEXT,
        };
    };
    let mut prompt_tokens = PROMPT_OVERHEAD;
    for message in messages {
        let text = message.content.as_str();
        let tokens = upstream
            .count_tokens(model, text)
            .unwrap_or_else(|| estimate_text(text));
        prompt_tokens = prompt_tokens.saturating_add(tokens.saturating_add(MESSAGE_OVERHEAD));
    }
    TokenBudget {
        prompt_tokens,
        context_size: upstream.context_of(model).0,
    }
}

/// Whether `messages` and the reply's room surely fit the route's upstream
/// model without counting: a token never covers less than a byte (byte-level
/// BPE, SentencePiece with byte fallback), so bytes bound the tokens.
pub fn surely_fits(route: &Route, messages: &[ChatMessage], reply_tokens: u32) -> bool {
    let Some((upstream, model)) = route.candidates.first() else {
        return false;
    };
    let context = upstream.context_of(model).0;
    let bound = messages.iter().fold(u64::from(PROMPT_OVERHEAD), |sum, m| {
        sum + m.content.len() as u64 + u64::from(MESSAGE_OVERHEAD)
    });
    bound + u64::from(reply_tokens.min(context / 2)) <= u64::from(context)
}

/// Four characters a token.
fn estimate_text(text: &str) -> u32 {
    u32::try_from(text.chars().count() / 4).unwrap_or(u32::MAX)
}

/// The estimate of a whole conversation.
fn estimate(messages: &[ChatMessage]) -> u32 {
    messages.iter().fold(PROMPT_OVERHEAD, |sum, m| {
        sum.saturating_add(estimate_text(&m.content).saturating_add(MESSAGE_OVERHEAD))
    })
}

impl Handler {
    /// Installs the upstreams (once, at start) and starts their health checks.
    pub fn set_upstreams(&self, upstreams: Arc<Upstreams>) {
        upstreams.start();
        if self.upstreams.set(upstreams).is_err() {
            log::warn!("the upstreams were already set");
        }
    }

    /// The upstreams (none until [`Handler::set_upstreams`]).
    pub(super) fn upstreams(&self) -> Arc<Upstreams> {
        self.upstreams.get().cloned().unwrap_or_default()
    }

    /// Where a request for `model` goes: an upstream's route, or `None` (local).
    fn relay_route(&self, model: Option<&str>) -> Option<Result<Route, ApiError>> {
        let upstreams = self.upstreams.get()?;
        upstreams.route(model, |id| self.models.find(id).is_ok())
    }

    /// The lane of a chat or generation for `model`: relayed ones wait on
    /// the network on threads of their own, never on the model lane.
    pub(super) fn chat_lane(&self, model: Option<&str>) -> Lane {
        match self.relay_route(model) {
            Some(Ok(_)) => Lane::Relay,
            _ => Lane::Generate,
        }
    }

    /// Embeddings for an upstream model, relayed; the texts back for a local one.
    pub(super) fn relay_embeddings(
        &self,
        model: Option<&str>,
        texts: Vec<String>,
        encoding: Encoding,
    ) -> Result<Outcome, Vec<String>> {
        let route = match self.relay_route(model) {
            None => return Err(texts),
            Some(Ok(route)) => route,
            Some(Err(error)) => return Ok(Outcome::Reply(Response::error(error))),
        };
        Ok(Outcome::Job(Job::new(Lane::Relay, move |_| {
            let (vectors, tokens) = relay::embed(&route, &texts)?;
            Ok(Response::EmbeddingList(EmbeddingList {
                model: route.requested.clone(),
                dimensions: vectors.first().map_or(0, Vec::len),
                prompt_tokens: tokens,
                embeddings: vectors.iter().map(|v| encoding.encode(v)).collect(),
            }))
        })))
    }

    /// Rerank on an upstream model, relayed; `None` for a local one.
    pub(super) fn relay_rerank(
        &self,
        model: Option<&str>,
        query: &str,
        documents: &[String],
        top_n: Option<u32>,
    ) -> Option<Outcome> {
        let route = match self.relay_route(model)? {
            Ok(route) => route,
            Err(error) => return Some(Outcome::Reply(Response::error(error))),
        };
        let (query, documents) = (query.to_string(), documents.to_vec());
        Some(Outcome::Job(Job::new(Lane::Relay, move |_| {
            let results = relay::rerank(&route, &query, &documents, top_n)?;
            Ok(Response::RerankResults(RerankResults {
                model: route.requested.clone(),
                method: "upstream".into(),
                results,
            }))
        })))
    }

    /// ModelInfo of an upstream model; `None` for a local one.
    pub(super) fn upstream_model_info(&self, model: &str) -> Option<Outcome> {
        let route = match self.relay_route(Some(model))? {
            Ok(route) => route,
            Err(error) => return Some(Outcome::Reply(Response::error(error))),
        };
        let (upstream, remote) = route.candidates.first()?;
        let context = upstream.context_of(remote);
        Some(Outcome::Reply(Response::ModelDetails(Box::new(
            ModelDetails {
                model: route.requested.clone(),
                format: ModelFormat::Upstream,
                kind: if remote.contains("embed") {
                    ModelKind::Embedding
                } else {
                    ModelKind::Chat
                },
                size_bytes: 0,
                loaded: upstream.health() == Health::Healthy,
                path: format!("{}#{remote}", upstream.display_url()),
                architecture: None,
                context_length: Some(u64::from(context.0)),
                context_source: Some(context.1),
                parameter_count: None,
                quantization: None,
                has_chat_template: None,
                chat_template: None,
                finetune: None,
                instruct: None,
                parallel: None,
                embedding_dimensions: None,
                upstream: Some(upstream.name().to_string()),
                upstreams: route
                    .candidates
                    .iter()
                    .map(|(u, _)| u.name().to_string())
                    .collect(),
            },
        ))))
    }

    /// The upstreams' state for SystemInfo.
    pub(super) fn upstream_states(&self) -> Vec<crate::upstream::UpstreamState> {
        self.upstreams
            .get()
            .map(|u| u.states(Instant::now()))
            .unwrap_or_default()
    }

    /// `tabagent_upstream_*`: health, requests in flight, relayed and failed.
    pub(super) fn upstream_metrics(&self, out: &mut Exposition) {
        let states = self.upstream_states();
        if states.is_empty() {
            return;
        }
        let families: [Family; 5] = [
            (
                "tabagent_upstream_up",
                "Whether the upstream answered its last check or request (1) or not (0).",
                Kind::Gauge,
                |s| f64::from(u8::from(s.health == Health::Healthy)),
            ),
            (
                "tabagent_upstream_models",
                "Models the upstream offers.",
                Kind::Gauge,
                |s| s.models as f64,
            ),
            (
                "tabagent_upstream_in_flight",
                "Requests relayed to the upstream now.",
                Kind::Gauge,
                |s| s.in_flight as f64,
            ),
            (
                "tabagent_upstream_relayed_total",
                "Requests relayed to the upstream (each failover attempt counts).",
                Kind::Counter,
                |s| s.relayed as f64,
            ),
            (
                "tabagent_upstream_failures_total",
                "Relayed requests that failed at the upstream.",
                Kind::Counter,
                |s| s.failed as f64,
            ),
        ];
        for (name, help, kind, value) in families {
            out.family(name, help, kind);
            for state in &states {
                out.sample(name, &[("upstream", state.name.as_str())], value(state));
            }
        }
    }
}
