//! The command line: help, version, models, host registration, settings precedence.

use serde_json::json;

use crate::util::{NativeHost, TempDir, command, command_for};

fn run(data: &TempDir, args: &[&str]) -> (bool, String, String) {
    let output = command(data.path()).args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_and_version() {
    let data = TempDir::new("help");
    let (ok, out, _) = run(&data, &["--help"]);
    assert!(ok);
    for words in [
        "--mode",
        "--bind",
        "--data-dir",
        "--models-dir",
        "--config",
        "--log",
        "install-host",
        "TABAGENT_BIND",
    ] {
        assert!(out.contains(words), "--help lacks {words}");
    }
    let (ok, out, _) = run(&data, &["--version"]);
    assert!(ok && out.starts_with("tabagent "), "{out}");
    let (ok, _, err) = run(&data, &["--mode", "turbo"]);
    assert!(!ok && err.contains("unknown mode"), "{err}");
}

#[test]
fn models_lists_what_the_models_dir_holds() {
    let data = TempDir::new("models");
    let models = data.path().join("models");
    std::fs::create_dir_all(models.join("mini")).unwrap();
    std::fs::write(models.join("chat.gguf"), vec![0u8; 2_000_000]).unwrap();
    std::fs::write(models.join("mini/model.onnx"), b"x").unwrap();
    std::fs::write(models.join("mini/tokenizer.json"), b"{}").unwrap();
    let (ok, out, _) = run(&data, &["models"]);
    assert!(ok);
    assert!(
        out.contains("chat") && out.contains("gguf") && out.contains("2.0 MB"),
        "{out}"
    );
    assert!(
        out.contains("mini") && out.contains("onnx") && out.contains("embedding"),
        "{out}"
    );
}

#[test]
fn settings_precedence_is_cli_then_env_then_file() {
    let data = TempDir::new("precedence");
    let file = data.path().join("config.toml");
    std::fs::write(&file, "models_dir = \"/from/file\"\n").unwrap();
    let config = file.to_str().unwrap();
    let listed = |extra_env: Option<&str>, extra_args: &[&str]| {
        let mut cmd = command(data.path());
        if let Some(dir) = extra_env {
            cmd.env("TABAGENT_MODELS_DIR", dir);
        }
        let output = cmd
            .args(["--config", config])
            .args(extra_args)
            .arg("models")
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert!(listed(None, &[]).contains("/from/file"));
    assert!(listed(Some("/from/env"), &[]).contains("/from/env"));
    assert!(listed(Some("/from/env"), &["--models-dir", "/from/cli"]).contains("/from/cli"));
    std::fs::write(&file, "colour = \"blue\"\n").unwrap();
    let (ok, _, err) = run(&data, &["--config", config, "models"]);
    assert!(!ok && err.contains("colour"), "{err}");
}

#[test]
fn install_and_uninstall_host_for_a_profile_and_for_all_browsers() {
    let data = TempDir::new("host");
    let profile = data.path().join("profile");
    let id = "abcdefghijklmnopabcdefghijklmnop";
    let (ok, out, err) = run(
        &data,
        &[
            "install-host",
            "--extension-id",
            id,
            "--user-data-dir",
            profile.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let manifest_path = profile.join("NativeMessagingHosts/com.tabagent.host.json");
    assert!(out.contains(manifest_path.to_str().unwrap()), "{out}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(
        manifest["allowed_origins"][0],
        format!("chrome-extension://{id}/")
    );
    assert!(std::path::Path::new(manifest["path"].as_str().unwrap()).is_file());

    // HOME is the temp dir: every browser's Linux location is written there.
    let (ok, _, _) = run(&data, &["install-host", "--extension-id", id]);
    assert!(ok);
    for dir in [
        ".config/google-chrome",
        ".config/chromium",
        ".config/microsoft-edge",
        ".config/BraveSoftware/Brave-Browser",
    ] {
        assert!(
            data.path()
                .join(dir)
                .join("NativeMessagingHosts/com.tabagent.host.json")
                .is_file(),
            "{dir}"
        );
    }
    let (ok, out, _) = run(&data, &["uninstall-host", "--browser", "chromium"]);
    assert!(ok && out.contains("removed"), "{out}");
    assert!(
        !data
            .path()
            .join(".config/chromium/NativeMessagingHosts/com.tabagent.host.json")
            .exists()
    );
    assert!(
        data.path()
            .join(".config/google-chrome/NativeMessagingHosts/com.tabagent.host.json")
            .exists()
    );
    let (ok, _, err) = run(&data, &["install-host", "--extension-id", "bad"]);
    assert!(!ok && err.contains("not an extension id"), "{err}");
}

#[test]
fn a_host_registered_with_its_own_dirs_starts_with_them() {
    let data = TempDir::new("launcher");
    let (own_data, own_models) = (data.path().join("own data"), data.path().join("own-models"));
    std::fs::create_dir_all(&own_models).unwrap();
    std::fs::write(own_models.join("mine.gguf"), vec![0u8; 2_000_000]).unwrap();
    let profile = data.path().join("profile");
    let id = "abcdefghijklmnopabcdefghijklmnop";
    let (ok, out, err) = run(
        &data,
        &[
            "install-host",
            "--extension-id",
            id,
            "--user-data-dir",
            profile.to_str().unwrap(),
            "--data-dir",
            own_data.to_str().unwrap(),
            "--models-dir",
            own_models.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(profile.join("NativeMessagingHosts/com.tabagent.host.json")).unwrap(),
    )
    .unwrap();
    let launcher = std::path::PathBuf::from(manifest["path"].as_str().unwrap());
    assert_eq!(launcher, own_data.join("native-host"), "{out}");
    assert!(own_data.join("extensions").is_file());

    // Started as Chrome starts it (the origin its only argument, the test's
    // own data dir in the environment), the host uses the registered dirs.
    let mut command = command_for(&launcher, data.path());
    command.arg(format!("chrome-extension://{id}/"));
    let mut host = NativeHost::spawn(command, TempDir::new("unused"));
    let reply = host.request(json!({"id": 1, "request_type": "ListModels"}));
    let ids: Vec<&str> = reply["models"]
        .as_array()
        .unwrap_or_else(|| panic!("{reply}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["mine"], "{reply}");
    let reply = host.request(json!({"id": 2, "request_type": "SaveMessage",
        "session_id": "s1", "role": "user", "content": "kept where it was registered"}));
    assert_eq!(reply["response_type"], "MessageSaved", "{reply}");
    assert!(own_data.join("tabagent.db").is_file());
}
