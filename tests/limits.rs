//! Settings that reach llama.cpp are checked first: LoadModel and SetParams
//! out of range answer 422 naming the field, the value and the range, over
//! HTTP and native messaging, and the server goes on serving (the tiny GGUF:
//! a context of 512 tokens, 2 layers).

use std::time::Duration;

use serde_json::{Value, json};

use crate::inference::{http_server, native_host, tiny_models};
use crate::util::http;

/// The 422's detail, after checking it is one.
fn detail_422(status: u16, body: &Value) -> String {
    assert_eq!(status, 422, "{body}");
    body["detail"].as_str().unwrap().to_string()
}

/// Every LoadModel out of range, with what the detail must name.
fn bad_loads() -> Vec<(Value, &'static [&'static str])> {
    vec![
        // Far beyond the machine: refused before any job starts.
        (
            json!({"threads": 2_000_000_000u32}),
            &["threads 2000000000", "0..="],
        ),
        (
            json!({"context_size": 4_000_000_000u32}),
            &["context_size 4000000000", "1048576"],
        ),
        (
            json!({"gpu_layers": 4_000_000_000u32}),
            &["gpu_layers 4000000000", "0..=1024"],
        ),
        // Within the machine, beyond the model: refused once its header is read.
        (
            json!({"context_size": 100_000}),
            &["context_size 100000", "128..=512", "trained"],
        ),
        (json!({"gpu_layers": 4}), &["gpu_layers 4", "0..=3"]),
        (
            json!({"context_size": 256, "batch_size": 257}),
            &["batch_size 257", "1..=256"],
        ),
        (json!({"batch_size": 0}), &["batch_size 0"]),
    ]
}

fn chat_works(addr: std::net::SocketAddr) {
    let body = json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2, "stream": false});
    let reply = http(
        addr,
        "POST",
        "/api/chat",
        &[],
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(reply.ok_json()["response_type"], "ChatComplete");
}

#[test]
fn out_of_range_load_and_params_are_422_over_http_and_the_server_serves_on() {
    let models = tiny_models(&["tiny"]);
    let server = http_server(&models, &[]);
    for (body, names) in bad_loads() {
        let reply = server.post("/api/models/tiny/load", &body);
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json")
        );
        let detail = detail_422(reply.status, &reply.json());
        for name in names {
            assert!(detail.contains(name), "{body}: {detail}");
        }
    }
    assert!(
        server.get("/api/loaded").json()["models"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was loaded"
    );
    // The parameters without the envelope's request id.
    let params = || {
        let mut params = server.get("/api/params").ok_json();
        params.as_object_mut().unwrap().remove("id");
        params
    };
    let before = params();
    for (patch, name) in [
        (json!({"threads": 2_000_000_000u32}), "threads 2000000000"),
        (
            json!({"context_size": 4_000_000_000u32}),
            "context_size 4000000000",
        ),
        (json!({"context_size": 16}), "context_size 16"),
        (json!({"temperature": 9, "threads": 1}), "temperature 9"),
    ] {
        let reply = http(
            server.addr,
            "PATCH",
            "/api/params",
            &[],
            Some(patch.to_string().as_bytes()),
        );
        let detail = detail_422(reply.status, &reply.json());
        assert!(detail.contains(name), "{patch}: {detail}");
    }
    assert_eq!(params(), before, "nothing changed");
    // The process lives and serves: health, a load in range, a chat.
    assert_eq!(server.get("/health").status, 200);
    let loaded = server
        .post(
            "/api/models/tiny/load",
            &json!({"context_size": 512, "threads": 1, "batch_size": 64, "gpu_layers": 3}),
        )
        .ok_json();
    assert_eq!(loaded["context_size"], 512);
    chat_works(server.addr);
}

#[test]
fn out_of_range_load_and_params_are_422_over_native_messaging() {
    let models = tiny_models(&["tiny"]);
    let mut host = native_host(&models);
    for (n, (mut body, names)) in bad_loads().into_iter().enumerate() {
        body["id"] = json!(n);
        body["request_type"] = json!("LoadModel");
        body["model"] = json!("tiny");
        let reply = host.request(body.clone());
        assert_eq!(reply["response_type"], "Error", "{reply}");
        let detail = detail_422(
            reply["error"]["status"].as_u64().unwrap() as u16,
            &reply["error"],
        );
        for name in names {
            assert!(detail.contains(name), "{body}: {detail}");
        }
    }
    let reply = host.request(json!({"id": "p", "request_type": "SetParams",
        "threads": 2_000_000_000u32}));
    let detail = detail_422(
        reply["error"]["status"].as_u64().unwrap_or(0) as u16,
        &reply["error"],
    );
    assert!(detail.contains("threads 2000000000"), "{detail}");
    let health = host.request(json!({"id": "h", "request_type": "Health"}));
    assert_eq!(health["response_type"], "Health", "{health}");
    let loaded = host.request(
        json!({"id": "l", "request_type": "LoadModel", "model": "tiny",
        "threads": 1, "context_size": 256}),
    );
    assert_eq!(loaded["response_type"], "ModelLoaded", "{loaded}");
    assert_eq!(loaded["context_size"], 256);
    host.send(
        &json!({"id": "c", "request_type": "Chat", "model": "tiny", "stream": false,
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    );
    let done = host.recv_within(Duration::from_secs(10));
    assert_eq!(done["response_type"], "ChatComplete", "{done}");
}
