//! Build script: tells the crate whether Swagger UI has been vendored into
//! assets/swagger/vendor/ (`make npm`), so that the `docs` feature embeds it
//! for `/docs` (cfg `swagger_ui`); without it `/docs` says how to get it and
//! the build goes on.

use std::path::Path;

fn main() {
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
