//! Settings from four layers: command line > environment > TOML file > defaults.
//!
//! Every setting has one name, used three ways: `--name` on the command line
//! (where the CLI offers it), `TABAGENT_NAME` in the environment and `name` in
//! the config file. [`Layer`] holds one source's partial settings; [`Config`]
//! is the merged, resolved result. No I/O happens here except reading the file.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

pub use crate::logging::LogFormat;

/// Which transports to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Chrome native messaging on stdin/stdout only.
    Native,
    /// The HTTP server only.
    Http,
    /// The HTTP server (for signaling) and WebRTC peers.
    Webrtc,
    /// Everything; native messaging only when stdin is not a terminal.
    All,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(text: &str) -> Result<Mode, String> {
        match text {
            "native" => Ok(Mode::Native),
            "http" => Ok(Mode::Http),
            "webrtc" => Ok(Mode::Webrtc),
            "all" => Ok(Mode::All),
            other => Err(format!(
                "unknown mode {other:?} (expected native, http, webrtc or all)"
            )),
        }
    }
}

/// A comma-separated list in the environment, an array in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct List(pub Vec<String>);

impl FromStr for List {
    type Err = String;
    fn from_str(text: &str) -> Result<List, String> {
        Ok(List(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        ))
    }
}

/// Whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Seconds(pub u64);

impl FromStr for Seconds {
    type Err = String;
    fn from_str(text: &str) -> Result<Seconds, String> {
        text.parse()
            .map(Seconds)
            .map_err(|_| format!("expected whole seconds, got {text:?}"))
    }
}

/// A UDP port, or a range `first-last` to bind the first free one of; 0 is any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// The first port tried.
    pub first: u16,
    /// The last port tried (equal to `first` for a single port).
    pub last: u16,
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(text: &str) -> Result<PortRange, String> {
        let port = |t: &str| {
            t.trim()
                .parse::<u16>()
                .map_err(|_| format!("expected a port or a range like 50000-50100, got {text:?}"))
        };
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(text)?, port(text)?),
        };
        if first > last || (first == 0 && last != 0) {
            return Err(format!("{text:?} is not a range of ports"));
        }
        Ok(PortRange { first, last })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Port(u16),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Port(port) => Ok(PortRange {
                first: port,
                last: port,
            }),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

macro_rules! settings {
    ($( $(#[doc = $doc:literal])* $name:ident : $ty:ty = $default:expr ),* $(,)?) => {
        /// One source's settings; unset fields fall through to the next layer.
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Layer {
            $( $(#[doc = $doc])* pub $name: Option<$ty>, )*
        }

        impl Layer {
            /// Fills each unset field from `lower`.
            pub fn or(self, lower: Layer) -> Layer {
                Layer { $( $name: self.$name.or(lower.$name), )* }
            }

            /// Reads `TABAGENT_<NAME>` for every setting through `getenv`.
            pub fn from_env(getenv: impl Fn(&str) -> Option<String>) -> Result<Layer, String> {
                let mut layer = Layer::default();
                $(
                    let key = concat!("TABAGENT_", stringify!($name)).to_uppercase();
                    if let Some(text) = getenv(&key).filter(|t| !t.is_empty()) {
                        layer.$name = Some(text.parse::<$ty>().map_err(|e| format!("{key}: {e}"))?);
                    }
                )*
                Ok(layer)
            }

            /// The environment variable names, for --help.
            pub fn env_names() -> Vec<String> {
                vec![$( concat!("TABAGENT_", stringify!($name)).to_uppercase(), )*]
            }
        }

        /// The resolved settings the server runs with.
        #[derive(Debug, Clone)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $name: $ty, )*
        }

        impl Config {
            fn resolve(layer: Layer, defaults: &Defaults) -> Config {
                Config { $( $name: layer.$name.unwrap_or_else(|| ($default)(defaults)), )* }
            }

            /// The names of the settings whose values differ in `other`.
            pub fn differences(&self, other: &Config) -> Vec<&'static str> {
                let mut changed = Vec::new();
                $( if self.$name != other.$name { changed.push(stringify!($name)); } )*
                changed
            }
        }
    };
}

/// Defaults that depend on the machine or on other settings.
struct Defaults {
    data_dir: PathBuf,
}

settings! {
    /// Which transports to serve.
    mode: Mode = |_: &Defaults| Mode::All,
    /// Address and port of the HTTP server.
    bind: SocketAddr = |_: &Defaults| SocketAddr::from(([127, 0, 0, 1], 8080)),
    /// Where the database, parameters and models live.
    data_dir: PathBuf = |d: &Defaults| d.data_dir.clone(),
    /// Where models are found (default `<data_dir>/models`).
    models_dir: PathBuf = |d: &Defaults| d.data_dir.join("models"),
    /// Log filter (env_logger syntax): error, warn, info, debug, trace.
    log: String = |_: &Defaults| "info".to_string(),
    /// How log lines are written: `text`, or `json` (one object per line).
    log_format: LogFormat = |_: &Defaults| LogFormat::Text,
    /// Models loaded in the background at start (ids, as ListModels names them).
    preload: List = |_: &Defaults| List::default(),
    /// Extra origins allowed by CORS, besides the extensions `install-host`
    /// and `allow-extension` recorded (`*`: any, only while a key is required).
    cors_origins: List = |_: &Defaults| List::default(),
    /// Extra names accepted in the Host header (the bound address and localhost always are).
    allowed_hosts: List = |_: &Defaults| List::default(),
    /// Largest HTTP request body in bytes; a longer one is answered 413 unread.
    max_body_bytes: u64 = |_: &Defaults| 64 << 20,
    /// Seconds for an HTTP request head to arrive once begun, and that a new
    /// connection may stay silent (408, then close; 0: no limit).
    http_head_timeout: Seconds = |_: &Defaults| Seconds(10),
    /// Seconds one read of an HTTP request body may wait for data (408; 0: no limit).
    http_body_timeout: Seconds = |_: &Defaults| Seconds(30),
    /// Seconds for a whole HTTP request body (408; 0: no limit).
    http_body_deadline: Seconds = |_: &Defaults| Seconds(120),
    /// Seconds a kept-alive HTTP connection may idle between requests (0: no limit).
    http_keep_alive_timeout: Seconds = |_: &Defaults| Seconds(15),
    /// Seconds a client may stop reading before its stream is ended (over HTTP:
    /// a write without progress, SO_SNDTIMEO; 0: no limit).
    send_timeout: Seconds = |_: &Defaults| Seconds(30),
    /// Bytes queued for one reply stream before that stream is ended.
    send_queue_bytes: usize = |_: &Defaults| 4 << 20,
    /// SO_SNDBUF of accepted HTTP sockets in bytes (0: the system's default).
    http_send_buffer: usize = |_: &Defaults| 0,
    /// Live HTTP connections; at the cap new ones wait in the backlog (0: no limit).
    http_max_connections: usize = |_: &Defaults| 256,
    /// Longest HTTP request line in bytes (414; 0: no limit).
    http_max_request_line: usize = |_: &Defaults| 8 << 10,
    /// Most header fields in an HTTP request (431; 0: no limit).
    http_max_headers: usize = |_: &Defaults| 100,
    /// Most bytes of all header fields of an HTTP request (431; 0: no limit).
    http_max_header_bytes: usize = |_: &Defaults| 64 << 10,
    /// Jobs each pool lane accepts before it answers 503.
    queue_capacity: usize = |_: &Defaults| 256,
    /// Bytes loaded models may take in all (0: the memory available).
    memory_budget: u64 = |_: &Defaults| 0,
    /// Generations each loaded chat model runs at once (0: 4, or fewer on a
    /// machine with one core or under 4 GiB of memory).
    parallel: u32 = |_: &Defaults| 0,
    /// A generation that reaches the end of the context drops the older half
    /// of its tokens after the first (up to a quarter of the context) and goes
    /// on, instead of stopping with `length`.
    context_shift: bool = |_: &Defaults| false,
    /// Seconds a model stays loaded without use (0: until unloaded or evicted).
    keep_alive: Seconds = |_: &Defaults| Seconds(300),
    /// Available memory in bytes below which subscribers get `LowMemory` (0: never).
    low_memory_bytes: u64 = |_: &Defaults| 512 << 20,
    /// WebRTC's UDP port, or a range `first-last` (0: any free port).
    webrtc_port: PortRange = |_: &Defaults| PortRange { first: 0, last: 0 },
    /// Addresses that get WebRTC host candidates; 127.0.0.1 always does
    /// (empty: also the address of the default route).
    webrtc_hosts: List = |_: &Defaults| List::default(),
    /// Public addresses announced as well (a 1:1 NAT in front of this host).
    webrtc_advertise: List = |_: &Defaults| List::default(),
    /// STUN/TURN URLs handed to WebRTC clients with each session.
    ice_servers: List = |_: &Defaults| List::default(),
    /// Most WebRTC sessions open at once.
    webrtc_max_sessions: usize = |_: &Defaults| 100,
    /// Seconds without a packet from the peer after which a WebRTC session is closed.
    webrtc_idle_timeout: Seconds = |_: &Defaults| Seconds(300),
    /// Largest data channel request in bytes (one message, or `Partial` frames).
    webrtc_max_message_bytes: usize = |_: &Defaults| 1 << 20,
    /// The key HTTP clients send (empty: `api_key_file`, else `<data_dir>/token`,
    /// made at first start).
    api_key: Secret = |_: &Defaults| Secret::default(),
    /// A file holding the key (empty: `<data_dir>/token`).
    api_key_file: PathBuf = |_: &Defaults| PathBuf::new(),
    /// Whether HTTP clients must send the key; false only with a loopback bind.
    require_key: bool = |_: &Defaults| true,
    /// A PEM file with the HTTP server's certificate chain: the server then
    /// speaks HTTPS only (set `tls_key` with it).
    tls_cert: PathBuf = |_: &Defaults| PathBuf::new(),
    /// A PEM file with the private key of `tls_cert`.
    tls_key: PathBuf = |_: &Defaults| PathBuf::new(),
    /// Plain HTTP on an address that is not loopback, for use behind a TLS
    /// reverse proxy; refused at start otherwise.
    allow_insecure_http: bool = |_: &Defaults| false,
    /// WebRTC offers one address may make per minute; more get 429 (0: no limit).
    webrtc_offers_per_minute: u32 = |_: &Defaults| 10,
    /// Requests a second one client (an HTTP address, a WebRTC session) may
    /// make on average, in bursts of up to twice that; more get 429 (0: no limit).
    rate_limit: u32 = |_: &Defaults| 50,
    /// Generations one client may have running or queued at once; more get
    /// 429 (0: twice the generation slots).
    generations_per_client: u32 = |_: &Defaults| 0,
    /// Largest file a pull may fetch, in bytes (also capped by the free disk).
    max_pull_bytes: u64 = |_: &Defaults| 64 << 30,
    /// Whether pulls may fetch from loopback addresses, plain http included (tests).
    allow_loopback_pulls: bool = |_: &Defaults| false,
    /// Seconds a pull waits to connect, for an answer, or for more data.
    pull_timeout: Seconds = |_: &Defaults| Seconds(30),
    /// Seconds one pull may take in all (0: no limit).
    pull_deadline: Seconds = |_: &Defaults| Seconds(0),
    /// OpenAI-compatible servers whose models are relayed: `[[upstreams]]`
    /// tables in the file, `NAME=URL` or `URL` (comma-separated) elsewhere.
    upstreams: crate::upstream::UpstreamList = |_: &Defaults| crate::upstream::UpstreamList::default(),
    /// A local chat model that answers requests for upstream models when
    /// no upstream can (empty: none; the reply says so in `fallback_from`).
    upstream_fallback: String = |_: &Defaults| String::new(),
}

/// A secret setting: kept out of `Debug` output (and so out of logs).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<secret>"
        })
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(text: &str) -> Result<Secret, String> {
        Ok(Secret(text.trim().to_string()))
    }
}

impl Config {
    /// Merges the layers (highest first) and fills the defaults.
    pub fn from_layers(
        cli: Layer,
        env: Layer,
        file: Layer,
        home: Option<&Path>,
        xdg_data: Option<&Path>,
    ) -> Config {
        let data_dir = match (xdg_data, home) {
            (Some(xdg), _) => xdg.join("tabagent"),
            (None, Some(home)) => home.join(".local/share/tabagent"),
            (None, None) => PathBuf::from(".tabagent"),
        };
        let mut merged = cli.or(env).or(file);
        // The models dir follows a data dir given in a higher layer than itself.
        if merged.models_dir.is_none() {
            merged.models_dir = merged.data_dir.as_ref().map(|d| d.join("models"));
        }
        Config::resolve(merged, &Defaults { data_dir })
    }
}

/// Reads a TOML config file into a layer.
pub fn read_file(path: &Path) -> Result<Layer, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Native => "native",
            Mode::Http => "http",
            Mode::Webrtc => "webrtc",
            Mode::All => "all",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Layer {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Layer::from_env(|key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())).unwrap()
    }

    #[test]
    fn cli_beats_env_beats_file_beats_default() {
        let file: Layer =
            toml::from_str("bind = \"127.0.0.1:1111\"\nmode = \"http\"\nlog = \"warn\"").unwrap();
        let env = env(&[
            ("TABAGENT_BIND", "127.0.0.1:2222"),
            ("TABAGENT_MODE", "native"),
        ]);
        let cli = Layer {
            bind: Some("127.0.0.1:3333".parse().unwrap()),
            ..Layer::default()
        };
        let config = Config::from_layers(cli, env, file, Some(Path::new("/home/u")), None);
        assert_eq!(config.bind.port(), 3333);
        assert_eq!(config.mode, Mode::Native);
        assert_eq!(config.log, "warn");
    }

    #[test]
    fn data_and_models_dirs_follow_xdg_and_each_other() {
        let config = Config::from_layers(
            Layer::default(),
            Layer::default(),
            Layer::default(),
            Some(Path::new("/h")),
            None,
        );
        assert_eq!(config.data_dir, Path::new("/h/.local/share/tabagent"));
        assert_eq!(
            config.models_dir,
            Path::new("/h/.local/share/tabagent/models")
        );
        let env = env(&[("TABAGENT_DATA_DIR", "/d")]);
        let config = Config::from_layers(
            Layer::default(),
            env,
            Layer::default(),
            None,
            Some(Path::new("/x")),
        );
        assert_eq!(config.models_dir, Path::new("/d/models"));
        let config = Config::from_layers(
            Layer::default(),
            Layer::default(),
            Layer::default(),
            None,
            Some(Path::new("/x")),
        );
        assert_eq!(config.data_dir, Path::new("/x/tabagent"));
    }

    #[test]
    fn bad_values_name_their_source() {
        let error =
            Layer::from_env(|k| (k == "TABAGENT_MODE").then(|| "fast".to_string())).unwrap_err();
        assert!(
            error.contains("TABAGENT_MODE") && error.contains("fast"),
            "{error}"
        );
        assert!(toml::from_str::<Layer>("colour = 1").is_err());
        assert_eq!(
            env(&[("TABAGENT_CORS_ORIGINS", "http://a, http://b")])
                .cors_origins
                .unwrap()
                .0
                .len(),
            2
        );
    }
}
