//! Running it as a service: `install-service` writes a systemd user unit
//! that `systemd-analyze verify` accepts and `uninstall-service` removes; the
//! Debian package (`make deb`) holds the binary, that unit and the docs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{TempDir, command, skip};

#[test]
fn the_user_unit_passes_systemd_analyze_verify_and_uninstalls() {
    let home = TempDir::new("service");
    let installed = command(home.path())
        .args(["--bind", "127.0.0.1:9123", "install-service"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&installed.stdout);
    assert!(
        installed.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let unit = home.path().join(".config/systemd/user/tabagent.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let binary = std::fs::canonicalize(env!("CARGO_BIN_EXE_tabagent")).unwrap();
    let data = home.path().display().to_string();
    assert!(
        text.contains(&format!(
            "ExecStart=\"{}\" \"--mode\" \"http\" \"--bind\" \"127.0.0.1:9123\" \"--data-dir\" \"{data}\" \"--models-dir\" \"{data}/models\"\n",
            binary.display()
        )),
        "{text}"
    );
    assert!(
        stdout.contains("systemctl --user enable --now tabagent.service"),
        "{stdout}"
    );

    if Path::new("/usr/bin/systemd-analyze").exists() {
        // --user needs a runtime dir; no running systemd is needed.
        let runtime = home.path().join("run");
        std::fs::create_dir_all(&runtime).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
        let verified = Command::new("systemd-analyze")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home.path())
            .env("XDG_RUNTIME_DIR", &runtime)
            .args(["--user", "verify"])
            .arg(&unit)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&verified.stderr);
        // verify exits 0 on some mistakes (an unknown Type=) and only warns:
        // nothing at all may be said about the unit.
        assert!(
            verified.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify: {stderr}\n{text}"
        );
    } else {
        skip(
            "the_user_unit_passes_systemd_analyze_verify",
            "systemd-analyze (apt-get install systemd)",
        );
    }

    let removed = command(home.path())
        .arg("uninstall-service")
        .output()
        .unwrap();
    assert!(removed.status.success());
    assert!(!unit.exists());
    assert!(String::from_utf8_lossy(&removed.stdout).contains("systemctl --user stop"));
}

#[test]
fn a_unit_that_could_not_start_is_not_installed() {
    let home = TempDir::new("service-refused");
    let refused = command(home.path())
        .args(["--bind", "0.0.0.0:9123", "install-service"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a loopback address"));
    assert!(
        !home
            .path()
            .join(".config/systemd/user/tabagent.service")
            .exists()
    );
}

/// The newest .deb that `make deb` (cargo-deb) left in target/debian/.
fn built_deb() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debian");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

#[test]
fn the_debian_package_holds_the_binary_the_unit_and_the_docs() {
    let Some(deb) = built_deb() else {
        skip(
            "the_debian_package_holds_the_binary_the_unit_and_the_docs",
            "no target/debian/*.deb (make deb builds it)",
        );
        return;
    };
    let listed = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    assert!(listed.status.success());
    let listing = String::from_utf8_lossy(&listed.stdout);
    for (path, mode) in [
        ("./usr/bin/tabagent", "-rwxr-xr-x"),
        ("./usr/lib/systemd/user/tabagent.service", "-rw-r--r--"),
        ("./usr/share/doc/tabagent/README.md", "-rw-r--r--"),
        ("./usr/share/doc/tabagent/openapi.yaml", "-rw-r--r--"),
    ] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(path))
            .unwrap_or_else(|| panic!("{path} is not in {}:\n{listing}", deb.display()));
        assert!(line.starts_with(mode), "{line}");
    }
    // The unit inside is the one the source tree holds.
    let unit = Command::new("sh")
        .arg("-c")
        .arg("dpkg-deb --fsys-tarfile \"$0\" | tar -xOf - ./usr/lib/systemd/user/tabagent.service")
        .arg(&deb)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&unit.stdout),
        include_str!("../assets/tabagent.service")
    );
    let info = Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&deb)
        .args(["Package", "Version"])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("Package: tabagent"), "{info}");
    assert!(
        info.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );
}
