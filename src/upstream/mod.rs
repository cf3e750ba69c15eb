//! OpenAI-compatible upstreams (llama-server, Ollama, vLLM, another
//! tabagent) as model sources: tabagent becomes the browser's gateway,
//! relaying requests for their models while its own models stay local.
//!
//! [`Upstreams`] holds each configured server's state: the models it lists
//! (fetched at start and on every health check, with backoff on failure),
//! its health, and the requests relayed to it now (at most its cap). A model
//! is offered as `name/model`, which pins that upstream, and as the bare
//! `model` when no local model has that id, which goes to the healthy
//! upstream with the highest priority, then the least busy, and fails over
//! to the next one before the first token. The relay itself is in
//! [`relay`]; it runs on threads of its own (the jobs' relay lane), never on
//! the model or I/O lanes.

mod body;
mod client;
mod context;
mod health;
pub mod relay;
mod settings;
mod sse;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::api::{ModelEntry, ModelFormat, ModelKind};
use crate::error::ApiError;
use crate::jobs::lock;

pub use context::{ContextSource, DEFAULT_CONTEXT};
pub use settings::{UpstreamConfig, UpstreamList};

/// Whether an upstream answered its last check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not checked yet.
    Unknown,
    /// The last check or request succeeded.
    Healthy,
    /// The last check or request failed to reach it.
    Unhealthy,
}

/// A model an upstream lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteModel {
    /// Its id on the upstream.
    pub id: String,
    /// The context it reports, and where it said so.
    pub context: Option<(u32, ContextSource)>,
}

#[derive(Debug)]
struct State {
    health: Health,
    models: Vec<RemoteModel>,
    /// The last failure, in words safe to show (never the key).
    error: Option<String>,
    /// Consecutive failed checks (for the backoff).
    failures: u32,
    checked: Option<Instant>,
    /// Contexts found by probing (`/props`, ModelInfo) per model id, so a
    /// model is probed once, not at every check.
    probed: HashMap<String, context::Probe>,
}

/// One upstream server and its live state.
pub struct Upstream {
    /// Its settings.
    pub config: UpstreamConfig,
    key: Option<String>,
    agent: ureq::Agent,
    state: Mutex<State>,
    in_flight: AtomicUsize,
    relayed: AtomicU64,
    failed: AtomicU64,
    /// Whether its `/tokenize` answers (`TOKENIZE_*`).
    tokenize: AtomicU8,
    /// (model, text) -> tokens, from its `/tokenize`.
    tokens: Mutex<HashMap<(String, String), u32>>,
}

/// A relay slot of an upstream, given back when dropped.
pub struct Slot(Arc<Upstream>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Upstream {
    fn new(config: UpstreamConfig) -> Upstream {
        let key = config.key(|name| std::env::var(name).ok());
        Upstream {
            agent: client::agent(&config),
            key,
            config,
            state: Mutex::new(State {
                health: Health::Unknown,
                models: Vec::new(),
                error: None,
                failures: 0,
                checked: None,
                probed: HashMap::new(),
            }),
            in_flight: AtomicUsize::new(0),
            relayed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            tokenize: AtomicU8::new(context::TOKENIZE_UNKNOWN),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Its health now.
    pub fn health(&self) -> Health {
        lock(&self.state).health
    }

    /// Takes a relay slot, unless its cap is reached.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let cap = self.config.cap();
        let mut now = self.in_flight.load(Ordering::Acquire);
        loop {
            if now >= cap {
                return None;
            }
            match self
                .in_flight
                .compare_exchange(now, now + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(Slot(Arc::clone(self))),
                Err(actual) => now = actual,
            }
        }
    }

    /// Records a check's or a request's success.
    fn mark_up(&self, models: Option<Vec<RemoteModel>>, now: Instant) {
        let mut state = lock(&self.state);
        if state.health != Health::Healthy {
            log::info!("upstream {} is healthy", self.name());
        }
        state.health = Health::Healthy;
        state.error = None;
        state.failures = 0;
        state.checked = Some(now);
        if let Some(models) = models {
            state.models = models;
        }
    }

    /// Records a failure to reach it (or a 5xx).
    pub fn mark_down(&self, error: &str, now: Instant) {
        let mut state = lock(&self.state);
        if state.health != Health::Unhealthy {
            log::warn!("upstream {} is unhealthy: {error}", self.name());
        }
        state.health = Health::Unhealthy;
        state.error = Some(error.to_string());
        state.failures = state.failures.saturating_add(1);
        state.checked = Some(now);
    }

    /// Whether it offers `model` (listed, or in its allowlist).
    fn offers(&self, model: &str) -> bool {
        let allowed =
            self.config.models.is_empty() || self.config.models.iter().any(|m| m == model);
        allowed
            && (self.config.models.iter().any(|m| m == model)
                || lock(&self.state).models.iter().any(|m| m.id == model))
    }

    /// Its models, as offered (the allowlist applied).
    fn models(&self) -> Vec<String> {
        let listed: Vec<String> = lock(&self.state)
            .models
            .iter()
            .map(|m| m.id.clone())
            .collect();
        if self.config.models.is_empty() {
            listed
        } else {
            self.config.models.clone()
        }
    }

    /// Its base URL without any user info (never a secret).
    pub fn display_url(&self) -> String {
        match self.config.url.parse::<ureq::http::Uri>() {
            Ok(uri) => {
                let host = uri.host().unwrap_or_default();
                let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
                format!(
                    "{}://{host}{port}{}",
                    uri.scheme_str().unwrap_or("http"),
                    uri.path().trim_end_matches('/')
                )
            }
            Err(_) => String::new(),
        }
    }
}

/// Where a request for an upstream model goes.
pub struct Route {
    /// The id the client asked for (`name/model` or `model`).
    pub requested: String,
    /// The upstreams to try in order, each with the model's id there.
    pub candidates: Vec<(Arc<Upstream>, String)>,
}

/// One upstream's state, as `/api/system` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamState {
    /// Its name.
    pub name: String,
    /// Its base URL (without user info).
    pub url: String,
    /// `unknown`, `healthy` or `unhealthy`.
    pub health: Health,
    /// Its priority.
    pub priority: i32,
    /// Models it offers.
    pub models: usize,
    /// Requests relayed to it now.
    pub in_flight: usize,
    /// Its cap on those.
    pub max_concurrent: usize,
    /// Requests relayed since start.
    pub relayed: u64,
    /// Relayed requests that failed.
    pub failed: u64,
    /// The last failure (never the key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds since the last check or request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_seconds_ago: Option<u64>,
}

/// Every configured upstream.
#[derive(Default)]
pub struct Upstreams {
    list: Vec<Arc<Upstream>>,
    /// The local chat model that answers when no upstream can.
    fallback: Option<String>,
}

impl Upstreams {
    /// The upstreams of the config (checked) and the fallback model.
    pub fn new(list: &UpstreamList, fallback: &str) -> Result<Upstreams, String> {
        list.check()?;
        Ok(Upstreams {
            list: list
                .0
                .iter()
                .cloned()
                .map(|c| Arc::new(Upstream::new(c)))
                .collect(),
            fallback: Some(fallback.trim().to_string()).filter(|f| !f.is_empty()),
        })
    }

    /// Whether any is configured.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The local model to fall back to, if set.
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// Starts each upstream's health checks (the first one now).
    pub fn start(&self) {
        for upstream in &self.list {
            health::spawn(Arc::clone(upstream));
        }
    }

    /// Where a request for `model` goes: `None` for a local model (or one no
    /// upstream offers); `is_local` says whether a local model has an id.
    pub fn route(
        &self,
        model: Option<&str>,
        is_local: impl Fn(&str) -> bool,
    ) -> Option<Result<Route, ApiError>> {
        let model = model.filter(|m| !m.is_empty())?;
        if self.list.is_empty() {
            return None;
        }
        if let Some((name, rest)) = model.split_once('/')
            && let Some(upstream) = self.list.iter().find(|u| u.name() == name)
        {
            let allowed = upstream.config.models.is_empty()
                || upstream.config.models.iter().any(|m| m == rest);
            if !allowed || rest.is_empty() {
                return Some(Err(ApiError::not_found(format!(
                    "upstream {name} does not offer a model {rest:?}"
                ))));
            }
            return Some(Ok(Route {
                requested: model.to_string(),
                candidates: vec![(Arc::clone(upstream), rest.to_string())],
            }));
        }
        let mut serving: Vec<&Arc<Upstream>> =
            self.list.iter().filter(|u| u.offers(model)).collect();
        if serving.is_empty() || is_local(model) {
            return None;
        }
        // Healthy (or not yet checked) first, then by priority, then least busy.
        serving.sort_by_key(|u| {
            (
                u.health() == Health::Unhealthy,
                -i64::from(u.config.priority),
                u.in_flight.load(Ordering::Acquire),
            )
        });
        Some(Ok(Route {
            requested: model.to_string(),
            candidates: serving
                .into_iter()
                .map(|u| (Arc::clone(u), model.to_string()))
                .collect(),
        }))
    }

    /// Whether `model` would be relayed (no disk access for pinned ids).
    pub fn is_relayed(&self, model: Option<&str>, is_local: impl Fn(&str) -> bool) -> bool {
        matches!(self.route(model, is_local), Some(Ok(_)))
    }

    /// The upstreams' models as ListModels shows them: `name/model` always,
    /// the bare `model` once, unless `is_local` says a local model has it.
    pub fn entries(&self, is_local: impl Fn(&str) -> bool) -> Vec<ModelEntry> {
        let mut out: Vec<ModelEntry> = Vec::new();
        let mut bare: Vec<ModelEntry> = Vec::new();
        let mut ordered: Vec<&Arc<Upstream>> = self.list.iter().collect();
        ordered.sort_by_key(|u| -i64::from(u.config.priority));
        for upstream in ordered {
            for model in upstream.models() {
                let entry = |id: String| ModelEntry {
                    id,
                    format: ModelFormat::Upstream,
                    kind: kind_of(&model),
                    size_bytes: 0,
                    loaded: upstream.health() == Health::Healthy,
                    upstream: Some(upstream.name().to_string()),
                };
                out.push(entry(format!("{}/{model}", upstream.name())));
                if !is_local(&model) && !bare.iter().any(|e| e.id == model) {
                    bare.push(entry(model.clone()));
                }
            }
        }
        out.extend(bare);
        out
    }

    /// Every upstream's state (`/api/system`, `/metrics`).
    pub fn states(&self, now: Instant) -> Vec<UpstreamState> {
        self.list
            .iter()
            .map(|u| {
                let state = lock(&u.state);
                UpstreamState {
                    name: u.name().to_string(),
                    url: u.display_url(),
                    health: state.health,
                    priority: u.config.priority,
                    models: if u.config.models.is_empty() {
                        state.models.len()
                    } else {
                        u.config.models.len()
                    },
                    in_flight: u.in_flight.load(Ordering::Acquire),
                    max_concurrent: u.config.cap(),
                    relayed: u.relayed.load(Ordering::Relaxed),
                    failed: u.failed.load(Ordering::Relaxed),
                    error: state.error.clone(),
                    checked_seconds_ago: state
                        .checked
                        .map(|t| now.saturating_duration_since(t).as_secs()),
                }
            })
            .collect()
    }
}

/// 422 for a local-only operation (load, delete, size) on an upstream model.
pub fn not_local(id: &str) -> ApiError {
    ApiError::invalid(format!(
        "{id} is served by an upstream: it has no file here to load, size or delete"
    ))
}

/// What an upstream model is for, from its id (the OpenAI list does not say):
/// embedding and rerank models name themselves so by convention.
fn kind_of(model: &str) -> ModelKind {
    let lower = model.to_ascii_lowercase();
    if lower.contains("rerank") {
        ModelKind::Rerank
    } else if lower.contains("embed") || lower.contains("minilm") {
        ModelKind::Embedding
    } else {
        ModelKind::Chat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams(text: &str) -> Upstreams {
        Upstreams::new(&text.parse().unwrap(), "").unwrap()
    }

    #[test]
    fn bare_ids_go_to_the_best_upstream_and_prefixed_ones_are_pinned() {
        let ups = upstreams("a=http://127.0.0.1:1/v1,b=http://127.0.0.1:2/v1");
        let now = Instant::now();
        let model = |id: &str| RemoteModel {
            id: id.into(),
            context: None,
        };
        ups.list[0].mark_up(Some(vec![model("m"), model("only-a")]), now);
        ups.list[1].mark_up(Some(vec![model("m")]), now);
        let route = ups.route(Some("m"), |_| false).unwrap().unwrap();
        assert_eq!(route.candidates.len(), 2, "a bare id fails over");
        ups.list[0].mark_down("refused", now);
        let route = ups.route(Some("m"), |_| false).unwrap().unwrap();
        assert_eq!(route.candidates[0].0.name(), "b", "the healthy one first");
        let pinned = ups.route(Some("a/m"), |_| false).unwrap().unwrap();
        assert_eq!(pinned.candidates.len(), 1);
        assert_eq!(pinned.candidates[0].1, "m");
        assert!(ups.route(Some("m"), |id| id == "m").is_none(), "local wins");
        assert!(ups.route(Some("other"), |_| false).is_none());
        assert!(ups.route(None, |_| false).is_none());
        let ids: Vec<String> = ups.entries(|_| false).into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["a/m", "a/only-a", "b/m", "m", "only-a"]);
        let one = Arc::clone(&ups.list[1]);
        let slots: Vec<Slot> = (0..4).filter_map(|_| one.try_acquire()).collect();
        assert_eq!(slots.len(), 4);
        assert!(one.try_acquire().is_none(), "the cap holds");
        drop(slots);
        assert!(one.try_acquire().is_some());
    }
}
