//! Who may call the HTTP server, checked before any handler runs: the Host
//! header (DNS rebinding), the Origin (CORS: the extensions `install-host`
//! and `allow-extension` recorded, and `cors_origins`) and the API key.
//! The origins and the key can change while serving (SIGHUP). Rates are
//! limited on the serve path ([`crate::ratelimit`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde_json::json;
use tiny_http::Request as HttpRequest;

use super::reply::Answer;
use crate::auth::KeySource;
use crate::error::ApiError;
use crate::jobs::lock;

/// The checks, with what they need.
pub struct Guard {
    bound: IpAddr,
    allowed_hosts: Vec<String>,
    cors_origins: RwLock<Vec<String>>,
    /// The data dir's recorded extension ids, read again on a miss (so
    /// `allow-extension` works without a restart).
    data_dir: PathBuf,
    extensions: Mutex<Vec<String>>,
    /// None: `require_key = false`.
    key: RwLock<Option<Arc<KeySource>>>,
}

impl Guard {
    /// A guard for a server bound to `bound`.
    pub fn new(
        bound: SocketAddr,
        allowed_hosts: Vec<String>,
        cors_origins: Vec<String>,
        data_dir: PathBuf,
        key: Option<Arc<KeySource>>,
    ) -> Guard {
        let extensions = Mutex::new(crate::host::allowed_extensions(&data_dir));
        Guard {
            bound: bound.ip(),
            allowed_hosts,
            cors_origins: RwLock::new(cors_origins),
            data_dir,
            extensions,
            key: RwLock::new(key),
        }
    }

    /// Replaces the configured origins (SIGHUP).
    pub fn set_cors_origins(&self, origins: Vec<String>) {
        *self.cors_origins.write().unwrap_or_else(|p| p.into_inner()) = origins;
    }

    /// Replaces the key clients must send; None: no key (SIGHUP).
    pub fn set_key(&self, key: Option<Arc<KeySource>>) {
        *self.key.write().unwrap_or_else(|p| p.into_inner()) = key;
    }

    /// DNS-rebinding protection: a browser tricked into calling us through
    /// another name sends that name in Host.
    pub fn check_host(&self, request: &HttpRequest) -> Result<(), ApiError> {
        let Some(host) = header_value(request, "Host") else {
            return Ok(());
        };
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        let bound = self.bound.to_string();
        let allowed = ["localhost", "127.0.0.1", "::1", bound.as_str()].contains(&name)
            || self
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name));
        if allowed {
            Ok(())
        } else {
            Err(ApiError::new(
                403,
                "host-not-allowed",
                "Host not allowed",
                format!("Host {host:?} is not this server"),
            ))
        }
    }

    /// CORS: the recorded extensions and the configured origins may call;
    /// other pages and extensions may not.
    pub fn check_origin(&self, request: &HttpRequest) -> Result<Option<String>, ApiError> {
        let Some(origin) = header_value(request, "Origin") else {
            return Ok(None);
        };
        let configured = self
            .cors_origins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin));
        if origin.is_ascii() && (configured || self.is_allowed_extension(origin)) {
            Ok(Some(origin.to_string()))
        } else {
            let hint = if origin.starts_with("chrome-extension://") {
                " (`tabagent allow-extension ID` lets an extension in)"
            } else {
                ""
            };
            Err(ApiError::new(
                403,
                "origin-not-allowed",
                "Origin not allowed",
                format!("origin {origin} may not call this server{hint}"),
            ))
        }
    }

    fn is_allowed_extension(&self, origin: &str) -> bool {
        let Some(id) = origin
            .strip_prefix("chrome-extension://")
            .map(|id| id.trim_end_matches('/'))
        else {
            return false;
        };
        if crate::host::check_extension_id(id).is_err() {
            return false;
        }
        let mut known = lock(&self.extensions);
        if known.iter().any(|k| k == id) {
            return true;
        }
        *known = crate::host::allowed_extensions(&self.data_dir);
        known.iter().any(|k| k == id)
    }

    /// Whether the request carries the key (`Authorization: Bearer` or
    /// `x-api-key`); always true when no key is required.
    pub fn has_key(&self, request: &HttpRequest, now: Instant) -> bool {
        let key = self.key.read().unwrap_or_else(|p| p.into_inner());
        let Some(source) = key.as_ref() else {
            return true;
        };
        let given = header_value(request, "Authorization")
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .or_else(|| header_value(request, "x-api-key").map(str::trim));
        given.is_some_and(|given| source.matches(now, given.as_bytes()))
    }
}

/// The 401 of a request without the key: OpenAI's error shape under `/v1`
/// (what OpenAI clients read), problem JSON elsewhere.
pub fn unauthorized(path: &str) -> Answer {
    let message = "this server needs its API key: send `Authorization: Bearer KEY` or \
                   `x-api-key: KEY` (`tabagent token` prints it)";
    let answer = if path.starts_with("/v1/") {
        let body = json!({"error": {
            "message": message,
            "type": "invalid_request_error",
            "param": null,
            "code": "invalid_api_key",
        }});
        Answer::raw(401, "application/json", body.to_string().into_bytes())
    } else {
        Answer::problem(&ApiError::new(
            401,
            "invalid_api_key",
            "Unauthorized",
            message,
        ))
    };
    answer.with_header("WWW-Authenticate", "Bearer")
}

/// The value of header `name`, if the request has one.
pub fn header_value<'a>(request: &'a HttpRequest, name: &'static str) -> Option<&'a str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}
