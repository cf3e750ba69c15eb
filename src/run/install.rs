//! The commands that register tabagent with the system: the native
//! messaging host (`install-host`, `uninstall-host`) and the per-user service
//! (`install-service`, `uninstall-service`).

use std::path::PathBuf;
use std::process::ExitCode;

use super::{check_exposure, print};
use crate::cli::Args;
use crate::config::{Config, Mode};

/// `$XDG_CONFIG_HOME`, when set to an absolute path.
fn config_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// This binary's own path (what a manifest or a unit starts).
fn this_binary() -> Result<PathBuf, String> {
    std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| format!("cannot find this binary's path: {e}"))
}

/// What `install-service` and `install-host` write for the server to find
/// again: the config file (`--config` or `TABAGENT_CONFIG`), the data dir
/// and the models dir, as absolute paths.
fn registered_paths(config: &Config, args: &Args) -> (Option<PathBuf>, PathBuf, PathBuf) {
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let config_file = args
        .config_file
        .clone()
        .or_else(|| std::env::var_os("TABAGENT_CONFIG").map(PathBuf::from))
        .map(|f| absolute(&f));
    (
        config_file,
        absolute(&config.data_dir),
        absolute(&config.models_dir),
    )
}

/// `tabagent install-service`: the HTTP server as a per-user service, with
/// the bind address given on the command line or in the environment, the
/// data and models dirs, and the config file.
pub(super) fn install_service(config: &Config, args: &Args) -> Result<ExitCode, String> {
    // The unit must be able to start: the same checks as `serve`, in HTTP mode.
    check_exposure(&Config {
        mode: Mode::Http,
        ..config.clone()
    })?;
    let binary = this_binary()?;
    let bind = args.settings.bind.or_else(|| {
        std::env::var("TABAGENT_BIND")
            .ok()
            .and_then(|b| b.parse().ok())
    });
    let (config_file, data_dir, models_dir) = registered_paths(config, args);
    let command = crate::service::ServiceCommand::new(
        &binary,
        bind,
        Some((&data_dir, &models_dir)),
        config_file.as_deref(),
    );
    let file = crate::service::service_file(&command, &home()?, config_home().as_deref())?;
    crate::service::install(&file)?;
    print(&format!(
        "Wrote {}
  it runs: {} {}
{}",
        file.path.display(),
        command.binary.display(),
        command.args.join(" "),
        file.next_steps
    ))
}

/// `tabagent uninstall-service`.
pub(super) fn uninstall_service() -> Result<ExitCode, String> {
    let (removed, next) = crate::service::uninstall(&home()?, config_home().as_deref())?;
    if removed.is_empty() {
        return print("No tabagent service was installed\n");
    }
    let mut out = String::from("Removed the tabagent service:\n");
    for file in removed {
        out.push_str(&format!("  removed {}\n", file.display()));
    }
    out.push_str(&next);
    print(&out)
}

fn home() -> Result<PathBuf, String> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| "HOME is not set".to_string())
}

/// `tabagent install-host`: the native messaging manifest (through a
/// launcher when settings were given), and the ids recorded as allowed.
pub(super) fn install_host(
    config: &Config,
    args: &Args,
    extension_ids: &[String],
    browsers: &[String],
    user_data_dir: Option<&std::path::Path>,
) -> Result<ExitCode, String> {
    let binary = this_binary()?;
    // Settings given here reach the host through a launcher script (the
    // browser starts a host with none of ours): without it, a host
    // registered with `--data-dir X` would keep its history elsewhere.
    let (config_file, data_dir, models_dir) = registered_paths(config, args);
    let mut options: Vec<(&str, &std::path::Path)> = Vec::new();
    if args.settings.data_dir.is_some() {
        options.push(("--data-dir", &data_dir));
    }
    if args.settings.models_dir.is_some() {
        options.push(("--models-dir", &models_dir));
    }
    if let Some(file) = &config_file {
        options.push(("--config", file));
    }
    let host = if options.is_empty() {
        binary.clone()
    } else {
        crate::host::write_launcher(&data_dir, &binary, &options)?
    };
    let dirs = crate::host::targets(browsers, &home()?, user_data_dir)?;
    let written = crate::host::install(&dirs, &host, extension_ids)?;
    // The same extensions may then call the HTTP server (the WebRTC fallback).
    let allowed = crate::host::allow_extensions(&config.data_dir, extension_ids)?;
    let mut out = format!(
        "Registered {} -> {}\n",
        crate::host::HOST_NAME,
        host.display()
    );
    for file in written {
        out.push_str(&format!("  wrote {}\n", file.display()));
    }
    out.push_str(&format!("  allowed its origins in {}\n", allowed.display()));
    print(&out)
}

/// `tabagent uninstall-host`.
pub(super) fn uninstall_host(
    browsers: &[String],
    user_data_dir: Option<&std::path::Path>,
) -> Result<ExitCode, String> {
    let dirs = crate::host::targets(browsers, &home()?, user_data_dir)?;
    let removed = crate::host::uninstall(&dirs)?;
    let mut out = format!("Unregistered {}\n", crate::host::HOST_NAME);
    if removed.is_empty() {
        out.push_str("  (it was not registered)\n");
    }
    for file in removed {
        out.push_str(&format!("  removed {}\n", file.display()));
    }
    print(&out)
}
