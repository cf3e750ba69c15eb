//! Request counters and a latency histogram, shared by every transport.
//!
//! Latencies land in logarithmic buckets (four per power of two), which bounds
//! a percentile's error to ~19% with a fixed 1 KiB of memory, and in a
//! Prometheus histogram per transport. Everything is an atomic but the count
//! per (transport, route, status), a map behind a mutex held for one insert.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::api::LatencySummary;
use crate::jobs::lock;
use crate::metrics::{Histogram, LATENCY_BUCKETS};

/// The transport a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Chrome native messaging on stdin/stdout.
    Native,
    /// The HTTP server.
    Http,
    /// A WebRTC data channel.
    Rtc,
}

impl Transport {
    /// Every transport.
    pub const ALL: [Transport; 3] = [Transport::Native, Transport::Http, Transport::Rtc];

    /// Its name in GetStats.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Native => "native",
            Transport::Http => "http",
            Transport::Rtc => "webrtc",
        }
    }
}

const BUCKETS: usize = 4 * 40;

/// Counters since start.
pub struct Stats {
    started: Instant,
    requests: [AtomicU64; 3],
    errors: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS],
    latency_max_us: AtomicU64,
    /// Answered requests per (transport, route, status).
    answered: Mutex<HashMap<(Transport, &'static str, u16), u64>>,
    /// Request latency per transport, for /metrics.
    durations: [Histogram; 3],
    /// WebRTC sessions open now.
    rtc_sessions: AtomicU64,
}

impl Stats {
    /// Fresh counters; uptime counts from `now`.
    pub fn new(now: Instant) -> Stats {
        Stats {
            started: now,
            requests: Default::default(),
            errors: AtomicU64::new(0),
            latency_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_max_us: AtomicU64::new(0),
            answered: Mutex::default(),
            durations: [const { Histogram::new(LATENCY_BUCKETS) }; 3],
            rtc_sessions: AtomicU64::new(0),
        }
    }

    /// Time since start.
    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// Counts one request received on `transport`.
    pub fn count_request(&self, transport: Transport) {
        self.requests[transport as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a request answered with `status` (a final reply; an error's
    /// status, else 200) after `latency`.
    pub fn record(
        &self,
        transport: Transport,
        route: &'static str,
        status: u16,
        latency: Duration,
    ) {
        *lock(&self.answered)
            .entry((transport, route, status))
            .or_insert(0) += 1;
        self.durations[transport as usize].observe_duration(latency);
        self.record_reply(latency, status >= 400);
    }

    /// Answered requests per (transport, route, status), sorted.
    pub fn answered(&self) -> Vec<((Transport, &'static str, u16), u64)> {
        let mut answered: Vec<_> = lock(&self.answered).iter().map(|(k, v)| (*k, *v)).collect();
        answered.sort_by_key(|((t, r, s), _)| (*t as usize, *r, *s));
        answered
    }

    /// The latency histogram of `transport`.
    pub fn duration(&self, transport: Transport) -> &Histogram {
        &self.durations[transport as usize]
    }

    /// Sets the number of WebRTC sessions open.
    pub fn set_rtc_sessions(&self, sessions: usize) {
        self.rtc_sessions.store(sessions as u64, Ordering::Relaxed);
    }

    /// WebRTC sessions open (as last set).
    pub fn rtc_sessions(&self) -> u64 {
        self.rtc_sessions.load(Ordering::Relaxed)
    }

    /// Records a finished request: how long it took and whether it failed.
    fn record_reply(&self, latency: Duration, failed: bool) {
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.latency_max_us.fetch_max(micros, Ordering::Relaxed);
    }

    /// Requests per transport name.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        Transport::ALL
            .iter()
            .map(|t| {
                (
                    t.name().to_string(),
                    self.requests[*t as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Requests that ended in an error.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Latency percentiles over every request so far.
    pub fn latency(&self) -> LatencySummary {
        let counts: Vec<u64> = self
            .latency_buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let percentile = |p: f64| {
            if total == 0 {
                return 0;
            }
            let rank = ((total as f64) * p).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (bucket, count) in counts.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    return upper_bound_of(bucket);
                }
            }
            upper_bound_of(BUCKETS - 1)
        };
        let max_us = self.latency_max_us.load(Ordering::Relaxed);
        LatencySummary {
            p50_us: percentile(0.50).min(max_us),
            p90_us: percentile(0.90).min(max_us),
            p99_us: percentile(0.99).min(max_us),
            max_us,
        }
    }
}

/// Bucket `4*k + q` holds values in `[2^k * (1 + q/4), 2^k * (1 + (q+1)/4))`.
fn bucket_of(micros: u64) -> usize {
    if micros < 1 {
        return 0;
    }
    let power = 63 - micros.leading_zeros() as usize;
    let quarter = if power >= 2 {
        ((micros >> (power - 2)) & 3) as usize
    } else {
        ((micros as usize * 4) >> power) & 3
    };
    (power * 4 + quarter).min(BUCKETS - 1)
}

fn upper_bound_of(bucket: usize) -> u64 {
    let power = bucket / 4;
    let quarter = (bucket % 4) as u64;
    ((1u64 << power) * (4 + quarter + 1)) / 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_close_to_the_truth() {
        let stats = Stats::new(Instant::now());
        for micros in 1..=1000u64 {
            stats.record_reply(Duration::from_micros(micros), micros % 10 == 0);
        }
        let summary = stats.latency();
        assert!((450..=620).contains(&summary.p50_us), "{summary:?}");
        assert!((980..=1000).contains(&summary.p99_us), "{summary:?}");
        assert_eq!(summary.max_us, 1000);
        assert_eq!(stats.errors(), 100);
    }

    #[test]
    fn requests_are_counted_per_transport() {
        let stats = Stats::new(Instant::now());
        stats.count_request(Transport::Native);
        stats.count_request(Transport::Native);
        stats.count_request(Transport::Rtc);
        stats.record(Transport::Rtc, "Health", 200, Duration::from_millis(1));
        stats.record(Transport::Rtc, "Health", 200, Duration::from_millis(1));
        assert_eq!(stats.answered(), vec![((Transport::Rtc, "Health", 200), 2)]);
        assert_eq!(stats.duration(Transport::Rtc).count(), 2);
        let requests = stats.requests();
        assert_eq!(requests["native"], 2);
        assert_eq!(requests["http"], 0);
        assert_eq!(requests["webrtc"], 1);
    }
}
