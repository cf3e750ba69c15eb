//! Runs a parsed command: resolves the config, starts the transports the mode
//! asks for, and maps the outcome to an exit code.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use crate::cli::{Args, Command};
use crate::config::{self, Config, Layer, Mode};
use crate::event_loop::{EventLoop, Exit};
use crate::handler::{Handler, HandlerConfig};
use crate::jobs::JobLimits;
use crate::outbox::OutboxLimits;
use crate::transport::http::{HttpConfig, HttpLimits, HttpServer};

mod install;
use install::{install_host, install_service, uninstall_host, uninstall_service};

/// Runs `args` to completion.
pub fn run(args: Args) -> ExitCode {
    let started = Instant::now();
    let result = match args.command {
        Command::Help => print(&crate::cli::help()),
        Command::Version => print(&format!("tabagent {}\n", env!("CARGO_PKG_VERSION"))),
        ref command => load_config(&args).and_then(|config| {
            let logger = crate::logging::init(&config.log, config.log_format);
            match command {
                Command::Serve => serve(&args, config, logger, started),
                Command::Models => list_models(&config),
                Command::Pull {
                    url,
                    sha256,
                    model,
                    allow_unverified,
                } => pull(&config, url, sha256, model, *allow_unverified),
                Command::Token { rotate } => token(&config, *rotate),
                Command::AllowExtension { id } => allow_extension(&config, id),
                Command::InstallHost {
                    extension_ids,
                    browsers,
                    user_data_dir,
                } => install_host(
                    &config,
                    &args,
                    extension_ids,
                    browsers,
                    user_data_dir.as_deref(),
                ),
                Command::UninstallHost {
                    browsers,
                    user_data_dir,
                } => uninstall_host(browsers, user_data_dir.as_deref()),
                Command::InstallService => install_service(&config, &args),
                Command::UninstallService => uninstall_service(),
                Command::Help | Command::Version => unreachable!("handled above"),
            }
        }),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            log::error!("{message}");
            eprintln!("tabagent: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print(text: &str) -> Result<ExitCode, String> {
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// The settings: `args` over the environment over the config file over the
/// defaults (read again on SIGHUP).
pub(crate) fn load_config(args: &Args) -> Result<Config, String> {
    let env = Layer::from_env(|key| std::env::var(key).ok())?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let config_file = args
        .config_file
        .clone()
        .or_else(|| std::env::var_os("TABAGENT_CONFIG").map(PathBuf::from));
    let file = match config_file {
        Some(path) => config::read_file(&path)?,
        None => Layer::default(),
    };
    let xdg = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    Ok(Config::from_layers(
        args.settings.clone(),
        env,
        file,
        home.as_deref(),
        xdg.as_deref(),
    ))
}

/// Refuses settings that would open the server to more than they say.
pub(crate) fn check_exposure(config: &Config) -> Result<(), String> {
    if config.mode == Mode::Native {
        return Ok(());
    }
    if !config.require_key && !config.bind.ip().is_loopback() {
        return Err(format!(
            "require_key = false is allowed only on a loopback bind, and {} is not one: \
             anyone who can reach it could use the server; keep the key (`tabagent token` \
             prints it) or bind 127.0.0.1",
            config.bind
        ));
    }
    if !config.require_key && config.cors_origins.0.iter().any(|o| o == "*") {
        return Err(
            "cors_origins = \"*\" lets every web page call the server: it is allowed only \
             while a key is required (require_key = true)"
                .into(),
        );
    }
    let tls = !config.tls_cert.as_os_str().is_empty();
    if tls == config.tls_key.as_os_str().is_empty() {
        return Err(
            "tls_cert and tls_key are set together: the certificate chain and its private \
             key, as PEM files"
                .into(),
        );
    }
    if !tls && !config.allow_insecure_http && !config.bind.ip().is_loopback() {
        return Err(format!(
            "{} is not a loopback address, and plain HTTP there would carry the API key and \
             every chat in clear text: set tls_cert and tls_key (PEM files) to serve HTTPS, \
             or allow_insecure_http = true when a TLS reverse proxy in front is the only way in",
            config.bind
        ));
    }
    Ok(())
}

fn serve(
    args: &Args,
    config: Config,
    logger: Arc<crate::logging::Logger>,
    started: Instant,
) -> Result<ExitCode, String> {
    check_exposure(&config)?;
    crate::logging::check_filter(&config.log)?;
    if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
        log::warn!(
            "cannot create the data dir {}: {e}",
            config.data_dir.display()
        );
    }
    let key = Arc::new(crate::auth::KeySource::from_config(&config)?);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let handler = Arc::new(Handler::new(
        HandlerConfig {
            data_dir: config.data_dir.clone(),
            models_dir: config.models_dir.clone(),
            limits: JobLimits {
                model_threads: 1,
                // Every slot of a few loaded models, and requests waiting for one.
                generate_threads: 32,
                io_threads: cores.max(2),
                queue_capacity: config.queue_capacity,
            },
            memory_budget: config.memory_budget,
            keep_alive: std::time::Duration::from_secs(config.keep_alive.0),
            low_memory_bytes: config.low_memory_bytes,
            parallel: config.parallel,
            context_shift: config.context_shift,
            pull: crate::fetch::PullPolicy::from_config(&config),
        },
        started,
    )?);
    handler.limiter().set(crate::reload::rate_settings(
        &config,
        handler.generation_slots(),
    ));
    handler.preload(&config.preload.0);
    let upstreams = crate::upstream::Upstreams::new(&config.upstreams, &config.upstream_fallback)?;
    if !upstreams.is_empty() {
        log::info!("relaying the models of upstreams {}", config.upstreams);
        handler.set_upstreams(Arc::new(upstreams));
    }

    let want_native = match config.mode {
        Mode::Native => true,
        Mode::All => !std::io::stdin().is_terminal(),
        Mode::Http | Mode::Webrtc => false,
    };
    let outbox = OutboxLimits {
        max_bytes: config.send_queue_bytes,
        // 0: a stalled reader is never dropped for the time alone.
        stall: match config.send_timeout.0 {
            0 => std::time::Duration::MAX,
            seconds => std::time::Duration::from_secs(seconds),
        },
    };
    let event_loop = match EventLoop::new(
        Arc::clone(&handler),
        want_native,
        config.mode == Mode::Native,
        outbox,
    ) {
        Ok(event_loop) => event_loop,
        Err(e) if config.mode == Mode::All => {
            log::info!("native messaging is off: {e}");
            EventLoop::new(Arc::clone(&handler), false, false, outbox).map_err(|e| e.to_string())?
        }
        Err(e) => return Err(format!("cannot start the event loop: {e}")),
    };
    let mut event_loop = event_loop;
    event_loop.set_api_key(Arc::clone(&key));
    if matches!(config.mode, Mode::Webrtc | Mode::All) {
        let started = crate::transport::rtc::RtcSettings::from_config(&config)
            .and_then(|settings| event_loop.start_webrtc(settings).map_err(|e| e.to_string()));
        match started {
            Ok(_) => {}
            Err(e) if config.mode == Mode::All => log::info!("WebRTC is off: {e}"),
            Err(e) => return Err(format!("cannot start WebRTC: {e}")),
        }
    }

    let http = if config.mode == Mode::Native {
        None
    } else {
        let tls = if config.tls_cert.as_os_str().is_empty() {
            None
        } else {
            Some(crate::transport::http::tls::server_config(
                &config.tls_cert,
                &config.tls_key,
            )?)
        };
        let http_config = HttpConfig {
            bind: config.bind,
            tls,
            cors_origins: config.cors_origins.0.clone(),
            key: config.require_key.then(|| Arc::clone(&key)),
            data_dir: config.data_dir.clone(),
            allowed_hosts: config.allowed_hosts.0.clone(),
            max_body_bytes: config.max_body_bytes,
            workers: cores.max(2),
            outbox,
            limits: HttpLimits::from_config(&config),
        };
        match HttpServer::start(http_config, Arc::clone(&handler)) {
            Ok(server) => Some(server),
            Err(e) if config.mode == Mode::All => {
                log::warn!(
                    "HTTP is off: cannot listen on {}: {e}; the other transports keep serving",
                    config.bind
                );
                None
            }
            Err(e) => return Err(format!("cannot listen on {}: {e}", config.bind)),
        }
    };
    log::info!(
        "tabagent {} ready in {:?} (mode {})",
        env!("CARGO_PKG_VERSION"),
        started.elapsed(),
        config.mode
    );
    let mut reloader = crate::reload::Reloader::new(
        args.clone(),
        config,
        logger,
        Arc::clone(&handler),
        http.as_ref().map(HttpServer::guard),
    );
    event_loop.on_reload(Box::new(move || reloader.reload()));

    let exit = event_loop.run(|| {
        if let Some(http) = http {
            http.stop();
        }
    });
    match exit.map_err(|e| format!("the event loop failed: {e}"))? {
        Exit::Clean => Ok(ExitCode::SUCCESS),
        Exit::ProtocolError => Ok(ExitCode::FAILURE),
    }
}

fn list_models(config: &Config) -> Result<ExitCode, String> {
    let models = crate::models::scan_models(&config.models_dir);
    let mut out = format!("Models in {}:\n", config.models_dir.display());
    if models.is_empty() {
        out.push_str("  (none; `make models` fetches the defaults)\n");
    }
    for model in models {
        let kind = serde_json::to_value(model.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let format = serde_json::to_value(model.format)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {:<40} {:<5} {:<10} {:>8.1} MB\n",
            model.id,
            format,
            kind,
            model.size_bytes as f64 / 1e6
        ));
    }
    print(&out)
}

/// `tabagent pull`: the same download as PullModel, with a bar on stderr;
/// Ctrl-C stops it and keeps the part for the next run to resume.
fn pull(
    config: &Config,
    url: &str,
    sha256: &Option<String>,
    model: &Option<String>,
    allow_unverified: bool,
) -> Result<ExitCode, String> {
    let request = crate::api::PullModelRequest {
        url: url.to_string(),
        model: model.clone(),
        sha256: sha256.clone(),
        allow_unverified,
    };
    let policy = crate::fetch::PullPolicy::from_config(config);
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&cancel)) {
            log::warn!("cannot catch signal {signal}: {e}");
        }
    }
    let mut stderr = std::io::stderr();
    let mut bar = crate::pull::ProgressBar::new(stderr.is_terminal());
    let result = crate::pull::pull(
        &config.models_dir,
        &request,
        &policy,
        &cancel,
        &mut |progress| {
            let _ = stderr.write_all(bar.draw(&progress, Instant::now()).as_bytes());
            true
        },
    );
    let _ = stderr.write_all(bar.finish().as_bytes());
    let done = result.map_err(|e| e.detail)?;
    print(&format!(
        "{} ({} bytes, sha256 {}) in {}\n",
        done.model,
        done.size_bytes,
        done.sha256,
        config.models_dir.display()
    ))
}

/// `tabagent token [--rotate]`: prints the key (made if there is none yet).
fn token(config: &Config, rotate: bool) -> Result<ExitCode, String> {
    let key = if rotate {
        let key = crate::auth::rotate(config)?;
        log::info!("a new API key is in place; running servers take it within a second");
        key
    } else {
        crate::auth::print_key(config)?
    };
    print(&format!("{}\n", key.as_str()))
}

/// `tabagent allow-extension ID`: lets that extension's origin in.
fn allow_extension(config: &Config, id: &str) -> Result<ExitCode, String> {
    let file = crate::host::allow_extensions(&config.data_dir, &[id.to_string()])?;
    print(&format!(
        "chrome-extension://{id} may call the HTTP server (recorded in {})\n",
        file.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(settings: &str) -> Config {
        let file: Layer = toml::from_str(settings).unwrap();
        Config::from_layers(
            Layer::default(),
            Layer::default(),
            file,
            Some(std::path::Path::new("/h")),
            None,
        )
    }

    #[test]
    fn plain_http_off_loopback_needs_tls_or_a_proxy() {
        assert!(check_exposure(&config("bind = \"127.0.0.1:1\"")).is_ok());
        let error = check_exposure(&config("bind = \"0.0.0.0:1\"")).unwrap_err();
        assert!(error.contains("not a loopback address"), "{error}");
        let behind_proxy = "bind = \"0.0.0.0:1\"\nallow_insecure_http = true";
        assert!(check_exposure(&config(behind_proxy)).is_ok());
        let tls = "bind = \"0.0.0.0:1\"\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"";
        assert!(check_exposure(&config(tls)).is_ok());
        let half = "bind = \"127.0.0.1:1\"\ntls_cert = \"/c.pem\"";
        let error = check_exposure(&config(half)).unwrap_err();
        assert!(error.contains("tls_cert and tls_key"), "{error}");
        // Native messaging listens on nothing.
        assert!(check_exposure(&config("bind = \"0.0.0.0:1\"\nmode = \"native\"")).is_ok());
    }
}
