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

    // install-host's launcher puts the dirs it was given after the origin.
    let args = parse_str(&[
        "chrome-extension://abcdefghijklmnopabcdefghijklmnop/",
        "--data-dir",
        "/d",
        "--models-dir=/m",
        "--config",
        "/c.toml",
        "--mode",
        "http",
    ])
    .unwrap();
    assert_eq!(args.settings.mode, Some(Mode::Native));
    assert_eq!(args.settings.data_dir, Some("/d".into()));
    assert_eq!(args.settings.models_dir, Some("/m".into()));
    assert_eq!(args.config_file, Some("/c.toml".into()));
    let origin = "chrome-extension://abcdefghijklmnopabcdefghijklmnop/";
    assert!(parse_str(&[origin, "models"]).is_err());
    assert!(parse_str(&[origin, "--colour"]).is_err());
}

#[test]
fn options_and_commands() {
    let args = parse_str(&["--mode", "http", "--bind=127.0.0.1:9", "models"]).unwrap();
    assert_eq!(args.command, Command::Models);
    assert_eq!(args.settings.mode, Some(Mode::Http));
    assert_eq!(args.settings.bind.unwrap().port(), 9);
    let args = parse_str(&["install-host", "--extension-id", "a", "--extension-id", "b"]).unwrap();
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
    let args = parse_str(&["pull", "hf://o/r/f.gguf", "--sha256", "ab", "--model", "m"]).unwrap();
    assert_eq!(
        args.command,
        Command::Pull {
            url: "hf://o/r/f.gguf".into(),
            sha256: Some("ab".into()),
            model: Some("m".into()),
            allow_unverified: false,
        }
    );
    let args = parse_str(&["pull", "https://h/f.gguf", "--allow-unverified"]).unwrap();
    assert!(matches!(
        args.command,
        Command::Pull {
            allow_unverified: true,
            ..
        }
    ));
    assert!(parse_str(&["pull"]).unwrap_err().contains("needs a URL"));
    assert!(
        parse_str(&["models", "--model", "m"])
            .unwrap_err()
            .contains("belong to pull")
    );
    assert!(parse_str(&["pull", "a", "b"]).is_err());
}

#[test]
fn token_and_allow_extension() {
    assert_eq!(
        parse_str(&["token"]).unwrap().command,
        Command::Token { rotate: false }
    );
    assert_eq!(
        parse_str(&["token", "--rotate"]).unwrap().command,
        Command::Token { rotate: true }
    );
    assert!(parse_str(&["models", "--rotate"]).is_err());
    let id = "abcdefghijklmnopabcdefghijklmnop";
    assert_eq!(
        parse_str(&["allow-extension", id]).unwrap().command,
        Command::AllowExtension { id: id.into() }
    );
    assert!(
        parse_str(&["allow-extension"])
            .unwrap_err()
            .contains("needs an id")
    );
    let args = parse_str(&["--api-key-file", "/k"]).unwrap();
    assert_eq!(args.settings.api_key_file.unwrap(), PathBuf::from("/k"));
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
