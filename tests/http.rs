//! HTTP against the real binary: every route of openapi.yaml answers, problem
//! JSON on errors, CORS, the Host check, body limits, /v1/rpc.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tabagent::transport::http::routes::ROUTES;

use crate::util::{HttpServer, NativeHost, TempDir, http};

/// (method, path, documented status codes) of every operation in openapi.yaml,
/// read by indentation (the file keeps the usual two-space layout).
pub fn documented_operations() -> Vec<(String, String, Vec<String>)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let mut operations: Vec<(String, String, Vec<String>)> = Vec::new();
    let (mut in_paths, mut path, mut in_responses) = (false, String::new(), false);
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let key = line
            .trim()
            .trim_end_matches(':')
            .trim_matches('\'')
            .to_string();
        if indent == 0 {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths || !line.trim_end().ends_with(':') {
            continue;
        }
        match indent {
            2 => path = key,
            4 if ["get", "post", "put", "patch", "delete"].contains(&key.as_str()) => {
                operations.push((key.to_uppercase(), path.clone(), Vec::new()));
                in_responses = false;
            }
            6 => in_responses = key == "responses",
            8 if in_responses => operations.last_mut().unwrap().2.push(key),
            _ => {}
        }
    }
    operations
}

#[test]
fn openapi_and_the_route_table_describe_the_same_routes() {
    let documented: BTreeSet<(String, String)> = documented_operations()
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert!(documented.len() > 30, "{documented:?}");
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in openapi.yaml: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in openapi.yaml but not served: {unserved:?}"
    );
}

#[test]
fn every_documented_route_answers_as_documented() {
    let server = HttpServer::start();
    for (method, path, codes) in documented_operations() {
        if path == "/api/events" {
            continue; // an event stream that stays open: tests/rtc.rs reads it with a timeout
        }
        let concrete = path.replace("{document_id}", "1").replace(['{', '}'], "");
        let body = matches!(method.as_str(), "POST" | "PUT" | "PATCH").then_some(&b"{}"[..]);
        let reply = http(server.addr, &method, &concrete, &[], body);
        let status = reply.status.to_string();
        assert!(
            codes.contains(&status)
                || (codes.iter().any(|c| c == "default") && reply.status >= 400),
            "{method} {path} answered {status}, documented {codes:?}"
        );
        let content_type = reply.header("Content-Type").unwrap_or_default().to_string();
        if reply.status >= 400 {
            assert_eq!(content_type, "application/problem+json", "{method} {path}");
            let problem = reply.json();
            assert!(
                !problem["detail"].as_str().unwrap().starts_with("no route"),
                "{method} {path}: {problem}"
            );
            assert_eq!(problem["status"], reply.status, "{method} {path}");
            assert_eq!(
                problem["error"]["message"], problem["detail"],
                "{method} {path}"
            );
        } else if content_type == "application/json" {
            let value = reply.json();
            assert!(
                value.get("response_type").is_some() || value.get("object").is_some(),
                "{method} {path}: {value}"
            );
        }
    }
}

#[test]
fn openapi_is_served() {
    let server = HttpServer::start();
    let reply = server.get("/openapi.yaml");
    assert_eq!(reply.status, 200);
    assert!(String::from_utf8_lossy(&reply.body).starts_with("openapi: 3.1"));
}

#[test]
fn errors_are_problem_json_with_an_openai_error() {
    let server = HttpServer::start();
    let cases = [
        (http(server.addr, "GET", "/nowhere", &[], None), 404),
        (http(server.addr, "DELETE", "/health", &[], None), 405),
        (
            http(server.addr, "PATCH", "/api/params", &[], Some(b"{oops")),
            400,
        ),
        (
            http(
                server.addr,
                "PATCH",
                "/api/params",
                &[],
                Some(b"{\"top_k\": -1}"),
            ),
            400,
        ),
        (
            http(
                server.addr,
                "PATCH",
                "/api/params",
                &[],
                Some(b"{\"temperature\": 9}"),
            ),
            422,
        ),
    ];
    for (reply, status) in cases {
        reply.assert_status(status);
        assert_eq!(
            reply.header("Content-Type"),
            Some("application/problem+json")
        );
        let problem = reply.json();
        for key in ["type", "title", "status", "detail"] {
            assert!(problem.get(key).is_some(), "{key} missing: {problem}");
        }
        assert!(
            problem["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{problem}"
        );
    }
}

#[test]
fn rest_values_are_typed_by_the_route_and_405_says_allow() {
    let server = HttpServer::start();
    // Names that look like numbers or booleans stay names.
    let saved = server.post(
        "/api/sessions/123/messages",
        &json!({"role": "user", "content": "hi"}),
    );
    saved.assert_status(200);
    let page = server.get("/api/sessions/123/messages?limit=5").ok_json();
    assert_eq!(
        (
            page["session_id"].clone(),
            page["messages"][0]["content"].clone()
        ),
        (json!("123"), json!("hi")),
        "{page}"
    );
    server
        .get("/api/sessions?search=123&limit=1")
        .assert_status(200);
    server.get("/api/sessions/true/messages").assert_status(200);
    // A documented integer that is not one is refused, naming its type.
    let bad = server.get("/api/sessions/123/messages?limit=ten");
    bad.assert_status(400);
    // RFC 9110: a 405 lists the methods the path takes.
    let wrong = http(server.addr, "DELETE", "/api/params", &[], None);
    wrong.assert_status(405);
    assert_eq!(wrong.header("Allow"), Some("GET, PATCH"));
    // A PATCH without a body is a mistake, not an empty change.
    let empty = http(server.addr, "PATCH", "/api/params", &[], None);
    empty.assert_status(400);
    assert!(
        empty.json()["detail"]
            .as_str()
            .unwrap()
            .contains("needs a JSON object body"),
        "{}",
        empty.json()
    );
    // JSON's 2.0 is the integer 2.
    let set = http(
        server.addr,
        "PATCH",
        "/api/params",
        &[],
        Some(br#"{"top_k": 2.0}"#),
    );
    assert_eq!(set.ok_json()["top_k"], 2);
}

#[test]
fn rest_and_rpc_reach_the_same_handler() {
    let server = HttpServer::start();
    let set = http(
        server.addr,
        "PATCH",
        "/api/params",
        &[],
        Some(br#"{"top_k": 7}"#),
    );
    assert_eq!(set.status, 200);
    let rpc = server.post("/v1/rpc", &json!({"id": "r1", "request_type": "GetParams"}));
    let body = rpc.json();
    assert_eq!(
        (body["id"].clone(), body["top_k"].clone()),
        (json!("r1"), json!(7)),
        "{body}"
    );
    let rest = server.get("/api/params").json();
    assert_eq!(rest["top_k"], 7);
    assert_eq!(rest["done"], true);
    let bad = server.post("/v1/rpc", &json!({"id": 5, "request_type": "Nope"}));
    assert_eq!(bad.status, 400);
    let health = server.get("/health").json();
    assert_eq!(
        (health["response_type"].clone(), health["status"].clone()),
        (json!("Health"), json!("ok"))
    );
    let stats = server.get("/api/stats").json();
    assert!(stats["requests"]["http"].as_u64().unwrap() >= 5, "{stats}");
}

#[test]
fn cors_allows_extensions_and_configured_origins_only() {
    // Extensions are allowed once recorded (install-host, allow-extension).
    let data = TempDir::new("cors");
    std::fs::write(
        data.path().join("extensions"),
        "abcdefghijklmnopabcdefghijklmnop\n",
    )
    .unwrap();
    let server = HttpServer::start_with(data, |c| {
        c.env("TABAGENT_CORS_ORIGINS", "http://127.0.0.1:9999");
    });
    let extension = "chrome-extension://abcdefghijklmnopabcdefghijklmnop";
    let preflight = http(
        server.addr,
        "OPTIONS",
        "/api/chat",
        &[
            ("Origin", extension),
            ("Access-Control-Request-Method", "POST"),
        ],
        None,
    );
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("Access-Control-Allow-Origin"),
        Some(extension)
    );
    assert!(
        preflight
            .header("Access-Control-Allow-Methods")
            .unwrap()
            .contains("POST")
    );
    let simple = http(
        server.addr,
        "GET",
        "/health",
        &[("Origin", "http://127.0.0.1:9999")],
        None,
    );
    assert_eq!(simple.status, 200);
    assert_eq!(
        simple.header("Access-Control-Allow-Origin"),
        Some("http://127.0.0.1:9999")
    );
    for origin in [
        "https://evil.example",
        "http://127.0.0.1:9998",
        "chrome-extension://ponmlkjihgfedcbaponmlkjihgfedcba",
    ] {
        let refused = http(server.addr, "GET", "/health", &[("Origin", origin)], None);
        assert_eq!(refused.status, 403, "{origin}");
        assert_eq!(refused.header("Access-Control-Allow-Origin"), None);
        let preflight = http(
            server.addr,
            "OPTIONS",
            "/api/chat",
            &[("Origin", origin)],
            None,
        );
        assert_eq!(preflight.status, 403);
    }
    let plain = server.get("/health");
    assert_eq!(plain.header("Access-Control-Allow-Origin"), None);
}

#[test]
fn host_header_must_name_this_server() {
    let server = HttpServer::start_with(TempDir::new("host"), |c| {
        c.env("TABAGENT_ALLOWED_HOSTS", "tabagent.local");
    });
    let port = server.addr.port();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "tabagent.local".into(),
    ] {
        assert_eq!(
            http(server.addr, "GET", "/health", &[("Host", &host)], None).status,
            200,
            "{host}"
        );
    }
    for host in [
        format!("evil.example:{port}"),
        "attacker.localhost.evil".into(),
    ] {
        let reply = http(server.addr, "GET", "/health", &[("Host", &host)], None);
        assert_eq!(reply.status, 403, "{host}");
        assert!(reply.json()["detail"].as_str().unwrap().contains("Host"));
    }
}

#[test]
fn bodies_over_the_limit_are_refused() {
    let server = HttpServer::start_with(TempDir::new("limit"), |c| {
        c.env("TABAGENT_MAX_BODY_BYTES", "1000");
    });
    let big = json!({"temperature": 0.5, "pad": "x".repeat(2000)}).to_string();
    let reply = http(
        server.addr,
        "PATCH",
        "/api/params",
        &[],
        Some(big.as_bytes()),
    );
    assert_eq!(reply.status, 413);
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn a_taken_port_in_all_mode_warns_and_keeps_native_messaging() {
    let first = HttpServer::start();
    let bind = first.addr.to_string();
    let mut host = NativeHost::start_with(TempDir::new("taken"), |c| {
        c.args(["--mode", "all", "--bind", &bind]);
    });
    let reply = host.request(json!({"id": 1, "request_type": "Health"}));
    assert_eq!(reply["status"], "ok");
    assert_eq!(host.close_and_wait(), Some(0));
}

#[test]
fn a_taken_port_in_http_mode_is_an_error() {
    let first = HttpServer::start();
    let data = TempDir::new("taken-http");
    let output = crate::util::command(data.path())
        .args(["--mode", "http", "--bind", &first.addr.to_string()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot listen"));
}

#[test]
fn system_routes_return_real_values() {
    let server = HttpServer::start();
    let info: Value = server.get("/api/system").json();
    assert!(info["cores"].as_u64().unwrap() >= 1);
    let resources: Value = server.get("/api/resources").json();
    assert!(resources["process_rss_bytes"].as_u64().unwrap() > 0);
    let models: Value = server.get("/v1/models").json();
    assert_eq!(models["object"], "list");
}
