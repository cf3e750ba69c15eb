//! `install-host` / `uninstall-host`: the native messaging host manifest that
//! lets Chrome, Chromium, Edge and Brave start tabagent for our extension;
//! and the extensions the HTTP server lets in (`<data_dir>/extensions`, one
//! id a line), which `install-host` and `allow-extension` record.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::fsutil::{write_atomic, write_executable};

/// The host name the extension connects to (the original TabAgent's).
pub const HOST_NAME: &str = "com.tabagent.host";

/// Browsers we register with, by the name `--browser` takes.
pub const BROWSERS: &[&str] = &["chrome", "chromium", "edge", "brave"];

/// Where a browser looks for user-level host manifests.
pub fn manifest_dir(browser: &str, home: &Path, macos: bool) -> Option<PathBuf> {
    let relative = match (browser, macos) {
        ("chrome", false) => ".config/google-chrome",
        ("chromium", false) => ".config/chromium",
        ("edge", false) => ".config/microsoft-edge",
        ("brave", false) => ".config/BraveSoftware/Brave-Browser",
        ("chrome", true) => "Library/Application Support/Google/Chrome",
        ("chromium", true) => "Library/Application Support/Chromium",
        ("edge", true) => "Library/Application Support/Microsoft Edge",
        ("brave", true) => "Library/Application Support/BraveSoftware/Brave-Browser",
        _ => return None,
    };
    Some(home.join(relative).join("NativeMessagingHosts"))
}

/// Refuses anything but an extension id: 32 letters a-p.
pub fn check_extension_id(id: &str) -> Result<(), String> {
    if id.len() == 32 && id.bytes().all(|b| (b'a'..=b'p').contains(&b)) {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not an extension id (32 letters a-p, shown on chrome://extensions)"
        ))
    }
}

/// The file of allowed extension ids in a data dir.
pub fn extensions_path(data_dir: &Path) -> PathBuf {
    data_dir.join("extensions")
}

/// The extension ids recorded in `data_dir` (none when there is no file;
/// lines that are not ids are skipped).
pub fn allowed_extensions(data_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(extensions_path(data_dir))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|id| check_extension_id(id).is_ok())
        .map(String::from)
        .collect()
}

/// Adds `ids` to the recorded ones (all or nothing); the file written.
pub fn allow_extensions(data_dir: &Path, ids: &[String]) -> Result<PathBuf, String> {
    for id in ids {
        check_extension_id(id)?;
    }
    let mut all = allowed_extensions(data_dir);
    for id in ids {
        if !all.contains(id) {
            all.push(id.clone());
        }
    }
    let path = extensions_path(data_dir);
    let text: String = all.iter().map(|id| format!("{id}\n")).collect();
    write_atomic(&path, text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// The manifest's JSON.
pub fn manifest(binary: &Path, extension_ids: &[String]) -> Result<Vec<u8>, String> {
    for id in extension_ids {
        check_extension_id(id)?;
    }
    let origins: Vec<String> = extension_ids
        .iter()
        .map(|id| format!("chrome-extension://{id}/"))
        .collect();
    let value = json!({
        "name": HOST_NAME,
        "description": "tabagent: private on-device AI",
        "path": binary,
        "type": "stdio",
        "allowed_origins": origins,
    });
    // A json! value always serializes.
    Ok(serde_json::to_vec_pretty(&value).expect("manifest serializes"))
}

/// The manifest directories to act on: `user_data_dir/NativeMessagingHosts`
/// for a browser started with `--user-data-dir`, else each browser's own.
pub fn targets(
    browsers: &[String],
    home: &Path,
    user_data_dir: Option<&Path>,
) -> Result<Vec<PathBuf>, String> {
    if let Some(dir) = user_data_dir {
        return Ok(vec![dir.join("NativeMessagingHosts")]);
    }
    let macos = cfg!(target_os = "macos");
    let names: Vec<&str> = if browsers.is_empty() {
        BROWSERS.to_vec()
    } else {
        browsers.iter().map(String::as_str).collect()
    };
    names
        .into_iter()
        .map(|b| {
            manifest_dir(b, home, macos)
                .ok_or_else(|| format!("unknown browser {b:?} (expected {})", BROWSERS.join(", ")))
        })
        .collect()
}

/// Writes the manifest into each dir; returns the files written.
pub fn install(
    dirs: &[PathBuf],
    binary: &Path,
    extension_ids: &[String],
) -> Result<Vec<PathBuf>, String> {
    let bytes = manifest(binary, extension_ids)?;
    dirs.iter()
        .map(|dir| {
            let file = dir.join(format!("{HOST_NAME}.json"));
            write_atomic(&file, &bytes)
                .map(|()| file.clone())
                .map_err(|e| format!("cannot write {}: {e}", file.display()))
        })
        .collect()
}

/// The script a manifest points at when `install-host` was given settings
/// on its command line: Chrome starts a host with the caller's origin as its
/// only argument, so the script adds the settings after it.
pub fn launcher(binary: &Path, options: &[(&str, &Path)]) -> Vec<u8> {
    let mut script = b"#!/bin/sh\n# Written by `tabagent install-host`: the native messaging host, started\n# with the settings it was registered with (Chrome passes the origin first).\nexec ".to_vec();
    script.extend(shell_quote(binary.as_os_str()));
    script.extend_from_slice(b" \"$@\"");
    for (option, value) in options {
        script.push(b' ');
        script.extend_from_slice(option.as_bytes());
        script.push(b' ');
        script.extend(shell_quote(value.as_os_str()));
    }
    script.push(b'\n');
    script
}

/// Writes [`launcher`] as `<data_dir>/native-host`; returns its path.
pub fn write_launcher(
    data_dir: &Path,
    binary: &Path,
    options: &[(&str, &Path)],
) -> Result<PathBuf, String> {
    let path = data_dir.join("native-host");
    write_executable(&path, &launcher(binary, options))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// `value` in single quotes for sh, any byte kept (a quote becomes '\'').
fn shell_quote(value: &std::ffi::OsStr) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut quoted = vec![b'\''];
    for &byte in value.as_bytes() {
        if byte == b'\'' {
            quoted.extend_from_slice(b"'\\''");
        } else {
            quoted.push(byte);
        }
    }
    quoted.push(b'\'');
    quoted
}

/// Removes the manifest from each dir; returns the files that were there.
pub fn uninstall(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut removed = Vec::new();
    for dir in dirs {
        let file = dir.join(format!("{HOST_NAME}.json"));
        match std::fs::remove_file(&file) {
            Ok(()) => removed.push(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", file.display())),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_the_binary_and_origins() {
        let bytes = manifest(
            Path::new("/opt/tabagent"),
            &["abcdefghijklmnopabcdefghijklmnop".into()],
        )
        .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["name"], HOST_NAME);
        assert_eq!(value["path"], "/opt/tabagent");
        assert_eq!(value["type"], "stdio");
        assert_eq!(
            value["allowed_origins"][0],
            "chrome-extension://abcdefghijklmnopabcdefghijklmnop/"
        );
        assert!(
            manifest(Path::new("/x"), &["not-an-id".into()])
                .unwrap_err()
                .contains("not an extension id")
        );
    }

    #[test]
    fn the_launcher_quotes_every_path() {
        let script = launcher(
            Path::new("/opt/tab agent/tabagent"),
            &[("--data-dir", Path::new("/home/o'neil/data"))],
        );
        let script = String::from_utf8(script).unwrap();
        assert!(script.starts_with("#!/bin/sh\n"), "{script}");
        assert!(
            script.ends_with(
                "exec '/opt/tab agent/tabagent' \"$@\" --data-dir '/home/o'\\''neil/data'\n"
            ),
            "{script}"
        );
    }

    #[test]
    fn each_browser_has_its_own_dir_on_each_os() {
        let home = Path::new("/home/u");
        assert_eq!(
            manifest_dir("brave", home, false).unwrap(),
            Path::new("/home/u/.config/BraveSoftware/Brave-Browser/NativeMessagingHosts")
        );
        assert_eq!(
            manifest_dir("edge", home, true).unwrap(),
            Path::new("/home/u/Library/Application Support/Microsoft Edge/NativeMessagingHosts")
        );
        assert_eq!(targets(&[], home, None).unwrap().len(), 4);
        assert!(targets(&["netscape".into()], home, None).is_err());
    }

    #[test]
    fn install_then_uninstall() {
        let dir = std::env::temp_dir().join(format!("tabagent-host-{}", std::process::id()));
        let dirs = targets(&[], Path::new("/unused"), Some(&dir)).unwrap();
        let written = install(
            &dirs,
            Path::new("/bin/tabagent"),
            &["abcdefghijklmnopabcdefghijklmnop".into()],
        )
        .unwrap();
        assert!(written[0].is_file());
        assert_eq!(uninstall(&dirs).unwrap(), written);
        assert!(uninstall(&dirs).unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn allowed_extensions_are_recorded_once_each() {
        let dir = std::env::temp_dir().join(format!("tabagent-allowed-{}", std::process::id()));
        assert!(allowed_extensions(&dir).is_empty());
        let (a, b) = ("a".repeat(32), "b".repeat(32));
        allow_extensions(&dir, std::slice::from_ref(&a)).unwrap();
        allow_extensions(&dir, &[b.clone(), a.clone()]).unwrap();
        assert_eq!(allowed_extensions(&dir), [a, b]);
        assert!(allow_extensions(&dir, &["q".repeat(32)]).is_err());
        assert!(allow_extensions(&dir, &["a".repeat(31)]).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
