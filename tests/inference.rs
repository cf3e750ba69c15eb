//! GGUF chat and the model lifecycle against the real binary and real
//! llama.cpp: most tests on a tiny random-weight GGUF made by
//! `tests/fixtures/make_tiny_gguf.py` (milliseconds per request), the ones
//! that need a generation slow enough to interrupt on Gemma 3 270M, found in
//! `$TABAGENT_TEST_MODELS` (`make test` sets it; without it they are skipped
//! with a loud message).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{HttpServer, NativeHost, TempDir, http, tiny_gguf};

pub const GEMMA: &str = "gemma-3-270m-q4_k_m";

/// The real models dir, or None (with a loud message) outside `make test`.
pub fn real_models(test: &str) -> Option<PathBuf> {
    match std::env::var_os("TABAGENT_TEST_MODELS") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join(format!("{GEMMA}.gguf")).is_file(),
                "{GEMMA}.gguf is not in TABAGENT_TEST_MODELS={} (run make models)",
                dir.display()
            );
            Some(dir)
        }
        None => {
            crate::util::skip(
                test,
                "set TABAGENT_TEST_MODELS to the models dir (make test does)",
            );
            None
        }
    }
}

/// A models dir holding the tiny model under each of `names`.
pub(crate) fn tiny_models(names: &[&str]) -> TempDir {
    let dir = TempDir::new("models");
    for name in names {
        std::fs::copy(tiny_gguf(), dir.path().join(format!("{name}.gguf"))).unwrap();
    }
    dir
}

/// A models dir with a link to the real Gemma (and the tiny model).
pub fn gemma_models(real: &Path) -> TempDir {
    let dir = tiny_models(&["tiny"]);
    let name = format!("{GEMMA}.gguf");
    std::os::unix::fs::symlink(real.join(&name), dir.path().join(&name)).unwrap();
    dir
}

pub(crate) fn http_server(models: &TempDir, env: &[(&str, &str)]) -> HttpServer {
    let models = models.path().to_path_buf();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    HttpServer::start_with(TempDir::new("data"), move |command| {
        command.env("TABAGENT_MODELS_DIR", &models);
        for (key, value) in env {
            command.env(key, value);
        }
    })
}

pub(crate) fn native_host(models: &TempDir) -> NativeHost {
    let models = models.path().to_path_buf();
    NativeHost::start_with(TempDir::new("data"), move |command| {
        command.env("TABAGENT_MODELS_DIR", &models);
    })
}

pub(crate) fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// Chunks' deltas and the final reply of a native request.
fn split(frames: Vec<Value>) -> (Vec<String>, Value) {
    let mut frames = frames;
    let last = frames.pop().unwrap();
    let deltas = frames
        .iter()
        .filter(|f| f["response_type"] == "ChatChunk")
        .map(|f| f["delta"].as_str().unwrap().to_string())
        .collect();
    (deltas, last)
}

#[test]
fn chat_streams_token_by_token_over_native_messaging() {
    let models = tiny_models(&["tiny"]);
    let mut host = native_host(&models);
    host.send(&json!({"id": 1, "request_type": "Chat", "model": "tiny",
        "messages": user("hello"), "max_tokens": 12, "seed": 3}));
    let (deltas, done) = split(host.recv_until_done(&json!(1)));
    assert_eq!(done["response_type"], "ChatComplete", "{done}");
    assert!(deltas.len() >= 2, "several chunks: {deltas:?}");
    assert_eq!(deltas.concat(), done["text"].as_str().unwrap());
    let usage = &done["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 3);
    assert!((1..=12).contains(&usage["completion_tokens"].as_u64().unwrap()));
    assert!(["stop", "length"].contains(&done["finish_reason"].as_str().unwrap()));
    assert_eq!(done["model"], "tiny");
}

#[test]
fn chat_streams_as_sse_over_http_and_answers_once_when_not_streaming() {
    let models = tiny_models(&["tiny"]);
    let server = http_server(&models, &[]);
    let reply = server.post(
        "/api/chat",
        &json!({"model": "tiny", "messages": user("hi"), "max_tokens": 8}),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let events: Vec<Value> = reply
        .events()
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let (deltas, done) = split(events);
    assert!(!deltas.is_empty());
    assert_eq!(deltas.concat(), done["text"].as_str().unwrap());
    let once = server.post(
        "/api/chat",
        &json!({"model": "tiny", "messages": user("hi"), "max_tokens": 8, "stream": false}),
    );
    assert_eq!(once.json()["response_type"], "ChatComplete");
}

#[test]
fn a_seed_repeats_a_generation_and_stop_sequences_cut_it() {
    let models = tiny_models(&["tiny"]);
    let server = http_server(&models, &[]);
    let generate = |extra: Value| {
        let mut body = json!({"model": "tiny", "prompt": "the page", "max_tokens": 40,
            "seed": 11, "temperature": 0.9, "stream": false});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        server.post("/api/generate", &body).json()
    };
    let first = generate(json!({}));
    let second = generate(json!({}));
    let text = first["text"].as_str().unwrap().to_string();
    assert_eq!(
        text,
        second["text"].as_str().unwrap(),
        "same seed, same text"
    );
    // Cut at a piece from the middle: everything before it, none of it.
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() > 8, "{text:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let cut = generate(json!({"stop": [stop.clone()]}));
    let expected = &text[..text.find(&stop).unwrap()];
    assert_eq!(cut["text"].as_str().unwrap(), expected);
    assert_eq!(cut["finish_reason"], "stop");
}

#[test]
fn a_follow_up_turn_reuses_the_cached_prefix() {
    let models = tiny_models(&["tiny"]);
    let mut host = native_host(&models);
    let first = host.request(json!({"id": "t1", "request_type": "Chat", "model": "tiny",
        "messages": user("hello there"), "max_tokens": 6, "seed": 1, "stream": false}));
    let prompt = first["usage"]["prompt_tokens"].as_u64().unwrap();
    let reply = first["text"].as_str().unwrap();
    let follow = host.request(json!({"id": "t2", "request_type": "Chat", "model": "tiny",
        "messages": [{"role": "user", "content": "hello there"},
                     {"role": "assistant", "content": reply},
                     {"role": "user", "content": "and then"}],
        "max_tokens": 6, "stream": false}));
    let cached = follow["usage"]["cached_tokens"].as_u64().unwrap();
    assert!(
        cached >= prompt - 1,
        "reused {cached} of the first prompt's {prompt} tokens"
    );
    assert!(cached < follow["usage"]["prompt_tokens"].as_u64().unwrap());
}

#[test]
fn stop_generation_cancels_and_says_so() {
    let models = tiny_models(&["tiny"]);
    let mut host = native_host(&models);
    // Both frames in one write: the stop lands before the job can finish.
    let chat = json!({"id": "c", "request_type": "Chat", "model": "tiny",
        "messages": user("hello"), "max_tokens": 400});
    let stop = json!({"id": "s", "request_type": "StopGeneration", "target_id": "c"});
    let mut bytes = util_frame(&chat);
    bytes.extend(util_frame(&stop));
    host.send_raw(&bytes);
    let mut done = None;
    let mut stopped = None;
    while done.is_none() || stopped.is_none() {
        let frame = host.recv();
        if frame["id"] == "c" && frame["done"] == true {
            done = Some(frame);
        } else if frame["id"] == "s" {
            stopped = Some(frame);
        }
    }
    let (done, stopped) = (done.unwrap(), stopped.unwrap());
    assert_eq!(stopped["response_type"], "Stopped");
    assert_eq!(done["finish_reason"], "cancelled", "{done}");
    assert!(done["usage"]["completion_tokens"].as_u64().unwrap() < 400);
}

fn util_frame(value: &Value) -> Vec<u8> {
    crate::util::frame(value.to_string().as_bytes())
}

#[test]
fn tokenize_and_detokenize_round_trip() {
    let models = tiny_models(&["tiny"]);
    let server = http_server(&models, &[]);
    let tokens = server
        .post(
            "/tokenize",
            &json!({"model": "tiny", "content": "hello world"}),
        )
        .json();
    let ids = tokens["tokens"].as_array().unwrap().clone();
    assert!(!ids.is_empty(), "{tokens}");
    let text = server
        .post("/detokenize", &json!({"model": "tiny", "tokens": ids}))
        .json();
    assert_eq!(text, json!({"content": "hello world"}));
    let with_bos = server
        .post(
            "/api/tokenize",
            &json!({"model": "tiny", "content": "hello world", "add_special": true}),
        )
        .json();
    assert_eq!(with_bos["tokens"].as_array().unwrap().len(), ids.len() + 1);
    let bad = server.post(
        "/detokenize",
        &json!({"model": "tiny", "tokens": [99999999]}),
    );
    assert_eq!(bad.status, 422);
}

#[test]
fn openai_routes_speak_openai() {
    let models = tiny_models(&["tiny"]);
    let server = http_server(&models, &[]);
    let chat = server
        .post(
            "/v1/chat/completions",
            &json!({"model": "tiny", "messages": user("hi"), "max_tokens": 4}),
        )
        .json();
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["choices"][0]["message"]["role"], "assistant");
    assert!(chat["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let stream = server.post(
        "/v1/chat/completions",
        &json!({"model": "tiny", "messages": user("hi"), "max_tokens": 4, "stream": true}),
    );
    let events = stream.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(last["choices"][0]["finish_reason"].is_string());
    // Each completion has an id of its own, the same on every chunk.
    let id = first["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-") && id.len() > 12, "{id}");
    assert_ne!(chat["id"].as_str(), Some(id));
    assert_eq!(last["id"].as_str(), Some(id));
    let completion = server
        .post(
            "/v1/completions",
            &json!({"model": "tiny", "prompt": "the", "max_tokens": 3}),
        )
        .json();
    assert_eq!(completion["object"], "text_completion");
    let missing = server.post(
        "/v1/chat/completions",
        &json!({"model": "gpt-4", "messages": user("hi")}),
    );
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"]["message"].is_string());
}

/// The official `openai` Python client against /v1 (`pip install openai`).
#[test]
fn the_official_openai_python_client_works() {
    let have_client = Command::new("python3")
        .args(["-c", "import openai"])
        .status()
        .unwrap()
        .success();
    if !have_client {
        assert!(
            std::env::var_os("TABAGENT_TEST_MODELS").is_none(),
            "the openai Python package is missing: python3 -m pip install openai"
        );
        eprintln!(
            "\n*** SKIPPED the_official_openai_python_client_works: python3 -m pip install openai ***\n"
        );
        return;
    }
    let models = tiny_models(&["tiny"]);
    let server = http_server(&models, &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let output = Command::new("python3")
        .arg(script)
        .env("OPENAI_API_KEY", crate::util::TEST_KEY)
        .arg(server.url("/v1"))
        .arg("tiny")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openai_client.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---- on the real Gemma 3 270M ----

#[test]
fn gemma_has_no_template_and_gets_the_gemma_fallback() {
    let Some(real) = real_models("gemma_has_no_template_and_gets_the_gemma_fallback") else {
        return;
    };
    let models = gemma_models(&real);
    let server = http_server(&models, &[]);
    let info = server.get(&format!("/api/models/{GEMMA}")).json();
    assert_eq!(info["architecture"], "gemma3");
    assert_eq!(
        (
            info["has_chat_template"].clone(),
            info["chat_template"].clone()
        ),
        (json!(false), json!("gemma"))
    );
    assert_eq!(info["quantization"], "Q4_K_M");
    let chat = server.post(
        "/api/chat",
        &json!({"model": GEMMA, "messages": user("Name a colour."), "max_tokens": 16, "temperature": 0, "stream": false}),
    );
    let chat = chat.json();
    assert_eq!(chat["response_type"], "ChatComplete", "{chat}");
    assert!(!chat["text"].as_str().unwrap().trim().is_empty());
}

#[test]
fn gemma_stop_generation_mid_stream_within_a_token() {
    let Some(real) = real_models("gemma_stop_generation_mid_stream_within_a_token") else {
        return;
    };
    let models = gemma_models(&real);
    let mut host = native_host(&models);
    host.send(&json!({"id": "g", "request_type": "Chat", "model": GEMMA,
        "messages": user("Tell me a long story."), "max_tokens": 400, "temperature": 0.7}));
    let mut chunks = 0;
    while chunks < 3 {
        let frame = host.recv_within(Duration::from_secs(60));
        assert_eq!(frame["response_type"], "ChatChunk", "{frame}");
        chunks += 1;
    }
    host.send(&json!({"id": "s", "request_type": "StopGeneration", "target_id": "g"}));
    let mut after_stop = 0;
    let done = loop {
        let frame = host.recv();
        if frame["id"] == "s" {
            assert_eq!(frame["state"], "stopping");
            after_stop = 0;
            continue;
        }
        if frame["done"] == true {
            break frame;
        }
        after_stop += 1;
    };
    assert_eq!(done["finish_reason"], "cancelled");
    assert!(
        after_stop <= 2,
        "{after_stop} chunks after the stop was acknowledged"
    );
    assert!(done["usage"]["completion_tokens"].as_u64().unwrap() < 100);
}

/// Reads an SSE response until the first `data:` event, then hangs up;
/// returns the job id the response named.
fn start_stream_and_hang_up(server: &HttpServer, body: &Value) -> String {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let body = body.to_string();
    write!(
        stream,
        "POST /api/chat HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr,
        crate::util::auth_line(),
        body.len()
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data: ") {
        let n = stream.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the stream ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    drop(stream);
    let head = String::from_utf8_lossy(&seen).to_string();
    head.lines()
        .find_map(|line| line.strip_prefix("X-Job-Id: "))
        .expect("the stream names its job")
        .trim()
        .to_string()
}

#[test]
fn gemma_client_disconnect_stops_the_generation() {
    let Some(real) = real_models("gemma_client_disconnect_stops_the_generation") else {
        return;
    };
    let models = gemma_models(&real);
    let server = http_server(&models, &[]);
    // One thread: two llama.cpp processes with a thread per core each (as
    // when tests run side by side) slow each other to seconds per token.
    let load = server.post(&format!("/api/models/{GEMMA}/load"), &json!({"threads": 1}));
    assert_eq!(load.status, 200);
    let job = start_stream_and_hang_up(
        &server,
        &json!({"id": "gone", "model": GEMMA, "messages": user("Tell me a long story."), "max_tokens": 1000}),
    );
    // 1000 tokens on one thread take over twenty seconds; a stopped job ends
    // within a token or two, even while the model emits tokens that show no
    // text.
    let started = Instant::now();
    loop {
        let state = server.get(&format!("/api/generations/{job}")).json()["state"].clone();
        if state == "unknown" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still {state} after the client left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn gemma_health_says_loading_while_a_model_loads() {
    let Some(real) = real_models("gemma_health_says_loading_while_a_model_loads") else {
        return;
    };
    let models = gemma_models(&real);
    let server = http_server(&models, &[]);
    let addr = server.addr;
    let load = std::thread::spawn(move || {
        http(
            addr,
            "POST",
            &format!("/api/models/{GEMMA}/load"),
            &[],
            Some(b"{}"),
        )
    });
    let mut saw_loading = false;
    while !load.is_finished() {
        let health = server.get("/health");
        if health.status == 503 {
            assert_eq!(health.json()["status"], "loading");
            saw_loading = true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(load.join().unwrap().status, 200);
    assert!(saw_loading, "/health never said loading");
    assert_eq!(server.get("/health").json()["status"], "ok");
}
