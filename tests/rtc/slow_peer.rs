//! A data channel peer that stops reading costs nobody else anything: its
//! replies wait in its own bounded outboxes, and the SQLite writer, the pool
//! and the other clients go on.

use std::time::{Duration, Instant};

use serde_json::json;

use super::TestServer;
use super::client::{Client, post};

#[test]
fn a_peer_that_stops_reading_holds_up_no_one_elses_durable_writes() {
    let server = TestServer::start();
    // Under tiny_http's chunked threshold (32 KiB), which this client does not decode.
    let big = "x".repeat(30_000);
    for _ in 0..16 {
        let saved = post(
            server.http,
            "/api/sessions/big/messages",
            &json!({"role": "user", "content": big}),
        );
        assert_eq!(saved["response_type"], "MessageSaved", "{saved}");
    }
    let mut peer = Client::connect(server.http);
    // Megabytes of replies and durable writes of its own, then it never
    // reads again: the server's SCTP window to it fills at once.
    for i in 0..12 {
        peer.send(
            &json!({"id": format!("h{i}"), "request_type": "ChatHistory",
            "session_id": "big", "limit": 16}),
        );
        peer.send(
            &json!({"id": format!("w{i}"), "request_type": "SaveMessage",
            "session_id": "peer", "role": "user", "content": big}),
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..20 {
        let started = Instant::now();
        let saved = post(
            server.http,
            "/api/sessions/other/messages",
            &json!({"role": "user", "content": format!("message {i}")}),
        );
        assert_eq!(saved["response_type"], "MessageSaved", "{saved}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a durable write waited {:?} on the stalled peer",
            started.elapsed()
        );
    }
    let history = server.get("/api/sessions/other/messages?limit=50");
    assert_eq!(history["messages"].as_array().unwrap().len(), 20);
    drop(peer);
}
