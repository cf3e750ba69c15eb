//! The model lifecycle on the real binary with the tiny GGUF: unknown
//! models and wrong settings, the memory budget and LRU eviction, corrupt
//! files, load/info/select/unload, and unloading after the keep-alive.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::inference::{http_server, tiny_models, user};
use crate::util::{HttpServer, TempDir, http, tiny_gguf};

#[test]
fn unknown_models_are_404_and_wrong_settings_422() {
    let models = tiny_models(&["tiny"]);
    let server = http_server(&models, &[]);
    let reply = server.post(
        "/api/chat",
        &json!({"model": "nope", "messages": user("x")}),
    );
    assert_eq!(reply.status, 404);
    assert!(reply.json()["detail"].as_str().unwrap().contains("nope"));
    let reply = server.post(
        "/api/chat",
        &json!({"model": "../tiny", "messages": user("x")}),
    );
    assert_eq!(reply.status, 404);
    let reply = server.post(
        "/api/chat",
        &json!({"model": "tiny", "messages": user("x"), "top_p": 2}),
    );
    assert_eq!(reply.status, 422);
    let reply = server.post("/api/chat", &json!({"model": "tiny", "messages": []}));
    assert_eq!(reply.status, 422);
    let empty = TempDir::new("nomodels");
    let bare = http_server(&empty, &[]);
    let reply = bare.post("/api/chat", &json!({"messages": user("x")}));
    assert_eq!(reply.status, 404, "no chat model at all");
}

#[test]
fn a_model_over_the_memory_budget_is_refused_with_507() {
    let models = tiny_models(&["tiny"]);
    let server = http_server(&models, &[("TABAGENT_MEMORY_BUDGET", "1000000")]);
    let reply = server.post(
        "/api/chat",
        &json!({"model": "tiny", "messages": user("x")}),
    );
    reply.assert_status(507);
    assert!(reply.json()["detail"].as_str().unwrap().contains("budget"));
    let check = server.get("/api/models/tiny/compatibility").json();
    assert_eq!(check["compatible"], false);
    let estimate = server
        .get("/api/models/tiny/memory?context_size=256")
        .json();
    assert_eq!(estimate["context_size"], 256);
    let sum = ["weights_bytes", "kv_cache_bytes", "overhead_bytes"]
        .iter()
        .map(|k| estimate[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(estimate["total_bytes"].as_u64().unwrap(), sum);
    assert!(estimate["kv_cache_bytes"].as_u64().unwrap() > 0);
    assert_eq!(server.get("/api/loaded").json()["models"], json!([]));
}

#[test]
fn least_recently_used_models_are_evicted_to_make_room() {
    let models = tiny_models(&["a", "b"]);
    let server = http_server(&models, &[]);
    let need = server.get("/api/models/a/memory").json()["total_bytes"]
        .as_u64()
        .unwrap();
    drop(server);
    // Room for one model, not two.
    let budget = (need * 3 / 2).to_string();
    let server = http_server(&models, &[("TABAGENT_MEMORY_BUDGET", &budget)]);
    assert_eq!(server.post("/api/models/a/load", &json!({})).status, 200);
    let reply = server.post("/api/models/b/load", &json!({}));
    reply.assert_status(200);
    let loaded = server.get("/api/loaded").json();
    let ids: Vec<&str> = loaded["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b"]);
}

#[test]
fn corrupt_and_truncated_files_are_clear_errors_not_crashes() {
    let models = tiny_models(&["tiny"]);
    let whole = std::fs::read(tiny_gguf()).unwrap();
    std::fs::write(models.path().join("cut.gguf"), &whole[..whole.len() / 2]).unwrap();
    std::fs::write(
        models.path().join("junk.gguf"),
        b"this is not a model, just text",
    )
    .unwrap();
    let mut header_only = whole[..64].to_vec();
    header_only.extend_from_slice(&[0xff; 64]);
    std::fs::write(models.path().join("mangled.gguf"), header_only).unwrap();
    let server = http_server(&models, &[]);
    for (id, says) in [
        ("cut", "truncated"),
        ("junk", "not a GGUF"),
        ("mangled", "corrupt"),
    ] {
        let reply = server.post("/api/chat", &json!({"model": id, "messages": user("x")}));
        assert_eq!(
            reply.status,
            422,
            "{id}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let detail = reply.json()["detail"].as_str().unwrap().to_string();
        assert!(detail.contains(says), "{id}: {detail}");
        assert_eq!(server.get(&format!("/api/models/{id}")).status, 422);
    }
    assert_eq!(server.get("/health").status, 200);
    let ok = server.post(
        "/api/chat",
        &json!({"model": "tiny", "messages": user("x"), "max_tokens": 2}),
    );
    assert_eq!(ok.status, 200);
}

#[test]
fn lifecycle_load_info_select_and_unload() {
    let models = tiny_models(&["tiny", "other"]);
    let server = http_server(&models, &[]);
    let info = server.get("/api/models/tiny").json();
    assert_eq!(info["model"], "tiny", "{info}");
    assert_eq!(info["architecture"], "llama");
    assert_eq!(info["has_chat_template"], true);
    assert_eq!(info["chat_template"], "embedded");
    assert_eq!(info["quantization"], "F32");
    assert!(info["parameter_count"].as_u64().unwrap() > 100_000);
    assert_eq!(info["context_length"], 512);
    let loaded = server
        .post(
            "/api/models/tiny/load",
            &json!({"context_size": 256, "threads": 1}),
        )
        .json();
    assert_eq!(
        (loaded["model"].clone(), loaded["context_size"].clone()),
        (json!("tiny"), json!(256))
    );
    let list = server.get("/api/models").json();
    let tiny = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "tiny")
        .unwrap()
        .clone();
    assert_eq!(tiny["loaded"], true);
    // The selection decides which model a request without one uses, and
    // survives a restart.
    let selected = http(
        server.addr,
        "PUT",
        "/api/selection",
        &[],
        Some(br#"{"task":"chat","model":"other"}"#),
    );
    assert_eq!(selected.json()["chat"], "other");
    let data = server.data.path().to_path_buf();
    let chat = server.post(
        "/api/chat",
        &json!({"messages": user("x"), "max_tokens": 1, "stream": false}),
    );
    assert_eq!(chat.json()["model"], "other");
    assert_eq!(
        server.post("/api/models/tiny/unload", &json!({})).status,
        200
    );
    let ids: Vec<String> = server.get("/api/loaded").json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["other"]);
    let models_path = models.path().to_path_buf();
    let copy = TempDir::new("data-copy");
    std::fs::copy(
        data.join("selection.json"),
        copy.path().join("selection.json"),
    )
    .unwrap();
    drop(server);
    let again = HttpServer::start_with(copy, move |c| {
        c.env("TABAGENT_MODELS_DIR", &models_path);
    });
    let chat = again.post(
        "/api/chat",
        &json!({"messages": user("x"), "max_tokens": 1, "stream": false}),
    );
    assert_eq!(chat.json()["model"], "other");
}

#[test]
fn idle_models_unload_after_the_keep_alive_and_polling_does_not_count() {
    let models = tiny_models(&["tiny"]);
    let server = http_server(&models, &[("TABAGENT_KEEP_ALIVE", "1")]);
    assert_eq!(server.post("/api/models/tiny/load", &json!({})).status, 200);
    let started = Instant::now();
    loop {
        // Polling all the while: Health and ListLoadedModels never keep a model.
        assert_eq!(server.get("/health").status, 200);
        let loaded = server.get("/api/loaded").json();
        if loaded["models"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still loaded: {loaded}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
}
