//! `tabagent install-service` / `uninstall-service`: the HTTP server as a
//! per-user service that starts with the session — a systemd user unit on
//! Linux, a launchd agent on macOS.
//!
//! The unit runs `tabagent --mode http` with the bind address, data and
//! models dirs and config file in force when it was installed; everything
//! else comes from the config file and the defaults, as for a server started
//! by hand (the key is `<data_dir>/token`). Logs go to stderr: the journal
//! (`journalctl --user -u tabagent`) or `~/Library/Logs/tabagent.log`.
//! Nothing here runs systemctl or launchctl: the commands print what to run,
//! so installing never starts or stops anything behind the user's back.
//! The Debian package ships the same unit for `/usr/bin/tabagent`
//! (`assets/tabagent.service`, held equal to [`systemd_unit`] by a test).

use std::path::{Path, PathBuf};

/// The systemd unit's name.
pub const UNIT_NAME: &str = "tabagent.service";
/// The launchd agent's label (and file name, with `.plist`).
pub const LAUNCHD_LABEL: &str = "com.tabagent.server";

/// The command line the service runs: the binary, then its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCommand {
    /// The absolute path of the binary.
    pub binary: PathBuf,
    /// Its arguments (`--mode http` first).
    pub args: Vec<String>,
}

impl ServiceCommand {
    /// `binary --mode http` plus the settings given.
    pub fn new(
        binary: &Path,
        bind: Option<std::net::SocketAddr>,
        dirs: Option<(&Path, &Path)>,
        config_file: Option<&Path>,
    ) -> ServiceCommand {
        let mut args = vec!["--mode".to_string(), "http".to_string()];
        if let Some(bind) = bind {
            args.extend(["--bind".to_string(), bind.to_string()]);
        }
        if let Some((data, models)) = dirs {
            args.extend(["--data-dir".to_string(), data.display().to_string()]);
            args.extend(["--models-dir".to_string(), models.display().to_string()]);
        }
        if let Some(file) = config_file {
            args.extend(["--config".to_string(), file.display().to_string()]);
        }
        ServiceCommand {
            binary: binary.to_path_buf(),
            args,
        }
    }

    fn words(&self) -> impl Iterator<Item = String> + '_ {
        std::iter::once(self.binary.display().to_string()).chain(self.args.iter().cloned())
    }
}

/// One word of a unit's `ExecStart`, quoted as systemd reads it: `%`
/// specifiers and `$` variables escaped, quotes and backslashes too.
fn systemd_word(word: &str) -> Result<String, String> {
    if word.chars().any(char::is_control) {
        return Err(format!("{word:?} cannot go into a unit file"));
    }
    let escaped = word
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    Ok(format!("\"{escaped}\""))
}

/// The systemd user unit.
pub fn systemd_unit(command: &ServiceCommand) -> Result<String, String> {
    let exec = command
        .words()
        .map(|w| systemd_word(&w))
        .collect::<Result<Vec<_>, _>>()?
        .join(" ");
    Ok(format!(
        "# tabagent's HTTP server as a systemd user service. Written by \
`tabagent install-service`\n\
# (or installed by the Debian package); enable it with\n\
#   systemctl --user enable --now {UNIT_NAME}\n\
# and read its log with `journalctl --user -u tabagent`.\n\
[Unit]\n\
Description=tabagent: private, on-device AI over a local HTTP API\n\
\n\
[Service]\n\
Type=exec\n\
ExecStart={exec}\n\
Restart=on-failure\n\
RestartSec=5\n\
NoNewPrivileges=yes\n\
\n\
[Install]\n\
WantedBy=default.target\n"
    ))
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The launchd agent (macOS); stderr goes to `log`.
pub fn launchd_plist(command: &ServiceCommand, log: &Path) -> String {
    let arguments: String = command
        .words()
        .map(|w| format!("    <string>{}</string>\n", xml(&w)))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
<!-- tabagent's HTTP server as a launchd agent, written by `tabagent install-service`. -->\n\
<plist version=\"1.0\">\n\
<dict>\n\
  <key>Label</key>\n\
  <string>{LAUNCHD_LABEL}</string>\n\
  <key>ProgramArguments</key>\n\
  <array>\n\
{arguments}  </array>\n\
  <key>RunAtLoad</key>\n\
  <true/>\n\
  <key>KeepAlive</key>\n\
  <dict>\n\
    <key>SuccessfulExit</key>\n\
    <false/>\n\
  </dict>\n\
  <key>ProcessType</key>\n\
  <string>Background</string>\n\
  <key>StandardErrorPath</key>\n\
  <string>{}</string>\n\
</dict>\n\
</plist>\n",
        xml(&log.display().to_string())
    )
}

/// Where the service file goes, for this platform, and its text.
pub struct ServiceFile {
    /// The file.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// What to run next, for the user.
    pub next_steps: String,
}

/// The service file for this platform; `config_home` is `$XDG_CONFIG_HOME`
/// (absolute) or None.
pub fn service_file(
    command: &ServiceCommand,
    home: &Path,
    config_home: Option<&Path>,
) -> Result<ServiceFile, String> {
    if cfg!(target_os = "macos") {
        let path = home
            .join("Library/LaunchAgents")
            .join(format!("{LAUNCHD_LABEL}.plist"));
        let log = home.join("Library/Logs/tabagent.log");
        let next_steps = format!(
            "start it now and at every login with\n  launchctl bootstrap gui/$(id -u) {}\n",
            path.display()
        );
        Ok(ServiceFile {
            text: launchd_plist(command, &log),
            path,
            next_steps,
        })
    } else {
        let path = systemd_user_dir(home, config_home).join(UNIT_NAME);
        Ok(ServiceFile {
            text: systemd_unit(command)?,
            path,
            next_steps: format!(
                "start it now and with every session with\n  systemctl --user daemon-reload\n  systemctl --user enable --now {UNIT_NAME}\n(to keep it running without a session: loginctl enable-linger $USER)\n"
            ),
        })
    }
}

/// `$XDG_CONFIG_HOME/systemd/user`, or `~/.config/systemd/user`.
fn systemd_user_dir(home: &Path, config_home: Option<&Path>) -> PathBuf {
    config_home
        .map(Path::to_path_buf)
        .unwrap_or_else(|| home.join(".config"))
        .join("systemd/user")
}

/// Writes the service file (replacing an older one).
pub fn install(file: &ServiceFile) -> Result<(), String> {
    let dir = file.path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    crate::fsutil::write_atomic(&file.path, file.text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", file.path.display()))
}

/// Removes the service file and, on Linux, the symlink that enabled it; the
/// files removed, and what to run next when it may still be running.
pub fn uninstall(
    home: &Path,
    config_home: Option<&Path>,
) -> Result<(Vec<PathBuf>, String), String> {
    let (files, next) = if cfg!(target_os = "macos") {
        let path = home
            .join("Library/LaunchAgents")
            .join(format!("{LAUNCHD_LABEL}.plist"));
        let next = format!(
            "if it is running, stop it with\n  launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL}\n"
        );
        (vec![path], next)
    } else {
        let dir = systemd_user_dir(home, config_home);
        let next = format!(
            "if it is running, stop it with\n  systemctl --user stop {UNIT_NAME}\n  systemctl --user daemon-reload\n"
        );
        (
            vec![
                dir.join("default.target.wants").join(UNIT_NAME),
                dir.join(UNIT_NAME),
            ],
            next,
        )
    };
    let mut removed = Vec::new();
    for file in files {
        // symlink_metadata: a dangling enablement link is removed too
        if std::fs::symlink_metadata(&file).is_ok() {
            std::fs::remove_file(&file)
                .map_err(|e| format!("cannot remove {}: {e}", file.display()))?;
            removed.push(file);
        }
    }
    Ok((removed, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> ServiceCommand {
        ServiceCommand::new(
            Path::new("/opt/tab agent/tabagent"),
            Some("127.0.0.1:9000".parse().unwrap()),
            Some((Path::new("/d/100%"), Path::new("/d/$models"))),
            None,
        )
    }

    #[test]
    fn the_unit_quotes_what_systemd_would_expand() {
        let unit = systemd_unit(&command()).unwrap();
        assert!(
            unit.contains(
                "ExecStart=\"/opt/tab agent/tabagent\" \"--mode\" \"http\" \"--bind\" \"127.0.0.1:9000\" \"--data-dir\" \"/d/100%%\" \"--models-dir\" \"/d/$$models\"\n"
            ),
            "{unit}"
        );
        assert!(unit.contains("WantedBy=default.target"));
        let bad = ServiceCommand::new(Path::new("/a\nb"), None, None, None);
        assert!(systemd_unit(&bad).is_err());
    }

    #[test]
    fn the_debian_packages_unit_is_the_generated_one() {
        let shipped = include_str!("../assets/tabagent.service");
        let generated = systemd_unit(&ServiceCommand::new(
            Path::new("/usr/bin/tabagent"),
            None,
            None,
            None,
        ))
        .unwrap();
        assert_eq!(shipped, generated);
    }

    #[test]
    fn the_plist_escapes_its_strings() {
        let plist = launchd_plist(
            &ServiceCommand::new(Path::new("/a&b/tabagent"), None, None, None),
            Path::new("/h/Library/Logs/tabagent.log"),
        );
        assert!(
            plist.contains("<string>/a&amp;b/tabagent</string>"),
            "{plist}"
        );
        assert!(plist.contains("<string>--mode</string>\n    <string>http</string>"));
        assert!(plist.contains(&format!("<string>{LAUNCHD_LABEL}</string>")));
    }

    #[test]
    fn install_then_uninstall_leaves_nothing() {
        let home = std::env::temp_dir().join(format!("tabagent-service-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        let file = service_file(&command(), &home, None).unwrap();
        install(&file).unwrap();
        assert_eq!(std::fs::read_to_string(&file.path).unwrap(), file.text);
        let (removed, _) = uninstall(&home, None).unwrap();
        assert_eq!(removed, vec![file.path.clone()]);
        assert!(!file.path.exists());
        assert!(uninstall(&home, None).unwrap().0.is_empty());
        let _ = std::fs::remove_dir_all(&home);
    }
}
