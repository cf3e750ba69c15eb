//! Build script: tells the crate whether Swagger UI has been vendored into
//! assets/swagger/vendor/ (`make npm`), so that the `docs` feature embeds it
//! for `/docs` (cfg `swagger_ui`); without it `/docs` says how to get it and
//! the build goes on. On Linux, it also links the binary with packed
//! relative relocations (DT_RELR) when the toolchain can: the dynamic loader
//! then reads a few KiB of relocations at start instead of ~750 KiB of
//! `.rela.dyn` (pages that stayed resident: idle RSS).

use std::path::Path;
use std::process::Command;

fn main() {
    if relr_links() {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo::rustc-check-cfg=cfg(swagger_ui)");
    // A directory: cargo looks at every file under it (vendor/ included).
    println!("cargo::rerun-if-changed=assets/swagger");
    if std::env::var_os("CARGO_FEATURE_DOCS").is_none() {
        return;
    }
    let vendor = Path::new("assets/swagger/vendor");
    let files = [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "favicon-32x32.png",
        "LICENSE",
    ];
    if files.iter().all(|file| vendor.join(file).is_file()) {
        println!("cargo::rustc-cfg=swagger_ui");
    } else {
        println!(
            "cargo::warning=Swagger UI is not vendored in assets/swagger/vendor/: /docs will answer 501 (`make npm` vendors it)"
        );
    }
}

/// Whether `cc` links a program with `-z pack-relative-relocs` without a
/// word of complaint (binutils 2.38+ and glibc 2.36+; the binary then needs
/// glibc 2.36+ to run, which the Debian package's dependencies say).
fn relr_links() -> bool {
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let native = std::env::var("TARGET").ok() == std::env::var("HOST").ok();
    let Some(out) = std::env::var_os("OUT_DIR") else {
        return false;
    };
    if !linux || !native {
        return false;
    }
    let dir = Path::new(&out);
    let source = dir.join("relr_probe.c");
    if std::fs::write(&source, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    Command::new(cc)
        .arg("-Wl,-z,pack-relative-relocs")
        .arg(&source)
        .arg("-o")
        .arg(dir.join("relr_probe"))
        .output()
        .is_ok_and(|o| o.status.success() && o.stderr.is_empty())
}
