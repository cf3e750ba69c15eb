//! The context of an upstream model and the tokens of a text, for fitting
//! a conversation to it: the `context` setting, else what the upstream
//! reports (vLLM's `max_model_len` in its model list, llama-server's
//! `/props`, a tabagent's ModelInfo, the training context), else
//! [`DEFAULT_CONTEXT`]; token counts from its `POST /tokenize` when it has
//! one (cached per text), else `None` and the caller estimates.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::client::{self, Failure};
use super::{Health, RemoteModel, Upstream};
use crate::jobs::lock;

/// The context assumed for an upstream model whose size nothing reports.
pub const DEFAULT_CONTEXT: u32 = 4096;

/// Where the context size of an upstream model comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ContextSource {
    /// The upstream's `context` setting.
    #[serde(rename = "setting")]
    Setting,
    /// Its `/v1/models` entry (vLLM's `max_model_len`).
    #[serde(rename = "models")]
    Listed,
    /// llama-server's `/props` (`default_generation_settings.n_ctx`).
    #[serde(rename = "props")]
    Props,
    /// A tabagent upstream's ModelInfo (`/api/models/{model}`).
    #[serde(rename = "model_info")]
    ModelInfo,
    /// The training context in its `/v1/models` entry (llama-server's
    /// `meta.n_ctx_train`), when nothing closer says.
    #[serde(rename = "n_ctx_train")]
    Trained,
    /// Nothing reported one: [`DEFAULT_CONTEXT`].
    #[serde(rename = "default")]
    Default,
}

/// Whether an upstream serves llama-server's `POST /tokenize`.
pub(super) const TOKENIZE_UNKNOWN: u8 = 0;
const TOKENIZE_YES: u8 = 1;
const TOKENIZE_NO: u8 = 2;

/// How long a probe that found nothing stands before a check asks again
/// (the upstream may have been restarting, or gained a model since).
const PROBE_RETRY: Duration = Duration::from_secs(300);

/// What probing found for a model, and when.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe {
    found: Option<(u32, ContextSource)>,
    at: Instant,
}

/// Token counts of texts an upstream's `/tokenize` gave, kept so that
/// fitting a history asks once per message (bounded: cleared when full).
const TOKEN_CACHE: usize = 4096;

impl Upstream {
    /// The context of `model` and where it comes from: the setting, else
    /// what the upstream reported, else [`DEFAULT_CONTEXT`].
    pub fn context_of(&self, model: &str) -> (u32, ContextSource) {
        if self.config.context > 0 {
            return (self.config.context, ContextSource::Setting);
        }
        lock(&self.state)
            .models
            .iter()
            .find(|m| m.id == model)
            .and_then(|m| m.context)
            .unwrap_or((DEFAULT_CONTEXT, ContextSource::Default))
    }

    /// What an earlier probe found for `model` (`None`: never probed, or
    /// it found nothing more than [`PROBE_RETRY`] before `now`).
    fn probed(&self, model: &str, now: Instant) -> Option<Option<(u32, ContextSource)>> {
        let state = lock(&self.state);
        let probe = state.probed.get(model)?;
        let stands = probe.found.is_some() || now.saturating_duration_since(probe.at) < PROBE_RETRY;
        stands.then_some(probe.found)
    }

    /// Records what probing found for `model` at `now`.
    fn remember_probe(&self, model: &str, found: Option<(u32, ContextSource)>, now: Instant) {
        lock(&self.state)
            .probed
            .insert(model.to_string(), Probe { found, at: now });
    }

    /// Tokens of `text` by the upstream's `/tokenize` for `model`, when it
    /// has one (asked once per text; `None` also when it cannot be reached).
    pub fn count_tokens(&self, model: &str, text: &str) -> Option<u32> {
        if self.tokenize.load(Ordering::Acquire) == TOKENIZE_NO
            || self.health() == Health::Unhealthy
        {
            return None;
        }
        let key = (model.to_string(), text.to_string());
        if let Some(n) = lock(&self.tokens).get(&key) {
            return Some(*n);
        }
        match tokenize(self, model, text) {
            Ok(n) => {
                self.tokenize.store(TOKENIZE_YES, Ordering::Release);
                let mut cache = lock(&self.tokens);
                if cache.len() >= TOKEN_CACHE {
                    cache.clear();
                }
                cache.insert(key, n);
                Some(n)
            }
            Err(Failure::Final(error)) => {
                if self.tokenize.swap(TOKENIZE_NO, Ordering::AcqRel) != TOKENIZE_NO {
                    log::info!(
                        "upstream {} has no /tokenize ({}): token counts are estimated",
                        self.name(),
                        error.detail
                    );
                }
                None
            }
            Err(Failure::Retry(_)) => None,
        }
    }
}

/// A positive token count at `pointer` of an answer.
fn count_at(value: &Value, pointer: &str) -> Option<u32> {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
}

/// llama-server's context per slot: `/props` →
/// `default_generation_settings.n_ctx`.
fn props_context(upstream: &Upstream) -> Option<u32> {
    let answer = client::get(upstream, client::root_url(upstream, "/props")).ok()?;
    let props = client::json(upstream, answer).ok()?;
    count_at(&props, "/default_generation_settings/n_ctx").or_else(|| count_at(&props, "/n_ctx"))
}

/// A tabagent upstream's context for `model`: its ModelInfo's
/// `context_length` (`/api/models/{model}`, the id's `/` as `%2F`).
fn model_info_context(upstream: &Upstream, model: &str) -> Option<u32> {
    let id: String = model
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let answer = client::get(
        upstream,
        client::root_url(upstream, &format!("/api/models/{id}")),
    )
    .ok()?;
    let info = client::json(upstream, answer).ok()?;
    count_at(&info, "/context_length")
}

/// Fills in the contexts the model list left out (or gave only as the
/// training context): llama-server's `/props`, else a tabagent's ModelInfo.
/// Each model is probed once; later checks reuse what was found (a probe
/// that found nothing is tried again after [`PROBE_RETRY`]).
pub(super) fn probe_contexts(upstream: &Upstream, models: &mut [RemoteModel], now: Instant) {
    let mut props: Option<Option<u32>> = None;
    for model in models
        .iter_mut()
        .filter(|m| !matches!(m.context, Some((_, ContextSource::Listed))))
    {
        let found = match upstream.probed(&model.id, now) {
            Some(found) => found,
            None => {
                let from_props = *props.get_or_insert_with(|| props_context(upstream));
                let found = from_props.map(|n| (n, ContextSource::Props)).or_else(|| {
                    model_info_context(upstream, &model.id).map(|n| (n, ContextSource::ModelInfo))
                });
                upstream.remember_probe(&model.id, found, now);
                found
            }
        };
        if found.is_some() {
            model.context = found;
        }
    }
}

/// Tokens of `text` by the upstream's `/tokenize` (llama-server's and
/// tabagent's `{content}` → `{tokens}`; vLLM's `{prompt}` → `{count}`).
/// A 4xx (no such route) is [`Failure::Final`].
fn tokenize(upstream: &Upstream, model: &str, text: &str) -> Result<u32, Failure> {
    let body = serde_json::json!({
        "model": model, "content": text, "prompt": text, "add_special": false
    });
    let response = client::post_to(upstream, client::root_url(upstream, "/tokenize"), &body)?;
    let answer = client::json(upstream, response).map_err(Failure::Final)?;
    answer
        .get("tokens")
        .and_then(Value::as_array)
        .map(|t| u32::try_from(t.len()).unwrap_or(u32::MAX))
        .or_else(|| {
            answer
                .get("count")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        })
        .ok_or_else(|| {
            Failure::Final(client::failed(
                upstream,
                "its /tokenize answer has no `tokens`",
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Upstreams;

    #[test]
    fn a_probe_that_found_nothing_is_tried_again_later_and_a_found_context_stands() {
        let ups = Upstreams::new(&"a=http://127.0.0.1:1/v1".parse().unwrap(), "").unwrap();
        let upstream = &ups.list[0];
        let start = Instant::now();
        // Nothing answers on port 1: the probe finds nothing.
        let mut models = vec![RemoteModel {
            id: "m".into(),
            context: None,
        }];
        probe_contexts(upstream, &mut models, start);
        assert_eq!(models[0].context, None);
        assert_eq!(
            upstream.probed("m", start + Duration::from_secs(1)),
            Some(None)
        );
        assert_eq!(
            upstream.probed("m", start + PROBE_RETRY),
            None,
            "asked again"
        );
        let found = Some((8192, ContextSource::Props));
        upstream.remember_probe("m", found, start);
        let much_later = start + PROBE_RETRY * 10;
        assert_eq!(upstream.probed("m", much_later), Some(found));
    }
}
