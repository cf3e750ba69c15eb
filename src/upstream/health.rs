//! The health check of each upstream, on a thread of its own: its model
//! list every `health_interval` while it answers, then with a doubling wait
//! (up to a minute) while it does not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Upstream;
use super::client;

/// The longest wait between two checks of a failing upstream.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The wait after `failures` failed checks in a row.
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let base = interval.min(Duration::from_secs(2));
    base.saturating_mul(1u32 << failures.min(6).saturating_sub(1))
        .min(MAX_BACKOFF)
}

/// Starts the checks of `upstream` (the first one at once).
pub fn spawn(upstream: Arc<Upstream>) {
    let name = format!("upstream-{}", upstream.name());
    let started = std::thread::Builder::new().name(name).spawn(move || {
        let mut failures = 0u32;
        loop {
            if client::check(&upstream, Instant::now()) {
                failures = 0;
            } else {
                failures = failures.saturating_add(1);
            }
            std::thread::sleep(backoff(upstream.config.interval(), failures));
        }
    });
    if let Err(e) = started {
        log::error!("cannot start the health checks of an upstream: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_checks_back_off_up_to_a_minute() {
        let ten = Duration::from_secs(10);
        assert_eq!(backoff(ten, 0), ten);
        assert_eq!(backoff(ten, 1), Duration::from_secs(2));
        assert_eq!(backoff(ten, 2), Duration::from_secs(4));
        assert_eq!(backoff(ten, 9), Duration::from_secs(60));
    }
}
