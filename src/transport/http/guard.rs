//! Who may call the HTTP server, checked before any handler runs: the Host
//! header (DNS rebinding), the Origin (CORS: the extensions `install-host`
//! and `allow-extension` recorded, and `cors_origins`), the API key, and
//! the rate of WebRTC offers per client address.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tiny_http::Request as HttpRequest;

use super::reply::Answer;
use crate::auth::KeySource;
use crate::error::ApiError;
use crate::jobs::lock;

/// The window the offer rate is counted over.
const OFFER_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked before idle ones are forgotten.
const OFFER_ADDRESSES: usize = 4096;

/// The checks, with what they need.
pub struct Guard {
    bound: IpAddr,
    allowed_hosts: Vec<String>,
    cors_origins: Vec<String>,
    /// The data dir's recorded extension ids, read again on a miss (so
    /// `allow-extension` works without a restart).
    data_dir: PathBuf,
    extensions: Mutex<Vec<String>>,
    /// None: `require_key = false`.
    key: Option<Arc<KeySource>>,
    offers_per_minute: u32,
    offers: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl Guard {
    /// A guard for a server bound to `bound`.
    pub fn new(
        bound: SocketAddr,
        allowed_hosts: Vec<String>,
        cors_origins: Vec<String>,
        data_dir: PathBuf,
        key: Option<Arc<KeySource>>,
        offers_per_minute: u32,
    ) -> Guard {
        let extensions = Mutex::new(crate::host::allowed_extensions(&data_dir));
        Guard {
            bound: bound.ip(),
            allowed_hosts,
            cors_origins,
            data_dir,
            extensions,
            key,
            offers_per_minute,
            offers: Mutex::default(),
        }
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
        let Some(source) = &self.key else {
            return true;
        };
        let given = header_value(request, "Authorization")
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .or_else(|| header_value(request, "x-api-key").map(str::trim));
        given.is_some_and(|given| source.current(now).matches(given.as_bytes()))
    }

    /// Counts an offer from `ip`; 429 with the seconds until the oldest of
    /// the last `offers_per_minute` leaves the window.
    pub fn count_offer(&self, ip: IpAddr, now: Instant) -> Result<(), ApiError> {
        let limit = self.offers_per_minute as usize;
        if limit == 0 {
            return Ok(());
        }
        let mut offers = lock(&self.offers);
        if offers.len() >= OFFER_ADDRESSES {
            offers.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < OFFER_WINDOW)
            });
        }
        let times = offers.entry(ip).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= OFFER_WINDOW)
        {
            times.pop_front();
        }
        if times.len() >= limit {
            // Non-empty: limit > 0 and len >= limit.
            let oldest = *times.front().expect("an offer in the window");
            let wait = OFFER_WINDOW.saturating_sub(now.saturating_duration_since(oldest));
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u32;
            return Err(ApiError {
                retry_after: Some(seconds),
                ..ApiError::new(
                    429,
                    "rate-limited",
                    "Too many requests",
                    format!(
                        "{limit} WebRTC offers a minute are allowed from one address \
                         (webrtc_offers_per_minute); retry in {seconds} s"
                    ),
                )
            });
        }
        times.push_back(now);
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eleventh_offer_in_a_minute_waits() {
        let guard = Guard::new(
            "127.0.0.1:0".parse().unwrap(),
            vec![],
            vec![],
            PathBuf::from("/nonexistent"),
            None,
            10,
        );
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for i in 0..10 {
            guard.count_offer(a, t0 + Duration::from_secs(i)).unwrap();
        }
        let error = guard
            .count_offer(a, t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!((error.status, error.retry_after), (429, Some(50)));
        guard.count_offer(b, t0 + Duration::from_secs(10)).unwrap();
        guard.count_offer(a, t0 + Duration::from_secs(60)).unwrap();
    }
}
