//! Prometheus metrics: histograms that record without a lock, the process-
//! wide counters of layers below the handler (generation, the store's
//! writer), and the text exposition format (version 0.0.4) that `/metrics`
//! answers with.
//!
//! The exposition is written here by hand: it is a few lines of text per
//! family, and the crate that would write it (`prometheus-client`) writes
//! OpenMetrics, whose counters Prometheus' own text parsers read as untyped.
//! What the handler counts per request lives in [`crate::stats`]; what
//! generation and the store count lives here, in statics, since those layers
//! know nothing of the handler (one process serves one handler).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets of request latencies, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Buckets of time to first token, in seconds.
pub const TTFT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of generation speed, in tokens a second.
pub const SPEED_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];
/// Buckets of the store's commit (fsync) latency, in seconds.
pub const COMMIT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// The most buckets a histogram has (its bounds, then +Inf).
const MAX_BUCKETS: usize = 20;

/// A Prometheus histogram over fixed upper bounds; all atomics.
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last one is +Inf.
    counts: [AtomicU64; MAX_BUCKETS],
    /// The sum of observations, as f64 bits.
    sum: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending, fewer than 20).
    pub const fn new(bounds: &'static [f64]) -> Histogram {
        assert!(bounds.len() < MAX_BUCKETS);
        Histogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; MAX_BUCKETS],
            sum: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        if !value.is_finite() {
            return;
        }
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        // Relaxed: the sum is read only for a scrape, never to decide anything.
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, duration: Duration) {
        self.observe(duration.as_secs_f64());
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// What generation counts, over every model (see the module doc).
pub struct GenerationMetrics {
    /// From the start of prompt processing to the first generated token.
    pub time_to_first_token: Histogram,
    /// Generated tokens a second after the first one, per generation.
    pub tokens_per_second: Histogram,
    /// Prompt tokens evaluated or reused.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
}

/// Generation's counters.
pub static GENERATION: GenerationMetrics = GenerationMetrics {
    time_to_first_token: Histogram::new(TTFT_BUCKETS),
    tokens_per_second: Histogram::new(SPEED_BUCKETS),
    prompt_tokens: AtomicU64::new(0),
    generated_tokens: AtomicU64::new(0),
};

impl GenerationMetrics {
    /// Records one generation: its token counts, and its timing when it
    /// produced a token (`first`: to the first token; `rest`: after it).
    pub fn record(&self, prompt: u32, generated: u32, first: Option<Duration>, rest: Duration) {
        self.prompt_tokens
            .fetch_add(u64::from(prompt), Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(u64::from(generated), Ordering::Relaxed);
        if let Some(first) = first {
            self.time_to_first_token.observe_duration(first);
            if generated > 1 && !rest.is_zero() {
                self.tokens_per_second
                    .observe(f64::from(generated - 1) / rest.as_secs_f64());
            }
        }
    }
}

/// What the store's writer counts.
pub struct StoreMetrics {
    /// Writes committed (each task of a group commit counts one).
    pub writes: AtomicU64,
    /// Writes that failed.
    pub failed_writes: AtomicU64,
    /// How long each COMMIT took (with `synchronous=FULL`: the WAL's fsync).
    pub commit_seconds: Histogram,
}

/// The store's counters.
pub static STORE: StoreMetrics = StoreMetrics {
    writes: AtomicU64::new(0),
    failed_writes: AtomicU64::new(0),
    commit_seconds: Histogram::new(COMMIT_BUCKETS),
};

/// Prometheus' text format, one family at a time.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

/// The kind of a metric family.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Only goes up (names end in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, `_sum` and `_count`.
    Histogram,
}

impl Exposition {
    /// Starts the family `name`.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) -> &mut Self {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.text.push_str(name);
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {}", number(value));
        self
    }

    /// A histogram's buckets, sum and count, under `labels`.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        histogram: &Histogram,
    ) -> &mut Self {
        let mut cumulative = 0;
        for (i, count) in histogram.counts[..=histogram.bounds.len()]
            .iter()
            .enumerate()
        {
            cumulative += count.load(Ordering::Relaxed);
            let le = histogram
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| number(*b));
            let _ = write!(self.text, "{name}_bucket");
            write_labels(&mut self.text, labels, Some(&le));
            let _ = writeln!(self.text, " {cumulative}");
        }
        let sum = f64::from_bits(histogram.sum.load(Ordering::Relaxed));
        let _ = write!(self.text, "{name}_sum");
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {}", number(sum));
        let _ = write!(self.text, "{name}_count");
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {cumulative}");
        self
    }

    /// The text so far.
    pub fn finish(self) -> String {
        self.text
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (name, value) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{name}=\"{}\"", escape_label(value));
    }
    out.push('}');
}

/// A sample value: integers without a fraction, the rest as Rust writes them.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        static H: Histogram = Histogram::new(&[0.25, 1.0]);
        for v in [0.25, 0.5, 0.5, 5.0] {
            H.observe(v);
        }
        assert_eq!(H.count(), 4);
        let mut out = Exposition::default();
        out.family("t_seconds", "a test", Kind::Histogram)
            .histogram("t_seconds", &[("route", "/a\"b")], &H);
        let text = out.finish();
        assert!(
            text.contains("t_seconds_bucket{route=\"/a\\\"b\",le=\"0.25\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("le=\"1\"} 3\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 4\n"), "{text}");
        assert!(
            text.contains("t_seconds_sum{route=\"/a\\\"b\"} 6.25\n"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_count{route=\"/a\\\"b\"} 4\n"),
            "{text}"
        );
        assert!(text.starts_with("# HELP t_seconds a test\n# TYPE t_seconds histogram\n"));
    }

    #[test]
    fn samples_without_labels() {
        let mut out = Exposition::default();
        out.family("x_total", "x", Kind::Counter)
            .sample("x_total", &[], 3.0);
        assert!(out.finish().ends_with("x_total 3\n"));
    }
}
