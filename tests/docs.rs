//! `/docs` on the real binary: the page and its files are served without the
//! key, with a policy that keeps the page to this server; and headless
//! Chromium (tests/browser/docs.sh) shows every operation of openapi.yaml,
//! refuses GET /api/stats without the key and runs it once the key is typed
//! into Swagger's Authorize dialog. The screenshot it takes is kept as
//! target/tmp/docs.png.

use crate::util::{HttpServer, http_without_key};

#[cfg(feature = "docs")]
#[test]
fn the_api_page_and_its_files_are_served_without_the_key() {
    let server = HttpServer::start();
    let get = |path: &str| http_without_key(server.addr, "GET", path, &[], None);
    let page = get("/docs");
    page.assert_status(200);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("Content-Security-Policy").unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(String::from_utf8_lossy(&page.body).contains("/docs/swagger-ui-bundle.js"));
    let bundle = get("/docs/swagger-ui-bundle.js");
    bundle.assert_status(200);
    assert!(bundle.body.len() > 500_000, "{}", bundle.body.len());
    assert!(String::from_utf8_lossy(&bundle.body).contains("SwaggerUIBundle"));
    get("/docs/swagger-ui.css").assert_status(200);
    get("/docs/init.js").assert_status(200);
    let description = get("/docs/openapi.yaml");
    let text = String::from_utf8_lossy(&description.assert_status(200).body).into_owned();
    assert!(text.starts_with("openapi: 3.1"));
    assert!(
        text.contains("servers:\n  - url: /\n"),
        "the page calls its own server"
    );
    assert_eq!(get("/docs/nope").status, 404);
    // The rest of the API still needs the key.
    assert_eq!(get("/openapi.yaml").status, 401);
}

#[cfg(not(feature = "docs"))]
#[test]
fn without_the_docs_feature_the_page_says_so() {
    let server = HttpServer::start();
    let page = http_without_key(server.addr, "GET", "/docs", &[], None);
    page.assert_status(501);
    assert!(
        page.json()["detail"]
            .as_str()
            .unwrap()
            .contains("docs feature")
    );
}

#[cfg(feature = "docs")]
#[test]
fn chromium_shows_every_operation_and_runs_one_with_the_key() {
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::process::Command;

    use serde_json::Value;

    let missing = [
        ("/usr/bin/chromium", "Debian's chromium"),
        ("/usr/bin/node", "node"),
        ("/usr/bin/unshare", "unshare"),
    ]
    .into_iter()
    .find(|(path, _)| !Path::new(path).exists());
    if let Some((_, what)) = missing {
        crate::util::skip(
            "chromium_shows_every_operation_and_runs_one_with_the_key",
            &format!("no {what}"),
        );
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/docs.sh");
    let screenshot = concat!(env!("CARGO_TARGET_TMPDIR"), "/docs.png");
    let _ = std::fs::remove_file(screenshot);
    let output = Command::new(script)
        .arg(env!("CARGO_BIN_EXE_tabagent"))
        .arg(screenshot)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("docs test passed"),
        "{stdout}\n{stderr}"
    );
    let json_end = stdout.rfind('}').expect("a JSON result");
    let result: Value = serde_json::from_str(&stdout[..=json_end]).unwrap();
    let shown: BTreeSet<(String, String)> = result["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| {
            (
                op[0].as_str().unwrap_or("").trim().to_uppercase(),
                op[1].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let documented: BTreeSet<(String, String)> = crate::http::documented_operations()
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let missing: Vec<_> = documented.difference(&shown).collect();
    assert!(missing.is_empty(), "not shown on /docs: {missing:?}");
    assert_eq!(shown.len(), documented.len(), "{shown:?}");
    assert!(std::fs::metadata(screenshot).unwrap().len() > 10_000);
    eprintln!(
        "/docs shows all {} operations; screenshot: {screenshot}",
        shown.len()
    );
}
