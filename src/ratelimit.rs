//! Rate limits per client, one mechanism for all of them: token buckets for
//! the general request rate (per HTTP address, per WebRTC session) and for
//! WebRTC offers (per address), and a count of each client's generations
//! running or queued. Native messaging is one trusted client and is never
//! limited. Over a limit a request is answered 429 with `Retry-After` (an
//! Error frame carrying `retry_after` over the other transports).
//!
//! The settings can change while serving (SIGHUP): a bucket keeps its tokens
//! and is refilled at the new rate from then on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::jobs::{ConnectionId, lock};

/// Who a request comes from, as far as limits go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// Native messaging: Chrome started us for this extension; no limits.
    Trusted,
    /// An HTTP client, by address.
    Address(IpAddr),
    /// A WebRTC data channel session.
    Session(ConnectionId),
}

/// The limits in force; 0 turns one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    /// Requests a second per client on average (bursts of twice that).
    pub requests_per_second: u32,
    /// WebRTC offers a minute per address (bursts of that many).
    pub offers_per_minute: u32,
    /// Generations one client may have running or queued.
    pub generations_per_client: u32,
}

/// Clients tracked per kind of bucket before full, idle ones are forgotten.
const MAX_CLIENTS: usize = 4096;

/// A token bucket: `tokens` as of `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets of one kind, per key.
struct Buckets<K> {
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: std::hash::Hash + Eq + Copy> Buckets<K> {
    fn new() -> Buckets<K> {
        Buckets {
            buckets: Mutex::default(),
        }
    }

    /// Takes a token from `key`'s bucket (`burst` deep, refilled at `rate`
    /// tokens a second), or says how long until one is there.
    fn take(&self, key: K, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&key) {
            // Full buckets carry no state worth keeping.
            buckets.retain(|_, b| refilled(*b, rate, burst, now) < burst);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let tokens = refilled(*bucket, rate, burst, now);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) / rate))
        }
    }
}

fn refilled(bucket: Bucket, rate: f64, burst: f64, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * rate).min(burst)
}

/// Every limit, shared by the transports (through the handler).
pub struct Limiter {
    settings: Mutex<RateSettings>,
    requests: Buckets<Client>,
    offers: Buckets<IpAddr>,
    generations: Mutex<HashMap<Client, u32>>,
}

/// A generation counted against its client until dropped.
pub struct GenerationPermit {
    limiter: Arc<Limiter>,
    client: Client,
}

impl Drop for GenerationPermit {
    fn drop(&mut self) {
        let mut generations = lock(&self.limiter.generations);
        if let Some(count) = generations.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                generations.remove(&self.client);
            }
        }
    }
}

impl Limiter {
    /// A limiter holding clients to `settings`.
    pub fn new(settings: RateSettings) -> Limiter {
        Limiter {
            settings: Mutex::new(settings),
            requests: Buckets::new(),
            offers: Buckets::new(),
            generations: Mutex::default(),
        }
    }

    /// The limits in force.
    pub fn settings(&self) -> RateSettings {
        *lock(&self.settings)
    }

    /// Changes the limits (SIGHUP).
    pub fn set(&self, settings: RateSettings) {
        *lock(&self.settings) = settings;
    }

    /// Counts one request of `client`.
    pub fn check_request(&self, client: Client, now: Instant) -> Result<(), ApiError> {
        let rate = self.settings().requests_per_second;
        if rate == 0 || client == Client::Trusted {
            return Ok(());
        }
        let rate = f64::from(rate);
        self.requests
            .take(client, rate, 2.0 * rate, now)
            .map_err(|wait| {
                limited(
                    wait,
                    format!(
                        "more than {rate} requests a second from one client \
                         (rate_limit)"
                    ),
                )
            })
    }

    /// Counts one WebRTC offer from `ip`.
    pub fn check_offer(&self, ip: IpAddr, now: Instant) -> Result<(), ApiError> {
        let per_minute = self.settings().offers_per_minute;
        if per_minute == 0 {
            return Ok(());
        }
        let burst = f64::from(per_minute);
        self.offers
            .take(ip, burst / 60.0, burst, now)
            .map_err(|wait| {
                limited(
                    wait,
                    format!(
                        "{per_minute} WebRTC offers a minute are allowed from one address \
                         (webrtc_offers_per_minute)"
                    ),
                )
            })
    }

    /// Counts a generation of `client` until the permit is dropped.
    pub fn start_generation(
        self: &Arc<Self>,
        client: Client,
    ) -> Result<Option<GenerationPermit>, ApiError> {
        let cap = self.settings().generations_per_client;
        if client == Client::Trusted || cap == 0 {
            return Ok(None);
        }
        let mut generations = lock(&self.generations);
        let count = generations.entry(client).or_insert(0);
        if *count >= cap {
            return Err(limited(
                Duration::from_secs(1),
                format!(
                    "{cap} generations of this client are already running or queued \
                     (generations_per_client)"
                ),
            ));
        }
        *count += 1;
        Ok(Some(GenerationPermit {
            limiter: Arc::clone(self),
            client,
        }))
    }

    /// Generations each client has running or queued (for tests and metrics).
    pub fn generations(&self, client: Client) -> u32 {
        lock(&self.generations).get(&client).copied().unwrap_or(0)
    }
}

/// The 429 of a request over a limit; retry in whole seconds, at least one.
fn limited(wait: Duration, what: String) -> ApiError {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u32;
    ApiError {
        retry_after: Some(seconds),
        ..ApiError::new(
            429,
            "rate-limited",
            "Too many requests",
            format!("{what}; retry in {seconds} s"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(requests: u32, offers: u32, generations: u32) -> Arc<Limiter> {
        Arc::new(Limiter::new(RateSettings {
            requests_per_second: requests,
            offers_per_minute: offers,
            generations_per_client: generations,
        }))
    }

    #[test]
    fn the_eleventh_offer_in_a_minute_waits() {
        let limiter = limiter(0, 10, 0);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..10 {
            limiter.check_offer(a, t0).unwrap();
        }
        let error = limiter
            .check_offer(a, t0 + Duration::from_secs(1))
            .unwrap_err();
        // One offer comes back every 6 s.
        assert_eq!((error.status, error.retry_after), (429, Some(5)));
        limiter.check_offer(b, t0).unwrap();
        limiter.check_offer(a, t0 + Duration::from_secs(7)).unwrap();
        assert!(limiter.check_offer(a, t0 + Duration::from_secs(7)).is_err());
    }

    #[test]
    fn requests_come_in_bursts_of_twice_the_rate() {
        let limiter = limiter(5, 0, 0);
        let client = Client::Session(ConnectionId::next());
        let t0 = Instant::now();
        for _ in 0..10 {
            limiter.check_request(client, t0).unwrap();
        }
        let error = limiter.check_request(client, t0).unwrap_err();
        assert_eq!((error.status, error.retry_after), (429, Some(1)));
        limiter
            .check_request(client, t0 + Duration::from_millis(250))
            .unwrap();
        for _ in 0..100 {
            limiter.check_request(Client::Trusted, t0).unwrap();
        }
        limiter.set(RateSettings {
            requests_per_second: 0,
            ..limiter.settings()
        });
        limiter.check_request(client, t0).unwrap();
    }

    #[test]
    fn generations_are_capped_until_a_permit_is_dropped() {
        let limiter = limiter(0, 0, 2);
        let client = Client::Address("127.0.0.1".parse().unwrap());
        let first = limiter.start_generation(client).unwrap();
        let _second = limiter.start_generation(client).unwrap();
        let error = limiter.start_generation(client).err().unwrap();
        assert_eq!(error.status, 429);
        assert!(error.detail.contains("generations_per_client"));
        assert!(limiter.start_generation(Client::Trusted).unwrap().is_none());
        drop(first);
        assert_eq!(limiter.generations(client), 1);
        limiter.start_generation(client).unwrap();
    }
}
