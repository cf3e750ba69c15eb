//! `upstream_fallback`: a local model answers for an upstream model while
//! no upstream is healthy, and the upstream again once it is back.

use std::time::{Duration, Instant};

use serde_json::json;

use super::fake::{Fake, FakeServer};
use super::{config_dir, tables, wait_listed};
use crate::util::{HttpServer, tiny_gguf};

/// Polls the gateway's /api/system until upstream `name` is `health` (bounded).
fn wait_health(gateway: &HttpServer, name: &str, health: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let system = gateway.get("/api/system").ok_json();
        let state = system["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == name)
            .cloned();
        if state.as_ref().is_some_and(|s| s["health"] == health) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {health}: {system}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// With `upstream_fallback`, a request for an upstream model that no
/// healthy upstream serves goes to that local model (the reply says so);
/// once the upstream is back, requests go to it again.
#[test]
fn no_healthy_upstream_falls_back_to_the_local_model() {
    let upstream = FakeServer::start(Fake::Streams);
    let addr = upstream.addr;
    let config = format!(
        "upstream_fallback = \"tiny\"\n\n{}",
        tables(&[("up", addr, 0, 30)])
    );
    let data = config_dir(&config);
    std::fs::create_dir_all(data.path().join("models")).unwrap();
    std::os::unix::fs::symlink(tiny_gguf(), data.path().join("models/tiny.gguf")).unwrap();
    let file = data.path().join("gateway.toml");
    let gateway = HttpServer::start_with(data, |c| {
        c.arg("--config").arg(file);
    });
    wait_listed(&gateway, "up/m");
    let body = json!({"model": "m", "stream": false, "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "user", "content": "hi"}]});
    let done = gateway.post("/api/chat", &body).ok_json();
    assert_eq!(
        (&done["upstream"], &done["text"]),
        (&json!("up"), &json!("abc")),
        "{done}"
    );
    assert!(done.get("fallback_from").is_none(), "{done}");

    upstream.kill();
    drop(upstream);
    wait_health(&gateway, "up", "unhealthy");
    let done = gateway.post("/api/chat", &body).ok_json();
    assert_eq!(
        (&done["model"], &done["fallback_from"]),
        (&json!("tiny"), &json!("m")),
        "{done}"
    );
    assert!(done.get("upstream").is_none(), "{done}");
    assert!(done["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    // The OpenAI route answers from the local model too, and names it.
    let openai = gateway
        .post(
            "/v1/chat/completions",
            &json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .ok_json();
    assert_eq!(openai["model"], "tiny", "{openai}");

    let back = FakeServer::start_on(addr, Fake::Streams);
    wait_health(&gateway, "up", "healthy");
    let done = gateway.post("/api/chat", &body).ok_json();
    assert_eq!(
        (&done["upstream"], &done["text"]),
        (&json!("up"), &json!("abc")),
        "{done}"
    );
    assert!(done.get("fallback_from").is_none(), "{done}");
    assert!(!back.bodies("POST /v1/chat/completions").is_empty());
}
