//! Who may talk to the real binary: the API key on every HTTP route but
//! `/health` and the API page (made at first start, rotated in place, handed to the extension
//! over native messaging only), the origins of recorded extensions only,
//! `require_key = false` on loopback only, and the WebRTC offer rate.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tabagent::transport::http::routes::{self, ROUTES};

use crate::util::{
    HttpReply, HttpServer, NativeHost, TEST_KEY, TempDir, command, http, http_without_key,
    wait_exit,
};

/// An extension id nobody recorded.
const STRANGER: &str = "pppppppppppppppppppppppppppppppp";
/// The id the extension pins (extension/README.md).
const OURS: &str = "aemgbgaccfolddhaopofopafdjenpbak";

/// A route's path with every `{name}` filled in.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|part| if part.starts_with('{') { "x" } else { part })
        .collect::<Vec<_>>()
        .join("/")
}

fn assert_unauthorized(reply: &HttpReply, path: &str) {
    assert_eq!(
        reply.status,
        401,
        "{path}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("WWW-Authenticate"), Some("Bearer"), "{path}");
    let body = reply.json();
    assert_eq!(body["error"]["code"], "invalid_api_key", "{path}: {body}");
    assert_eq!(
        body["error"]["type"], "invalid_request_error",
        "{path}: {body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tabagent token"),
        "{path}: {body}"
    );
    if path.starts_with("/v1/") {
        assert_eq!(
            reply.header("Content-Type"),
            Some("application/json"),
            "{path}"
        );
    } else {
        assert_eq!(
            reply.header("Content-Type"),
            Some("application/problem+json"),
            "{path}"
        );
        assert_eq!(body["status"], 401, "{path}: {body}");
    }
}

#[test]
fn every_route_but_health_needs_the_key() {
    let server = HttpServer::start();
    for route in ROUTES {
        let path = concrete(route.path);
        let body = (route.method != "GET" && route.method != "DELETE").then_some(&b"{}"[..]);
        if route.path == "/health" {
            http_without_key(server.addr, route.method, &path, &[], None).assert_status(200);
            continue;
        }
        if !routes::needs_key(route.path) {
            // The API page: the public description, no key (tests/docs.rs).
            let reply = http_without_key(server.addr, route.method, &path, &[], None);
            assert_ne!(reply.status, 401, "{path}");
            continue;
        }
        let none = http_without_key(server.addr, route.method, &path, &[], body);
        assert_unauthorized(&none, &path);
        for wrong in [
            ("Authorization", "Bearer not-the-key"),
            ("Authorization", TEST_KEY),
            ("x-api-key", "tabagent-test-ke"),
        ] {
            let reply = http(server.addr, route.method, &path, &[wrong], body);
            assert_unauthorized(&reply, &path);
        }
    }
    // Unknown paths are not told apart without the key.
    assert_unauthorized(
        &http_without_key(server.addr, "GET", "/nope", &[], None),
        "/nope",
    );
    let bearer = format!("Bearer {TEST_KEY}");
    for header in [("Authorization", bearer.as_str()), ("x-api-key", TEST_KEY)] {
        let reply = http(server.addr, "GET", "/api/stats", &[header], None);
        assert_eq!(reply.ok_json()["response_type"], "Stats");
        http(server.addr, "GET", "/openapi.yaml", &[header], None).assert_status(200);
        http(server.addr, "GET", "/v1/models", &[header], None).assert_status(200);
    }
}

#[test]
fn the_key_is_made_at_first_start_private_and_rotated_in_place() {
    use std::os::unix::fs::PermissionsExt;
    let data = TempDir::new("trust-key");
    let mut first = command(data.path());
    first.env_remove("TABAGENT_API_KEY");
    let server = HttpServer::start_command(first, TempDir::new("unused"));
    let token = data.path().join("token");
    let key = std::fs::read_to_string(&token).unwrap();
    assert_eq!(key.len(), 43, "32 bytes in unpadded base64url: {key:?}");
    assert_eq!(
        std::fs::metadata(&token).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let with = |key: &str| {
        http(
            server.addr,
            "GET",
            "/api/stats",
            &[("x-api-key", key)],
            None,
        )
        .status
    };
    assert_eq!(with(&key), 200);
    assert_eq!(with(TEST_KEY), 401, "the token file's key, not the test's");

    let printed = command(data.path())
        .env_remove("TABAGENT_API_KEY")
        .arg("token")
        .output()
        .unwrap();
    assert!(printed.status.success());
    assert_eq!(String::from_utf8_lossy(&printed.stdout).trim(), key);
    let rotated = command(data.path())
        .env_remove("TABAGENT_API_KEY")
        .args(["token", "--rotate"])
        .output()
        .unwrap();
    assert!(rotated.status.success());
    let new = String::from_utf8_lossy(&rotated.stdout).trim().to_string();
    assert_ne!(new, key);
    assert_eq!(std::fs::read_to_string(&token).unwrap(), new);
    // The running server follows the file within a second or so.
    let deadline = Instant::now() + Duration::from_secs(5);
    while with(&new) != 200 {
        assert!(Instant::now() < deadline, "the server kept the old key");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(with(&key), 401);
}

#[test]
fn the_native_host_hands_over_the_key_and_http_does_not() {
    let mut host = NativeHost::start();
    let reply = host.request(json!({"id": "k", "request_type": "GetApiKey"}));
    assert_eq!(reply["response_type"], "ApiKey", "{reply}");
    assert_eq!(reply["api_key"], TEST_KEY);
    assert_eq!(reply["done"], true);

    let server = HttpServer::start();
    let rpc = server.post("/v1/rpc", &json!({"id": 1, "request_type": "GetApiKey"}));
    assert_eq!(rpc.status, 403, "{}", String::from_utf8_lossy(&rpc.body));
    let body = rpc.json();
    assert_eq!(body["type"], "urn:tabagent:problem:native-only", "{body}");
    assert!(!String::from_utf8_lossy(&rpc.body).contains(TEST_KEY));
}

/// The binary's exit code and stderr for `args` and `env`, when it exits.
fn refused_start(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let data = TempDir::new("trust-refused");
    let mut command = command(data.path());
    command.args(args).envs(env.iter().copied());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = wait_exit(&mut child, Duration::from_secs(10));
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (code, stderr)
}

#[test]
fn no_key_is_allowed_on_loopback_only() {
    let (code, stderr) = refused_start(
        &["--mode", "http", "--bind", "0.0.0.0:0"],
        &[("TABAGENT_REQUIRE_KEY", "false")],
    );
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("require_key = false is allowed only on a loopback bind"),
        "{stderr}"
    );
    let (code, stderr) = refused_start(
        &["--mode", "http", "--bind", "127.0.0.1:0"],
        &[
            ("TABAGENT_REQUIRE_KEY", "false"),
            ("TABAGENT_CORS_ORIGINS", "*"),
        ],
    );
    assert_ne!(code, Some(0));
    assert!(stderr.contains("cors_origins = \"*\""), "{stderr}");

    let server = HttpServer::start_with(TempDir::new("trust-open"), |c| {
        c.env("TABAGENT_REQUIRE_KEY", "false");
    });
    http_without_key(server.addr, "GET", "/api/stats", &[], None).assert_status(200);
}

fn from(server: &HttpServer, method: &str, origin: &str, extra: &[(&str, &str)]) -> HttpReply {
    let mut headers = vec![("Origin", origin)];
    headers.extend_from_slice(extra);
    http(server.addr, method, "/api/stats", &headers, None)
}

#[test]
fn only_recorded_extensions_are_allowed_origins() {
    let server = HttpServer::start();
    let stranger = format!("chrome-extension://{STRANGER}");
    let reply = from(&server, "GET", &stranger, &[]);
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.json()["type"],
        "urn:tabagent:problem:origin-not-allowed"
    );
    let pna = [
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Private-Network", "true"),
    ];
    let preflight = from(&server, "OPTIONS", &stranger, &pna);
    assert_eq!(preflight.status, 403);
    assert_eq!(
        preflight.header("Access-Control-Allow-Private-Network"),
        None
    );

    // `allow-extension` records it; the running server reads the record.
    let allowed = command(server.data.path())
        .args(["allow-extension", STRANGER])
        .output()
        .unwrap();
    assert!(allowed.status.success(), "{allowed:?}");
    let reply = from(&server, "GET", &stranger, &[]);
    assert_eq!(reply.ok_json()["response_type"], "Stats");
    assert_eq!(
        reply.header("Access-Control-Allow-Origin"),
        Some(stranger.as_str())
    );
    // A preflight carries no key, and is answered for an allowed origin.
    let preflight = crate::util::http_without_key(
        server.addr,
        "OPTIONS",
        "/api/stats",
        &[("Origin", stranger.as_str()), pna[0], pna[1]],
        None,
    );
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("Access-Control-Allow-Private-Network"),
        Some("true")
    );
    assert!(
        preflight
            .header("Access-Control-Allow-Headers")
            .unwrap()
            .contains("Authorization")
    );
    let bad = command(server.data.path())
        .args(["allow-extension", "not-an-id"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an extension id"));

    // `install-host` records the ids it registers.
    let ours = format!("chrome-extension://{OURS}");
    assert_eq!(from(&server, "GET", &ours, &[]).status, 403);
    let profile = TempDir::new("trust-profile");
    let installed = command(server.data.path())
        .args(["install-host", "--extension-id", OURS, "--user-data-dir"])
        .arg(profile.path())
        .output()
        .unwrap();
    assert!(installed.status.success(), "{installed:?}");
    from(&server, "GET", &ours, &[]).assert_status(200);
    // Pages are not extensions.
    assert_eq!(from(&server, "GET", "https://example.com", &[]).status, 403);
}

#[cfg(feature = "webrtc")]
#[test]
fn the_eleventh_webrtc_offer_in_a_minute_gets_429() {
    let data = TempDir::new("trust-offers");
    let mut command = command(data.path());
    command.env("TABAGENT_WEBRTC_HOSTS", "127.0.0.1");
    let server = HttpServer::start_in_mode(command, data, "webrtc");
    let offer = || server.post("/v1/webrtc/offer", &json!({}));
    for i in 0..10 {
        let reply = offer();
        assert_eq!(
            reply.ok_json()["response_type"],
            "WebRtcSignal",
            "offer {i}"
        );
    }
    let reply = offer();
    assert_eq!(
        reply.status,
        429,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let retry: u64 = reply.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: Value = reply.json();
    assert_eq!(body["type"], "urn:tabagent:problem:rate-limited", "{body}");
    assert_eq!(
        reply.header("Content-Type"),
        Some("application/problem+json")
    );
    // Over /v1/rpc it is the same budget; other routes are not limited.
    let rpc = server.post(
        "/v1/rpc",
        &json!({"id": 1, "request_type": "CreateWebRtcOffer"}),
    );
    assert_eq!(rpc.status, 429);
    server.get("/v1/webrtc/sessions").assert_status(200);
}
