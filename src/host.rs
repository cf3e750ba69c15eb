//! `install-host` / `uninstall-host`: the native messaging host manifest that
//! lets Chrome, Chromium, Edge and Brave start tabagent for our extension.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::fsutil::write_atomic;

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

/// The manifest's JSON.
pub fn manifest(binary: &Path, extension_ids: &[String]) -> Result<Vec<u8>, String> {
    for id in extension_ids {
        let valid = id.len() == 32 && id.bytes().all(|b| (b'a'..=b'p').contains(&b));
        if !valid {
            return Err(format!(
                "{id:?} is not an extension id (32 letters a-p, shown on chrome://extensions)"
            ));
        }
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
}
