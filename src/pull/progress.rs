//! Progress of a pull: when a report is due (PullProgress chunks are
//! throttled), and the CLI's bar for `tabagent pull`.

use std::time::{Duration, Instant};

use crate::api::PullProgress;

/// Decides when progress is worth reporting: every 1% of the total, every
/// 250 ms, and at the start and the end.
#[derive(Debug)]
pub struct Throttle {
    last_bytes: Option<u64>,
    last_at: Option<Instant>,
    interval: Duration,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle {
            last_bytes: None,
            last_at: None,
            interval: Duration::from_millis(250),
        }
    }
}

impl Throttle {
    /// Whether to report `bytes` of `total` now.
    pub fn due(&mut self, bytes: u64, total: Option<u64>, now: Instant) -> bool {
        let due = match (self.last_bytes, self.last_at) {
            (Some(last), Some(at)) => {
                let step = total.map_or(u64::MAX, |t| (t / 100).max(1));
                bytes.saturating_sub(last) >= step
                    || now.saturating_duration_since(at) >= self.interval
                    || (total == Some(bytes) && last != bytes)
            }
            _ => true,
        };
        if due {
            self.last_bytes = Some(bytes);
            self.last_at = Some(now);
        }
        due
    }
}

/// The CLI's progress display: a bar redrawn in place on a terminal, a line
/// per 10% otherwise (logs, pipes).
#[derive(Debug)]
pub struct ProgressBar {
    terminal: bool,
    started: Option<(Instant, u64)>,
    last_tenth: Option<u64>,
}

impl ProgressBar {
    /// A bar for a terminal or for plain lines.
    pub fn new(terminal: bool) -> ProgressBar {
        ProgressBar {
            terminal,
            started: None,
            last_tenth: None,
        }
    }

    /// What to write for `progress` at `now` (empty when nothing is due).
    pub fn draw(&mut self, progress: &PullProgress, now: Instant) -> String {
        let done = progress.downloaded_bytes;
        let (t0, b0) = *self.started.get_or_insert((now, done));
        let seconds = now.saturating_duration_since(t0).as_secs_f64();
        let rate = if seconds > 0.2 {
            format!("  {:.1} MB/s", (done - b0.min(done)) as f64 / seconds / 1e6)
        } else {
            String::new()
        };
        let mb = |b: u64| b as f64 / 1e6;
        let Some(total) = progress.total_bytes.filter(|t| *t > 0) else {
            let line = format!("{}: {:.1} MB{rate}", progress.model, mb(done));
            return if self.terminal {
                format!("\r{line}\x1b[K")
            } else {
                String::new()
            };
        };
        let percent = (done.min(total) * 100 / total) as usize;
        if self.terminal {
            let filled = percent * 30 / 100;
            format!(
                "\r{} [{}{}] {percent:>3}%  {:.1}/{:.1} MB{rate}\x1b[K",
                progress.model,
                "#".repeat(filled),
                ".".repeat(30 - filled),
                mb(done),
                mb(total)
            )
        } else {
            let tenth = percent as u64 / 10;
            if self.last_tenth == Some(tenth) {
                return String::new();
            }
            self.last_tenth = Some(tenth);
            format!(
                "{}: {percent:>3}%  {:.1}/{:.1} MB{rate}\n",
                progress.model,
                mb(done),
                mb(total)
            )
        }
    }

    /// Ends the bar's line.
    pub fn finish(&self) -> &'static str {
        if self.terminal { "\n" } else { "" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_reports_each_percent_or_quarter_second() {
        let mut throttle = Throttle::default();
        let t0 = Instant::now();
        assert!(throttle.due(0, Some(1000), t0));
        assert!(!throttle.due(5, Some(1000), t0));
        assert!(throttle.due(10, Some(1000), t0));
        assert!(!throttle.due(11, Some(1000), t0 + Duration::from_millis(100)));
        assert!(throttle.due(12, Some(1000), t0 + Duration::from_millis(300)));
        assert!(throttle.due(1000, Some(1000), t0 + Duration::from_millis(300)));
        assert!(!throttle.due(1000, Some(1000), t0 + Duration::from_millis(300)));
        let mut unknown = Throttle::default();
        assert!(unknown.due(0, None, t0));
        assert!(!unknown.due(1 << 30, None, t0 + Duration::from_millis(10)));
    }

    #[test]
    fn the_bar_draws_in_place_or_by_tenths() {
        let at = |downloaded_bytes| PullProgress {
            model: "m".into(),
            downloaded_bytes,
            total_bytes: Some(1000),
        };
        let t0 = Instant::now();
        let mut bar = ProgressBar::new(true);
        let line = bar.draw(&at(500), t0);
        assert!(
            line.starts_with("\rm [###############...............]  50%"),
            "{line:?}"
        );
        let mut plain = ProgressBar::new(false);
        assert!(plain.draw(&at(0), t0).contains("  0%"));
        assert_eq!(plain.draw(&at(50), t0), "");
        let last = plain.draw(&at(1000), t0 + Duration::from_secs(1));
        assert!(last.contains("100%") && last.contains("MB/s"), "{last:?}");
    }
}
