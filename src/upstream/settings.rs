//! The `[[upstreams]]` settings: OpenAI-compatible servers whose models
//! tabagent relays to. They come only from the config (file, environment,
//! `--upstream`), never from a request, so relaying opens no path to an
//! address a client chooses.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Secret;

/// One upstream server, as the config file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Its name: models are listed as `name/model` (no `/` in it).
    pub name: String,
    /// The OpenAI-compatible base URL, e.g. `http://box:8080/v1`.
    pub url: String,
    /// The key sent as `Authorization: Bearer KEY` (never shown to clients).
    #[serde(default)]
    pub api_key: Secret,
    /// An environment variable holding the key, read at start.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Only these of its models are offered (empty: all it lists).
    #[serde(default)]
    pub models: Vec<String>,
    /// Higher first when several upstreams serve a model.
    #[serde(default)]
    pub priority: i32,
    /// Requests relayed to it at once; more get 503 (0: 4).
    #[serde(default)]
    pub max_concurrent: usize,
    /// Seconds to connect (0: 5).
    #[serde(default)]
    pub connect_timeout: u64,
    /// Seconds for the answer to begin, and between two reads of a stream (0: 120).
    #[serde(default)]
    pub timeout: u64,
    /// Seconds between health checks (0: 10); failures back off up to 60 s.
    #[serde(default)]
    pub health_interval: u64,
    /// The context its models hold, in tokens, for trimming histories
    /// (0: what it reports, else 4096).
    #[serde(default)]
    pub context: u32,
}

impl UpstreamConfig {
    /// An upstream at `url` with every other setting at its default; the
    /// name is `NAME` of `NAME=URL`, else the URL's host (and `-port`).
    pub fn from_url(text: &str) -> Result<UpstreamConfig, String> {
        let (name, url) = match text.split_once('=') {
            Some((name, url)) if !name.contains("://") => (Some(name.trim()), url.trim()),
            _ => (None, text.trim()),
        };
        let uri: ureq::http::Uri = url
            .parse()
            .map_err(|_| format!("upstream {url:?} is not a URL"))?;
        let name = match name {
            Some(name) => name.to_string(),
            None => {
                let host = uri.host().unwrap_or("upstream").trim_matches(['[', ']']);
                match uri.port_u16() {
                    Some(port) => format!("{host}-{port}"),
                    None => host.to_string(),
                }
            }
        };
        let config = UpstreamConfig {
            name,
            url: url.to_string(),
            api_key: Secret::default(),
            api_key_env: None,
            models: Vec::new(),
            priority: 0,
            max_concurrent: 0,
            connect_timeout: 0,
            timeout: 0,
            health_interval: 0,
            context: 0,
        };
        config.check()?;
        Ok(config)
    }

    /// Whether the settings can be used (checked at start).
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.contains(['/', '\\', '%', ' ']) {
            return Err(format!(
                "upstream name {:?} must be non-empty, without / \\ % or spaces",
                self.name
            ));
        }
        let uri: ureq::http::Uri = self
            .url
            .parse()
            .map_err(|_| format!("upstream {}: url {:?} is not a URL", self.name, self.url))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "upstream {}: url {:?} must be http:// or https:// with a host",
                self.name, self.url
            ));
        }
        Ok(())
    }

    /// The key: `api_key`, else the variable `api_key_env` names (through `getenv`).
    pub fn key(&self, getenv: impl Fn(&str) -> Option<String>) -> Option<String> {
        if !self.api_key.0.is_empty() {
            return Some(self.api_key.0.clone());
        }
        self.api_key_env
            .as_deref()
            .and_then(getenv)
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
    }

    /// Requests at once.
    pub fn cap(&self) -> usize {
        if self.max_concurrent == 0 {
            4
        } else {
            self.max_concurrent
        }
    }

    /// Connect timeout.
    pub fn connect(&self) -> Duration {
        Duration::from_secs(if self.connect_timeout == 0 {
            5
        } else {
            self.connect_timeout
        })
    }

    /// Answer and per-read timeout.
    pub fn answer(&self) -> Duration {
        Duration::from_secs(if self.timeout == 0 { 120 } else { self.timeout })
    }

    /// Time between health checks while healthy.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(if self.health_interval == 0 {
            10
        } else {
            self.health_interval
        })
    }
}

/// The upstreams setting: a list of tables in the file, comma-separated
/// URLs (`NAME=URL` or `URL`) in the environment and on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct UpstreamList(pub Vec<UpstreamConfig>);

impl FromStr for UpstreamList {
    type Err = String;
    fn from_str(text: &str) -> Result<UpstreamList, String> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(UpstreamConfig::from_url)
            .collect::<Result<Vec<_>, _>>()
            .map(UpstreamList)
    }
}

impl UpstreamList {
    /// Checks every entry and that names are unique.
    pub fn check(&self) -> Result<(), String> {
        for (i, upstream) in self.0.iter().enumerate() {
            upstream.check()?;
            if self.0[..i].iter().any(|u| u.name == upstream.name) {
                return Err(format!("two upstreams are named {:?}", upstream.name));
            }
        }
        Ok(())
    }
}

impl fmt::Display for UpstreamList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|u| u.name.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_themselves_and_keys_stay_secret() {
        let list: UpstreamList = "http://127.0.0.1:9000/v1, box=https://box.lan/v1"
            .parse()
            .unwrap();
        assert_eq!(list.0[0].name, "127.0.0.1-9000");
        assert_eq!(list.0[1].name, "box");
        assert_eq!(list.0[1].url, "https://box.lan/v1");
        assert!(list.check().is_ok());
        assert!("ftp://x/v1".parse::<UpstreamList>().is_err());
        assert!("a/b=http://x/v1".parse::<UpstreamList>().is_err());
        let twice: UpstreamList = "a=http://x/v1,a=http://y/v1".parse().unwrap();
        assert!(twice.check().is_err());
        let mut one = list.0[1].clone();
        one.api_key = Secret("sk-secret".into());
        assert!(!format!("{one:?}").contains("sk-secret"));
        assert_eq!(one.key(|_| None).as_deref(), Some("sk-secret"));
        one.api_key = Secret::default();
        one.api_key_env = Some("K".into());
        assert_eq!(
            one.key(|k| (k == "K").then(|| "v".into())).as_deref(),
            Some("v")
        );
    }
}
