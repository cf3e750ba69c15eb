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
        /// `https://`, `http://` or `hf://owner/repo/file`.
        url: String,
        /// Expected sha256 (hex).
        sha256: Option<String>,
        /// Where it goes: an id (`ID.gguf`) or `ID/FILE` of an ONNX folder.
        model: Option<String>,
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
    // whatever else is configured.
    if args
        .first()
        .and_then(|a| a.to_str())
        .is_some_and(|a| a.starts_with("chrome-extension://"))
    {
        let settings = Layer {
            mode: Some(Mode::Native),
            ..Layer::default()
        };
        return Ok(Args {
            command: Command::Serve,
            settings,
            config_file: None,
        });
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
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => command = Some(Command::Help),
            Short('V') | Long("version") => command = Some(Command::Version),
            Long("mode") => settings.mode = Some(parser.value()?.parse()?),
            Long("bind") => settings.bind = Some(parser.value()?.parse()?),
            Long("data-dir") => settings.data_dir = Some(parser.value()?.into()),
            Long("models-dir") => settings.models_dir = Some(parser.value()?.into()),
            Long("log") => settings.log = Some(parser.value()?.string()?),
            Long("config") => config_file = Some(parser.value()?.into()),
            Long("extension-id") => extension_ids.push(parser.value()?.string()?),
            Long("browser") => browsers.push(parser.value()?.string()?),
            Long("user-data-dir") => user_data_dir = Some(parser.value()?.into()),
            Long("sha256") => sha256 = Some(parser.value()?.string()?),
            Long("model") => model = Some(parser.value()?.string()?),
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
                    },
                    Some("install-host") => Command::InstallHost {
                        extension_ids: vec![],
                        browsers: vec![],
                        user_data_dir: None,
                    },
                    Some("uninstall-host") => Command::UninstallHost {
                        browsers: vec![],
                        user_data_dir: None,
                    },
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
        },
        other if sha256.is_some() || model.is_some() => {
            return Err(format!("--sha256 and --model belong to pull, not {other:?}").into());
        }
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
                              https://..., http://... or hf://owner/repo/file:
                                --sha256 HEX  check the file; a mismatch discards it
                                --model ID    store as ID.gguf (default: the URL's
                                              .gguf file name), or ID/FILE for a
                                              file of the ONNX model folder ID
    install-host              Register the native messaging host com.tabagent.host
                              with Chrome, Chromium, Edge and Brave:
                                --extension-id ID   (required, repeatable)
                                --browser NAME      chrome|chromium|edge|brave (repeatable;
                                                    default: all)
                                --user-data-dir DIR only the browser profile in DIR
    uninstall-host            Remove that registration (--browser, --user-data-dir)

OPTIONS:
    --mode native|http|webrtc|all   Transports to serve [default: all]
    --bind ADDR:PORT          HTTP address [default: 127.0.0.1:8080]
    --data-dir DIR            Database, parameters [default: $XDG_DATA_HOME/tabagent
                              or ~/.local/share/tabagent]
    --models-dir DIR          Models [default: <data-dir>/models]
    --config FILE             TOML file with any of the settings below
    --log LEVEL               error, warn, info, debug, trace [default: info]
    -h, --help                Print this help
    -V, --version             Print the version

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

When a browser starts tabagent with a chrome-extension:// origin as its first
argument, it serves native messaging on stdin/stdout only.
",
        version = env!("CARGO_PKG_VERSION"),
        env = Layer::env_names().join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Args, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn chrome_origin_means_native_mode() {
        let args = parse_str(&[
            "chrome-extension://abcdefghijklmnopabcdefghijklmnop/",
            "--parent-window=0",
        ])
        .unwrap();
        assert_eq!(args.command, Command::Serve);
        assert_eq!(args.settings.mode, Some(Mode::Native));
    }

    #[test]
    fn options_and_commands() {
        let args = parse_str(&["--mode", "http", "--bind=127.0.0.1:9", "models"]).unwrap();
        assert_eq!(args.command, Command::Models);
        assert_eq!(args.settings.mode, Some(Mode::Http));
        assert_eq!(args.settings.bind.unwrap().port(), 9);
        let args =
            parse_str(&["install-host", "--extension-id", "a", "--extension-id", "b"]).unwrap();
        let ids = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            args.command,
            Command::InstallHost {
                extension_ids: ids,
                browsers: vec![],
                user_data_dir: None
            }
        );
    }

    #[test]
    fn pull_takes_a_url_and_its_options() {
        let args =
            parse_str(&["pull", "hf://o/r/f.gguf", "--sha256", "ab", "--model", "m"]).unwrap();
        assert_eq!(
            args.command,
            Command::Pull {
                url: "hf://o/r/f.gguf".into(),
                sha256: Some("ab".into()),
                model: Some("m".into())
            }
        );
        assert!(parse_str(&["pull"]).unwrap_err().contains("needs a URL"));
        assert!(
            parse_str(&["models", "--model", "m"])
                .unwrap_err()
                .contains("belong to pull")
        );
        assert!(parse_str(&["pull", "a", "b"]).is_err());
    }

    #[test]
    fn mistakes_are_explained() {
        assert!(
            parse_str(&["--mode", "fast"])
                .unwrap_err()
                .contains("unknown mode")
        );
        assert!(
            parse_str(&["install-host"])
                .unwrap_err()
                .contains("--extension-id")
        );
        assert!(
            parse_str(&["frobnicate"])
                .unwrap_err()
                .contains("unknown command")
        );
        assert!(parse_str(&["--bind", "nowhere"]).is_err());
        assert!(
            parse_str(&["--extension-id", "a"])
                .unwrap_err()
                .contains("install-host")
        );
    }
}
