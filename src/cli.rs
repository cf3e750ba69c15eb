//! The command line, parsed with lexopt into plain values (no I/O here).

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::prelude::*;

use crate::config::{Layer, Mode};

/// What the user asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Start the server (the default).
    Serve,
    /// List the models found in the models dir.
    Models,
    /// Download a model into the models dir.
    Pull {
        /// `https://` or `hf://owner/repo/file` (`http://` on loopback, for tests).
        url: String,
        /// Expected sha256 (hex).
        sha256: Option<String>,
        /// Where it goes: an id (`ID.gguf`) or `ID/FILE` of an ONNX folder.
        model: Option<String>,
        /// Pull without a sha256 to check (`--allow-unverified`).
        allow_unverified: bool,
    },
    /// Print the API key (`--rotate`: replace it first).
    Token {
        /// Make a new key in place of the old one.
        rotate: bool,
    },
    /// Let an extension's origin call the HTTP server.
    AllowExtension {
        /// The extension id (32 letters a-p).
        id: String,
    },
    /// Write the native messaging host manifest for the browsers.
    InstallHost {
        /// Extension ids allowed to start the host.
        extension_ids: Vec<String>,
        /// Browsers to register with (all known ones when empty).
        browsers: Vec<String>,
        /// Register for one browser profile dir only (`--user-data-dir`).
        user_data_dir: Option<PathBuf>,
    },
    /// Remove the native messaging host manifest.
    UninstallHost {
        /// Browsers to unregister from (all known ones when empty).
        browsers: Vec<String>,
        /// Unregister from one browser profile dir only.
        user_data_dir: Option<PathBuf>,
    },
    /// Write a per-user service (systemd user unit, launchd agent) that runs
    /// the HTTP server.
    InstallService,
    /// Remove that service.
    UninstallService,
    /// Print the help text.
    Help,
    /// Print the version.
    Version,
}

/// The parsed command line.
#[derive(Debug, Clone)]
pub struct Args {
    /// The command.
    pub command: Command,
    /// Settings given as options.
    pub settings: Layer,
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, String> {
    let args: Vec<OsString> = args.into_iter().collect();
    // Chrome starts a native messaging host with the caller's origin as the
    // first argument (and `--parent-window=N` on Windows): that is native mode,
    // whatever else is configured. Options after the origin are the ones
    // `install-host` wrote into its launcher (data and models dirs, config).
    if args
        .first()
        .and_then(|a| a.to_str())
        .is_some_and(|a| a.starts_with("chrome-extension://"))
    {
        let options = args[1..]
            .iter()
            .filter(|a| {
                !a.to_str()
                    .is_some_and(|a| a.starts_with("--parent-window="))
            })
            .cloned()
            .collect();
        let mut parsed = parse_options(options).map_err(|e| e.to_string())?;
        if parsed.command != Command::Serve {
            return Err(format!(
                "a native messaging host only serves, not {:?}",
                parsed.command
            ));
        }
        parsed.settings.mode = Some(Mode::Native);
        return Ok(parsed);
    }
    parse_options(args).map_err(|e| e.to_string())
}

fn parse_options(args: Vec<OsString>) -> Result<Args, lexopt::Error> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut settings = Layer::default();
    let mut config_file = None;
    let mut command = None;
    let mut extension_ids = Vec::new();
    let mut browsers = Vec::new();
    let mut user_data_dir = None;
    let (mut pull_url, mut sha256, mut model) = (None, None, None);
    let (mut allow_unverified, mut rotate, mut extension) = (false, false, None);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => command = Some(Command::Help),
            Short('V') | Long("version") => command = Some(Command::Version),
            Long("mode") => settings.mode = Some(parser.value()?.parse()?),
            Long("bind") => settings.bind = Some(parser.value()?.parse()?),
            Long("data-dir") => settings.data_dir = Some(parser.value()?.into()),
            Long("models-dir") => settings.models_dir = Some(parser.value()?.into()),
            Long("log") => settings.log = Some(parser.value()?.string()?),
            Long("log-format") => settings.log_format = Some(parser.value()?.parse()?),
            Long("config") => config_file = Some(parser.value()?.into()),
            Long("extension-id") => extension_ids.push(parser.value()?.string()?),
            Long("browser") => browsers.push(parser.value()?.string()?),
            Long("user-data-dir") => user_data_dir = Some(parser.value()?.into()),
            Long("sha256") => sha256 = Some(parser.value()?.string()?),
            Long("model") => model = Some(parser.value()?.string()?),
            Long("allow-unverified") => allow_unverified = true,
            Long("rotate") => rotate = true,
            Long("api-key") => {
                settings.api_key = Some(crate::config::Secret(parser.value()?.string()?))
            }
            Long("api-key-file") => settings.api_key_file = Some(parser.value()?.into()),
            Long("tls-cert") => settings.tls_cert = Some(parser.value()?.into()),
            Long("tls-key") => settings.tls_key = Some(parser.value()?.into()),
            Long("upstream") => {
                let more: crate::upstream::UpstreamList = parser.value()?.parse()?;
                settings
                    .upstreams
                    .get_or_insert_with(Default::default)
                    .0
                    .extend(more.0);
            }
            Long("upstream-fallback") => {
                settings.upstream_fallback = Some(parser.value()?.string()?)
            }
            Value(id)
                if matches!(command, Some(Command::AllowExtension { .. }))
                    && extension.is_none() =>
            {
                extension = Some(id.string()?)
            }
            Value(url) if matches!(command, Some(Command::Pull { .. })) && pull_url.is_none() => {
                pull_url = Some(url.string()?)
            }
            Value(name) if command.is_none() => {
                command = Some(match name.to_str() {
                    Some("serve") => Command::Serve,
                    Some("models") => Command::Models,
                    Some("pull") => Command::Pull {
                        url: String::new(),
                        sha256: None,
                        model: None,
                        allow_unverified: false,
                    },
                    Some("token") => Command::Token { rotate: false },
                    Some("allow-extension") => Command::AllowExtension { id: String::new() },
                    Some("install-host") => Command::InstallHost {
                        extension_ids: vec![],
                        browsers: vec![],
                        user_data_dir: None,
                    },
                    Some("uninstall-host") => Command::UninstallHost {
                        browsers: vec![],
                        user_data_dir: None,
                    },
                    Some("install-service") => Command::InstallService,
                    Some("uninstall-service") => Command::UninstallService,
                    _ => {
                        return Err(lexopt::Error::from(format!(
                            "unknown command {name:?}; see --help"
                        )));
                    }
                })
            }
            _ => return Err(arg.unexpected()),
        }
    }
    let command = match command.unwrap_or(Command::Serve) {
        Command::Pull { .. } => Command::Pull {
            url: pull_url
                .ok_or("pull needs a URL: tabagent pull URL [--sha256 HEX] [--model ID]")?,
            sha256,
            model,
            allow_unverified,
        },
        other if sha256.is_some() || model.is_some() || allow_unverified => {
            return Err(format!(
                "--sha256, --model and --allow-unverified belong to pull, not {other:?}"
            )
            .into());
        }
        Command::Token { .. } => Command::Token { rotate },
        other if rotate => {
            return Err(format!("--rotate belongs to token, not {other:?}").into());
        }
        Command::AllowExtension { .. } => Command::AllowExtension {
            id: extension.ok_or("allow-extension needs an id: tabagent allow-extension ID")?,
        },
        Command::InstallHost { .. } => {
            if extension_ids.is_empty() {
                return Err("install-host needs at least one --extension-id".into());
            }
            Command::InstallHost {
                extension_ids,
                browsers,
                user_data_dir,
            }
        }
        Command::UninstallHost { .. } if extension_ids.is_empty() => Command::UninstallHost {
            browsers,
            user_data_dir,
        },
        other if !extension_ids.is_empty() || !browsers.is_empty() || user_data_dir.is_some() => {
            return Err(format!("--extension-id, --browser and --user-data-dir belong to install-host, not {other:?}").into());
        }
        other => other,
    };
    Ok(Args {
        command,
        settings,
        config_file,
    })
}

/// The text of `--help`.
pub fn help() -> String {
    format!(
        "tabagent {version} — private, on-device AI for a browser extension

USAGE:
    tabagent [OPTIONS] [COMMAND]

COMMANDS:
    serve                     Start the server (the default)
    models                    List the models found in the models dir
    pull URL                  Download a model into the models dir, resuming an
                              interrupted download (progress on stderr); URL is
                              https://... or hf://owner/repo/file (http:// only
                              from loopback, with allow_loopback_pulls):
                                --sha256 HEX  check the file; a mismatch discards it
                                --model ID    store as ID.gguf (default: the URL's
                                              .gguf file name), or ID/FILE for a
                                              file of the ONNX model folder ID
                                --allow-unverified  pull without --sha256 (needed
                                              unless ID is in the catalog)
    install-host              Register the native messaging host com.tabagent.host
                              with Chrome, Chromium, Edge and Brave (and let the
                              same extensions call the HTTP server):
                                --extension-id ID   (required, repeatable)
                                --browser NAME      chrome|chromium|edge|brave (repeatable;
                                                    default: all)
                                --user-data-dir DIR only the browser profile in DIR
    uninstall-host            Remove that registration (--browser, --user-data-dir)
    token [--rotate]          Print the API key HTTP clients send (made at first
                              start in <data-dir>/token); --rotate replaces it
    allow-extension ID        Let the extension ID call the HTTP server (for a
                              browser-only install; install-host records its ids)
    install-service           Run the HTTP server as a per-user service: writes a
                              systemd user unit (~/.config/systemd/user/tabagent.service;
                              on macOS a launchd agent) with this --bind, data and
                              models dirs and --config, and says how to start it
    uninstall-service         Remove that service (and its systemd enablement)

OPTIONS:
    --mode native|http|webrtc|all   Transports to serve [default: all]
    --bind ADDR:PORT          HTTP address [default: 127.0.0.1:8080]
    --data-dir DIR            Database, parameters [default: $XDG_DATA_HOME/tabagent
                              or ~/.local/share/tabagent]
    --models-dir DIR          Models [default: <data-dir>/models]
    --config FILE             TOML file with any of the settings below
    --log LEVEL               error, warn, info, debug, trace [default: info]
    --log-format text|json    Log lines as text or one JSON object each
                              [default: text]
    --api-key KEY             The key HTTP clients must send (other users can read
                              command lines: prefer --api-key-file or the env)
    --api-key-file FILE       A file holding the key [default: <data-dir>/token]
    --tls-cert FILE           Serve HTTPS with this PEM certificate chain...
    --tls-key FILE            ...and this PEM private key (both, or neither)
    --upstream [NAME=]URL     Relay the models of this OpenAI-compatible server
                              (llama-server, Ollama, vLLM: its base URL, e.g.
                              http://box:8080/v1); repeatable; replaces the
                              file's [[upstreams]] (keys, priorities, caps and
                              timeouts are set there)
    --upstream-fallback ID    Local chat model answering for upstream models
                              when no upstream can
    -h, --help                Print this help
    -V, --version             Print the version

API page: GET /docs on the HTTP server (Swagger UI over /openapi.yaml; the page
needs no key, its Authorize button takes the key for the operations).

Every setting is also read from the environment and the config file
(precedence: command line > environment > file > default):
    {env}
In the file, use the lower-case name without TABAGENT_ (e.g. bind = \"127.0.0.1:9000\").

WebRTC (modes webrtc and all) shares the HTTP port for signaling (/v1/webrtc/*)
and takes UDP on TABAGENT_WEBRTC_PORT (0: any free port; or a range such as
50000-50100). Host candidates: 127.0.0.1 always, plus TABAGENT_WEBRTC_HOSTS
(default: the address of the default route); TABAGENT_WEBRTC_ADVERTISE adds
public addresses (1:1 NAT); TABAGENT_ICE_SERVERS are STUN/TURN URLs handed to
clients. Limits: TABAGENT_WEBRTC_MAX_SESSIONS [100], TABAGENT_WEBRTC_IDLE_TIMEOUT
seconds without a packet [300], TABAGENT_WEBRTC_MAX_MESSAGE_BYTES per request
[1048576].

HTTP limits (0: no limit): TABAGENT_HTTP_HEAD_TIMEOUT seconds for a request head
[10], TABAGENT_HTTP_BODY_TIMEOUT seconds one body read may wait [30],
TABAGENT_HTTP_BODY_DEADLINE seconds for a whole body [120] (then 408),
TABAGENT_HTTP_KEEP_ALIVE_TIMEOUT idle seconds between requests [15],
TABAGENT_HTTP_MAX_CONNECTIONS [256] (more wait in the backlog),
TABAGENT_HTTP_MAX_REQUEST_LINE bytes [8192] (414), TABAGENT_HTTP_MAX_HEADERS
[100] and TABAGENT_HTTP_MAX_HEADER_BYTES [65536] (431); bodies are at most
TABAGENT_MAX_BODY_BYTES [67108864] (413). TABAGENT_SEND_TIMEOUT: seconds a client
may stop reading before its stream is ended [30; 0: no limit];
TABAGENT_SEND_QUEUE_BYTES queued per reply stream before it is ended [4194304];
TABAGENT_HTTP_SEND_BUFFER: SO_SNDBUF of accepted sockets in bytes [0: the
system's].

Security: every HTTP route but /health needs the key, as `Authorization: Bearer
KEY` or `x-api-key: KEY` (TABAGENT_REQUIRE_KEY=false turns that off, for a
loopback bind only). Browser origins allowed: the extensions recorded by
install-host and allow-extension, plus TABAGENT_CORS_ORIGINS. WebRTC offers:
TABAGENT_WEBRTC_OFFERS_PER_MINUTE per address [10] (then 429). Pulls fetch https
only, never from loopback, private or link-local addresses (redirects
included), at most TABAGENT_MAX_PULL_BYTES [68719476736] and the free disk,
waiting TABAGENT_PULL_TIMEOUT seconds [30] at most for the server
(TABAGENT_PULL_DEADLINE: seconds in all, 0: no limit); they need a sha256 unless
the model is in the catalog or allow_unverified is given.
TABAGENT_ALLOW_LOOPBACK_PULLS=true lets pulls use loopback (tests).

Rate limits (per HTTP address and per WebRTC session; native messaging is
never limited): TABAGENT_RATE_LIMIT requests a second on average, in bursts of
twice that [50; 0: no limit]; TABAGENT_GENERATIONS_PER_CLIENT generations
running or queued at once [0: twice the generation slots]; over a limit: 429
with Retry-After (an Error frame with retry_after elsewhere).

Operations: GET /metrics (with the key) answers Prometheus' text format.
Every log line of a request carries its id (HTTP's X-Request-Id), and its last
line (target tabagent::access) its route, status, duration and tokens.
TABAGENT_PRELOAD lists model ids loaded at start in the background (/health
says loading meanwhile). SIGHUP reads the config file again and applies log,
cors_origins, the rate limits, keep_alive, memory_budget and the key settings;
a file with an error is refused whole and the old settings stay.
HTTPS: TABAGENT_TLS_CERT and TABAGENT_TLS_KEY (PEM files) make the HTTP port
speak HTTPS only. A bind that is not loopback is refused without them, unless
TABAGENT_ALLOW_INSECURE_HTTP=true (plain HTTP behind a TLS reverse proxy).

When a browser starts tabagent with a chrome-extension:// origin as its first
argument, it serves native messaging on stdin/stdout only (settings may follow
the origin). install-host given --data-dir, --models-dir or a config file
registers a launcher, <data_dir>/native-host, that passes them on.
",
        version = env!("CARGO_PKG_VERSION"),
        env = Layer::env_names().join(", "),
    )
}

#[cfg(test)]
mod tests;
