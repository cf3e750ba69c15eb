//! The handler's side of the upstreams (`crate::upstream`): which lane a
//! request for a model runs on, embeddings and rerank relayed, upstream
//! models in ListModels and ModelInfo, their state in SystemInfo and
//! `/metrics`, and the token estimate used to trim a history for an
//! upstream model.

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

/// The context assumed for an upstream model that reports none.
const DEFAULT_CONTEXT: u32 = 4096;

/// Tokens of `messages` by estimate: four characters a token, plus four per
/// message for the template's markers (upstreams' tokenizers are not ours).
pub fn estimate_tokens(route: &Route, messages: &[ChatMessage]) -> TokenBudget {
    let chars: usize = messages.iter().map(|m| m.content.chars().count()).sum();
    let prompt_tokens = u32::try_from(chars / 4 + 4 * messages.len() + 8).unwrap_or(u32::MAX);
    let context_size = route
        .candidates
        .first()
        .and_then(|(upstream, model)| upstream.context_of(model))
        .unwrap_or(DEFAULT_CONTEXT);
    TokenBudget {
        prompt_tokens,
        context_size,
    }
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
                context_length: upstream.context_of(remote).map(u64::from),
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
