//! Responses (session chat) against the real binary and llama.cpp: each turn
//! is stored with the user's message, and the next turn sees the history.

use serde_json::json;

use crate::util::{HttpServer, NativeHost, TempDir, tiny_gguf};

/// A data dir whose models dir holds the tiny random GGUF as `tiny`.
fn data_with_tiny_model() -> TempDir {
    let data = TempDir::new("responses");
    let models = data.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(tiny_gguf(), models.join("tiny.gguf")).unwrap();
    data
}

#[test]
fn each_turn_is_stored_and_the_history_grows() {
    let server = HttpServer::start_with(data_with_tiny_model(), |_| {});
    let turn = |input: &str| {
        let reply = server.post(
            "/api/responses",
            &json!({"session_id": "s1", "input": input, "model": "tiny", "max_tokens": 6, "stream": false}),
        );
        reply.ok_json()
    };
    let first = turn("hello there");
    assert_eq!(first["response_type"], "ChatComplete", "{first}");
    assert_eq!(first["session_id"], "s1");
    let second = turn("and again");
    let history = server.get("/api/sessions/s1/messages?order=oldest").json();
    let messages = history["messages"].as_array().unwrap();
    let turns: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(turns.len(), 4, "{history}");
    assert_eq!(turns[0], ("user", "hello there"));
    assert_eq!(turns[1], ("assistant", first["text"].as_str().unwrap()));
    assert_eq!(turns[2], ("user", "and again"));
    assert_eq!(turns[3], ("assistant", second["text"].as_str().unwrap()));
    assert!(
        second["usage"]["prompt_tokens"].as_u64() > first["usage"]["prompt_tokens"].as_u64(),
        "the second prompt carries the first turn: {first} {second}"
    );
}

#[test]
fn a_streamed_turn_over_native_messaging_is_stored_whole() {
    let mut host = NativeHost::start_with(data_with_tiny_model(), |_| {});
    host.send(
        &json!({"id": "r", "request_type": "Responses", "session_id": "s2", "input": "hi",
        "model": "tiny", "max_tokens": 8}),
    );
    let frames = host.recv_until_done(&json!("r"));
    let last = frames.last().unwrap();
    assert_eq!(last["response_type"], "ChatComplete", "{last}");
    let streamed: String = frames
        .iter()
        .filter(|f| f["response_type"] == "ChatChunk")
        .map(|f| f["delta"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, last["text"].as_str().unwrap());
    let history = host.request(
        json!({"id": "h", "request_type": "ChatHistory", "session_id": "s2", "order": "oldest"}),
    );
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{history}");
    assert_eq!(messages[1]["content"], last["text"]);
}
