//! The GET behind a pull, made so that a pull cannot be turned against this
//! machine or its network.
//!
//! - `https` only; plain `http` and loopback addresses only for the first
//!   URL, and only when `allow_loopback_pulls` is set (tests).
//! - Redirects are followed here, by hand (ureq's own are off), at most
//!   [`MAX_REDIRECTS`], each to `https` only.
//! - Every address is checked after resolution, not by name: the resolver
//!   ureq connects through is ours, so it keeps only public addresses and
//!   ureq connects to exactly those; a DNS answer cannot change between the
//!   check and the connection. Loopback, private, link-local, shared (CGNAT),
//!   multicast, broadcast, documentation and unspecified addresses are never
//!   dialled, nor IPv6 forms that embed one.
//! - No proxy from the environment (it would be dialled instead of the
//!   checked address).
//! - Connect, answer and read deadlines, and an overall one.
//! - What a client sees of a failure does not tell a refused connection
//!   from a timeout or an unknown name (no port scanning through pulls); the
//!   log has the detail.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::http::{Response, Uri};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::{Body, config::Config as UreqConfig};

use crate::config::Config;
use crate::error::ApiError;
use crate::jobs::lock;

/// Redirects followed before a pull gives up.
pub const MAX_REDIRECTS: usize = 5;

/// What a pull may fetch and how long it may wait.
#[derive(Debug, Clone)]
pub struct PullPolicy {
    /// Whether the first URL may be on loopback (plain http included).
    pub allow_loopback: bool,
    /// The largest file, in bytes.
    pub max_bytes: u64,
    /// How long to wait to connect, for the answer, and for each read.
    pub timeout: Duration,
    /// How long one pull may take in all.
    pub deadline: Option<Duration>,
}

impl Default for PullPolicy {
    fn default() -> PullPolicy {
        PullPolicy {
            allow_loopback: false,
            max_bytes: 64 << 30,
            timeout: Duration::from_secs(30),
            deadline: None,
        }
    }
}

impl PullPolicy {
    /// The `*_pull*` settings.
    pub fn from_config(config: &Config) -> PullPolicy {
        PullPolicy {
            allow_loopback: config.allow_loopback_pulls,
            max_bytes: config.max_pull_bytes,
            timeout: Duration::from_secs(config.pull_timeout.0.max(1)),
            deadline: (config.pull_deadline.0 > 0)
                .then(|| Duration::from_secs(config.pull_deadline.0)),
        }
    }
}

/// GETs `url` with `headers`, following redirects as the policy allows; the
/// response is the first that is not a redirect.
/// `started` is when the pull began (for the overall deadline).
pub fn get(
    policy: &PullPolicy,
    url: &str,
    headers: &[(&str, String)],
    started: Instant,
) -> Result<Response<Body>, ApiError> {
    let mut url = url.to_string();
    for hop in 0..=MAX_REDIRECTS {
        let uri: Uri = url
            .parse()
            .map_err(|_| ApiError::invalid(format!("{url:?} is not a URL")))?;
        let first = hop == 0;
        let loopback_ok = first && policy.allow_loopback;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if loopback_ok => {}
            _ if first => {
                return Err(ApiError::invalid(format!(
                    "{url}: only https:// URLs are pulled (plain http only from loopback, \
                     with allow_loopback_pulls)"
                )));
            }
            _ => {
                return Err(refused(format!(
                    "it redirected to {url}, which is not https"
                )));
            }
        }
        let host = uri.host().unwrap_or_default().to_string();
        let resolver = Checked {
            loopback_ok,
            refused: Arc::default(),
        };
        let refusal = Arc::clone(&resolver.refused);
        let agent = ureq::Agent::with_parts(
            agent_config(policy, started)?,
            DefaultConnector::new(),
            resolver,
        );
        let mut call = agent.get(&url);
        for (name, value) in headers {
            call = call.header(*name, value);
        }
        let response = match call.call() {
            Ok(response) => response,
            Err(e) => {
                if let Some(ip) = *lock(&refusal) {
                    return Err(refused(format!(
                        "{host} is at {ip}, which is not a public address"
                    )));
                }
                log::warn!("cannot fetch {url}: {e}");
                return Err(unreachable(&host));
            }
        };
        let status = response.status().as_u16();
        if !matches!(status, 301 | 302 | 303 | 307 | 308) {
            return Ok(response);
        }
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| failed(format!("{host} answered {status} without a Location")))?;
        let next = join(&uri, location)
            .ok_or_else(|| failed(format!("{host} redirected to a bad Location")))?;
        log::info!("{url} redirects to {next}");
        url = next;
    }
    Err(failed(format!(
        "more than {MAX_REDIRECTS} redirects from {url}"
    )))
}

fn agent_config(policy: &PullPolicy, started: Instant) -> Result<UreqConfig, ApiError> {
    let global = match policy.deadline {
        Some(deadline) => {
            let left = deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(failed("the pull ran out of time (pull_deadline)"));
            }
            Some(left)
        }
        None => None,
    };
    Ok(ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(global)
        .timeout_resolve(Some(policy.timeout))
        .timeout_connect(Some(policy.timeout))
        .timeout_recv_response(Some(policy.timeout))
        .timeout_per_read(Some(policy.timeout))
        .user_agent(concat!("tabagent/", env!("CARGO_PKG_VERSION")))
        .build())
}

/// 502: the other side failed (its words are fine to pass on).
pub fn failed(detail: impl Into<String>) -> ApiError {
    ApiError::new(502, "download-failed", "Download failed", detail)
}

/// 403: a destination this server will not fetch from.
fn refused(why: String) -> ApiError {
    ApiError::new(
        403,
        "pull-refused",
        "Pull refused",
        format!("refused to pull: {why}"),
    )
}

/// The one message for every network failure: no name, refused, timed out,
/// reset and TLS errors all read the same.
fn unreachable(host: &str) -> ApiError {
    failed(format!(
        "could not fetch the model from {host}: no usable answer (the server log has the detail)"
    ))
}

/// The resolver ureq connects through: the system's answer, minus every
/// address a pull may not reach.
#[derive(Debug)]
struct Checked {
    loopback_ok: bool,
    /// The first address refused, when none was left.
    refused: Arc<Mutex<Option<IpAddr>>>,
}

impl Resolver for Checked {
    fn resolve(
        &self,
        uri: &Uri,
        config: &UreqConfig,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let all = DefaultResolver::default().resolve(uri, config, timeout)?;
        let mut kept = self.empty();
        for addr in all.iter() {
            let ip = addr.ip();
            if is_public(ip) || (self.loopback_ok && ip.is_loopback()) {
                kept.push(*addr);
            } else {
                log::warn!("a pull of {uri} may not connect to {ip}");
                lock(&self.refused).get_or_insert(ip);
            }
        }
        if kept.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(kept)
    }
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_public_v4(v4);
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                // fec0::/10, the deprecated site-local range
                || (v6.segments()[0] & 0xffc0) == 0xfec0
                // 2001:db8::/32, documentation
                || (v6.segments()[0] == 0x2001 && v6.segments()[1] == 0x0db8))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || a == 0
        // 100.64.0.0/10, shared address space (carrier-grade NAT)
        || (a == 100 && (b & 0xc0) == 64)
        // 192.0.0.0/24, protocol assignments
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        // 198.18.0.0/15, benchmarking
        || (a == 198 && (b & 0xfe) == 18)
        // 240.0.0.0/4, reserved
        || a >= 240)
}

/// The IPv4 address inside an IPv4-mapped, IPv4-compatible, NAT64
/// (64:ff9b::/96) or 6to4 (2002::/16) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(low());
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low());
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// A `Location` against the URL that sent it (absolute, `//host/...`,
/// `/path` or a relative path).
fn join(base: &Uri, location: &str) -> Option<String> {
    let location = location.trim();
    if location.contains("://") {
        return location.parse::<Uri>().ok().map(|u| u.to_string());
    }
    let scheme = base.scheme_str()?;
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    let authority = base.authority()?.as_str();
    if location.starts_with('/') {
        return Some(format!("{scheme}://{authority}{location}"));
    }
    let path = base.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    Some(format!("{scheme}://{authority}{dir}{location}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_dialled() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a00:1::",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn locations_join_their_base() {
        let base: Uri = "https://h.example/a/b/file.gguf?x=1".parse().unwrap();
        assert_eq!(
            join(&base, "https://cdn.example/f").unwrap(),
            "https://cdn.example/f"
        );
        assert_eq!(
            join(&base, "//cdn.example/f").unwrap(),
            "https://cdn.example/f"
        );
        assert_eq!(join(&base, "/top").unwrap(), "https://h.example/top");
        assert_eq!(join(&base, "other").unwrap(), "https://h.example/a/b/other");
    }

    #[test]
    fn plain_http_is_refused_before_any_connection() {
        let policy = PullPolicy::default();
        let error = get(&policy, "http://127.0.0.1:9/x.gguf", &[], Instant::now())
            .err()
            .unwrap();
        assert_eq!(error.status, 422, "{error:?}");
        assert!(error.detail.contains("only https"), "{}", error.detail);
        let error = get(&policy, "https://127.0.0.1:9/x.gguf", &[], Instant::now())
            .err()
            .unwrap();
        assert_eq!(error.status, 403, "{error:?}");
        assert!(
            error.detail.contains("not a public address"),
            "{}",
            error.detail
        );
    }
}
