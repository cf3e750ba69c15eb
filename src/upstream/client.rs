//! HTTP to an upstream with ureq (blocking, on the caller's thread): its
//! agent with the upstream's timeouts, the model list, JSON POSTs, and the
//! mapping of failures to problem JSON that names the upstream but never
//! its key. A failure to connect and a 5xx answer are [`Failure::Retry`]:
//! another upstream may serve the request; a 4xx is the client's to see.

use std::time::Instant;

use serde_json::Value;
use ureq::Body;
use ureq::http::Response;

use super::settings::UpstreamConfig;
use super::{ContextSource, RemoteModel, Upstream};
use crate::error::ApiError;

/// The most bytes of a non-streamed upstream answer read (model lists,
/// embeddings, errors).
const MAX_ANSWER: u64 = 256 << 20;

/// Why a relay to one upstream failed.
#[derive(Debug)]
pub enum Failure {
    /// Unreachable, a timeout or a 5xx before any token: try another upstream.
    Retry(ApiError),
    /// The upstream refused the request itself (4xx): the client's answer.
    Final(ApiError),
}

impl Failure {
    /// The error a client sees.
    pub fn into_error(self) -> ApiError {
        match self {
            Failure::Retry(e) | Failure::Final(e) => e,
        }
    }
}

/// The agent of one upstream: its timeouts, no proxy from the environment,
/// statuses as answers (not errors).
pub fn agent(config: &UpstreamConfig) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_connect(Some(config.connect()))
        .timeout_resolve(Some(config.connect()))
        .timeout_recv_response(Some(config.answer()))
        .timeout_per_read(Some(config.answer()))
        .user_agent(concat!("tabagent/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// `base + path`, with one `/` between.
fn url(upstream: &Upstream, path: &str) -> String {
    format!("{}{path}", upstream.config.url.trim_end_matches('/'))
}

/// The server's root: the base URL without its `/v1` (where llama-server
/// and tabagent answer `/props`, `/tokenize` and `/api/...`).
pub(super) fn root_url(upstream: &Upstream, path: &str) -> String {
    let base = upstream.config.url.trim_end_matches('/');
    format!("{}{path}", base.strip_suffix("/v1").unwrap_or(base))
}

/// GETs `url` with the key; the response when its status is 2xx.
pub(super) fn get(upstream: &Upstream, url: String) -> Result<Response<Body>, Failure> {
    let mut call = upstream.agent.get(url);
    if let Some(key) = &upstream.key {
        call = call.header("Authorization", format!("Bearer {key}"));
    }
    let response = call
        .call()
        .map_err(|e| Failure::Retry(transport_error(upstream, &e)))?;
    check_status(upstream, response)
}

/// 502 naming the upstream.
pub fn failed(upstream: &Upstream, detail: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        502,
        "upstream-failed",
        "Upstream failed",
        format!("upstream {}: {detail}", upstream.name()),
    )
}

/// What a ureq error means for the client: 504 for a timeout, else 502.
fn transport_error(upstream: &Upstream, error: &ureq::Error) -> ApiError {
    log::warn!("upstream {}: {error}", upstream.name());
    match error {
        ureq::Error::Timeout(what) => ApiError::new(
            504,
            "upstream-timeout",
            "Upstream timed out",
            format!(
                "upstream {} did not answer in time ({what}; timeout {} s)",
                upstream.name(),
                upstream.config.answer().as_secs()
            ),
        ),
        _ => failed(
            upstream,
            "could not reach it (the server log has the detail)",
        ),
    }
}

/// POSTs `body` as JSON to `path` under the base URL; the response when
/// its status is 2xx.
pub fn post(upstream: &Upstream, path: &str, body: &Value) -> Result<Response<Body>, Failure> {
    post_to(upstream, url(upstream, path), body)
}

/// POSTs `body` as JSON to `url`.
pub(super) fn post_to(
    upstream: &Upstream,
    url: String,
    body: &Value,
) -> Result<Response<Body>, Failure> {
    let mut call = upstream
        .agent
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream");
    if let Some(key) = &upstream.key {
        call = call.header("Authorization", format!("Bearer {key}"));
    }
    let bytes = body.to_string().into_bytes();
    let response = call
        .send(&bytes[..])
        .map_err(|e| Failure::Retry(transport_error(upstream, &e)))?;
    check_status(upstream, response)
}

/// A 2xx response as is; anything else as the failure it means.
fn check_status(upstream: &Upstream, response: Response<Body>) -> Result<Response<Body>, Failure> {
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(response);
    }
    let text = response
        .into_body()
        .with_config()
        .limit(64 << 10)
        .read_to_string()
        .unwrap_or_default();
    let said = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.pointer("/detail"))
                .or_else(|| v.get("error"))
                .map(|m| m.as_str().map_or_else(|| m.to_string(), String::from))
        })
        .unwrap_or_else(|| text.chars().take(300).collect());
    let detail = format!("upstream {} answered {status}: {said}", upstream.name());
    if status >= 500 || status == 429 || status == 408 {
        let mut error = ApiError::new(502, "upstream-failed", "Upstream failed", detail);
        if status == 429 {
            error = ApiError::busy(error.detail, 1);
        }
        Err(Failure::Retry(error))
    } else {
        let status = if status == 401 || status == 403 {
            502
        } else {
            status
        };
        Err(Failure::Final(ApiError::new(
            status,
            "upstream-refused",
            "Upstream refused the request",
            detail,
        )))
    }
}

/// Reads a whole JSON answer.
pub fn json(upstream: &Upstream, response: Response<Body>) -> Result<Value, ApiError> {
    response
        .into_body()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_vec()
        .map_err(|e| failed(upstream, format!("its answer could not be read ({e})")))
        .and_then(|bytes| {
            serde_json::from_slice(&bytes)
                .map_err(|e| failed(upstream, format!("its answer is not JSON ({e})")))
        })
}

/// GETs its `/models` (the health check) and reads the list.
pub fn models(upstream: &Upstream) -> Result<Vec<RemoteModel>, ApiError> {
    let response = get(upstream, url(upstream, "/models")).map_err(Failure::into_error)?;
    let list = json(upstream, response)?;
    let data = list
        .get("data")
        .or_else(|| list.get("models"))
        .and_then(Value::as_array)
        .ok_or_else(|| failed(upstream, "its /models answer has no `data` list"))?;
    Ok(data
        .iter()
        .filter_map(|m| {
            let id = m
                .get("id")
                .or_else(|| m.get("model"))?
                .as_str()?
                .to_string();
            let size = |pointer: &str| {
                m.pointer(pointer)
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n > 0)
            };
            let context = ["/max_model_len", "/meta/n_ctx", "/context_length"]
                .into_iter()
                .find_map(size)
                .map(|n| (n, ContextSource::Listed))
                .or_else(|| size("/meta/n_ctx_train").map(|n| (n, ContextSource::Trained)));
            Some(RemoteModel { id, context })
        })
        .collect())
}

/// One health check: the model list, recorded as the upstream's state.
pub fn check(upstream: &Upstream, now: Instant) -> bool {
    match models(upstream) {
        Ok(mut models) => {
            super::context::probe_contexts(upstream, &mut models, now);
            upstream.mark_up(Some(models), now);
            true
        }
        Err(error) => {
            upstream.mark_down(&error.detail, now);
            false
        }
    }
}
