//! Logs an operator can follow: stderr only (stdout carries native
//! messaging frames), as text or one JSON object per line, every line of a
//! request tagged with its request id, and a filter that SIGHUP can change.
//!
//! The id rides in a thread-local: a transport sets it while it serves a
//! request ([`RequestTag::scope`]), [`crate::jobs::Jobs::submit`] carries
//! it to the pool thread that runs the request's job, and an HTTP stream's
//! writer thread takes it along; every log line written meanwhile names it.
//! Structured fields of a line (`route = ...; "text"`, the `log` crate's
//! key-values) become JSON fields, or `key=value` after the text.

use std::cell::Cell;
use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use log::{Log, Metadata, Record};
use serde::Deserialize;
use serde_json::{Map, Value};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `[time LEVEL target req=ID] text key=value`.
    Text,
    /// One JSON object per line: `ts`, `level`, `target`, `request_id`,
    /// `msg` and the line's fields.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text or json)"
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// The server's id of one request: 16 hex digits, in every log line of the
/// request and in HTTP's `X-Request-Id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestTag(u64);

thread_local! {
    static CURRENT: Cell<Option<RequestTag>> = const { Cell::new(None) };
}

impl RequestTag {
    /// A tag not given out before in this process (a counter from a random
    /// start, so two runs' logs do not share ids).
    pub fn next() -> RequestTag {
        static NEXT: OnceLock<AtomicU64> = OnceLock::new();
        let next = NEXT.get_or_init(|| {
            use std::hash::{BuildHasher, Hasher};
            let mut hasher = std::hash::RandomState::new().build_hasher();
            hasher.write_u32(std::process::id());
            AtomicU64::new(hasher.finish() >> 1)
        });
        RequestTag(next.fetch_add(1, Ordering::Relaxed))
    }

    /// The tag of the request this thread serves now, if any.
    pub fn current() -> Option<RequestTag> {
        CURRENT.with(Cell::get)
    }

    /// Runs `work` with `tag` as this thread's request (restored after).
    pub fn scope<T>(tag: Option<RequestTag>, work: impl FnOnce() -> T) -> T {
        struct Restore(Option<RequestTag>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(CURRENT.with(|c| c.replace(tag)));
        work()
    }
}

impl fmt::Display for RequestTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The installed logger: env_logger with our line format, behind a lock so
/// that SIGHUP can replace its filter.
pub struct Logger {
    inner: RwLock<env_logger::Logger>,
    format: LogFormat,
}

/// Installs the logger with `filter` (env_logger syntax) and `format`; the
/// returned handle changes the filter later. A second call (tests) keeps the
/// first logger.
pub fn init(filter: &str, format: LogFormat) -> Arc<Logger> {
    static INSTALLED: OnceLock<Arc<Logger>> = OnceLock::new();
    let logger = INSTALLED.get_or_init(|| {
        let logger = Arc::new(Logger {
            inner: RwLock::new(build(filter, format)),
            format,
        });
        if log::set_boxed_logger(Box::new(Shared(Arc::clone(&logger)))).is_ok() {
            log::set_max_level(logger.max_level());
        }
        logger
    });
    Arc::clone(logger)
}

fn build(filter: &str, format: LogFormat) -> env_logger::Logger {
    env_logger::Builder::new()
        .parse_filters(filter)
        // stderr only: stdout carries native messaging frames.
        .target(env_logger::Target::Stderr)
        .format(move |buf, record| {
            let ts = buf.timestamp_millis().to_string();
            let line = match format {
                LogFormat::Text => text_line(&ts, record),
                LogFormat::Json => json_line(&ts, record),
            };
            buf.write_all(line.as_bytes())
        })
        .build()
}

/// Whether `filter` is one env_logger reads without complaint (it ignores
/// what it cannot parse, so a typo would silently log nothing).
pub fn check_filter(filter: &str) -> Result<(), String> {
    let levels = ["off", "error", "warn", "info", "debug", "trace"];
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        let is_level = levels.iter().any(|l| l.eq_ignore_ascii_case(level));
        let is_module = !directive.contains('=')
            && directive
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        if !is_level && !is_module {
            return Err(format!(
                "log filter {filter:?}: {directive:?} is not a level"
            ));
        }
    }
    Ok(())
}

impl Logger {
    /// Replaces the filter (SIGHUP).
    pub fn set_filter(&self, filter: &str) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = build(filter, self.format);
        log::set_max_level(self.max_level());
    }

    fn max_level(&self) -> log::LevelFilter {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .filter()
    }
}

/// The `log` facade's box around the shared logger.
struct Shared(Arc<Logger>);

impl Log for Shared {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.0
            .inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        self.0
            .inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .log(record);
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// The line's key-values, in order.
fn fields(record: &Record<'_>) -> Vec<(String, Value)> {
    struct Collect(Vec<(String, Value)>);
    impl<'kvs> log::kv::VisitSource<'kvs> for Collect {
        fn visit_pair(
            &mut self,
            key: log::kv::Key<'kvs>,
            value: log::kv::Value<'kvs>,
        ) -> Result<(), log::kv::Error> {
            let value = if let Some(n) = value.to_u64() {
                Value::from(n)
            } else if let Some(n) = value.to_i64() {
                Value::from(n)
            } else if let Some(x) = value.to_f64() {
                Value::from(x)
            } else {
                Value::from(value.to_string())
            };
            self.0.push((key.to_string(), value));
            Ok(())
        }
    }
    let mut collect = Collect(Vec::new());
    let _ = record.key_values().visit(&mut collect);
    collect.0
}

fn text_line(ts: &str, record: &Record<'_>) -> String {
    let mut line = format!("[{ts} {:<5} {}", record.level(), record.target());
    if let Some(tag) = RequestTag::current() {
        line.push_str(&format!(" req={tag}"));
    }
    line.push_str(&format!("] {}", record.args()));
    for (key, value) in fields(record) {
        match value {
            Value::String(text) => line.push_str(&format!(" {key}={text}")),
            other => line.push_str(&format!(" {key}={other}")),
        }
    }
    line.push('\n');
    line
}

fn json_line(ts: &str, record: &Record<'_>) -> String {
    let mut object = Map::new();
    object.insert("ts".into(), ts.into());
    object.insert("level".into(), record.level().as_str().into());
    object.insert("target".into(), record.target().into());
    if let Some(tag) = RequestTag::current() {
        object.insert("request_id".into(), tag.to_string().into());
    }
    object.insert("msg".into(), record.args().to_string().into());
    for (key, value) in fields(record) {
        object.entry(key).or_insert(value);
    }
    let mut line = Value::Object(object).to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_sets_and_restores_the_tag() {
        let (a, b) = (RequestTag::next(), RequestTag::next());
        assert_ne!(a, b);
        assert_eq!(a.to_string().len(), 16);
        RequestTag::scope(Some(a), || {
            assert_eq!(RequestTag::current(), Some(a));
            RequestTag::scope(Some(b), || assert_eq!(RequestTag::current(), Some(b)));
            assert_eq!(RequestTag::current(), Some(a));
        });
        assert_eq!(RequestTag::current(), None);
    }

    #[test]
    fn json_lines_carry_the_tag_and_fields() {
        let tag = RequestTag::next();
        let line = RequestTag::scope(Some(tag), || {
            json_line(
                "2026-01-01T00:00:00.000Z",
                &Record::builder()
                    .args(format_args!("done"))
                    .level(log::Level::Info)
                    .target("tabagent::access")
                    .key_values(&[("status", 200u64)])
                    .build(),
            )
        });
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["request_id"], tag.to_string());
        assert_eq!(value["msg"], "done");
        assert_eq!(value["status"], 200);
        assert!(line.ends_with("}\n"));
    }

    #[test]
    fn filters_are_checked() {
        assert!(check_filter("info").is_ok());
        assert!(check_filter("warn,tabagent::access=info").is_ok());
        assert!(check_filter("tabagent").is_ok());
        assert!(check_filter("loud").is_ok(), "a bare word is a module name");
        assert!(check_filter("tabagent=loud").is_err());
        assert!(LogFormat::from_str("xml").is_err());
    }
}
