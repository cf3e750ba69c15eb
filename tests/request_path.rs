//! The request path on the real binary: server job ids and who may stop a
//! job, ids that cannot blow up a reply, and bounded outboxes (a client that
//! stops reading ends its own stream and stalls nobody else).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{EventStream, HttpServer, NativeHost, TempDir, http};

/// The id of the job a reply names, from its `job_id` field.
fn job_id(frame: &Value) -> String {
    frame["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the first reply names its job: {frame}"))
        .to_string()
}

#[test]
fn a_two_mebibyte_id_gets_an_error_frame_within_one_mebibyte() {
    let mut host = NativeHost::start();
    let id = "x".repeat(2 << 20);
    host.send(&json!({"id": id, "request_type": "Health"}));
    let reply = host.recv();
    assert_eq!(reply["response_type"], "Error", "{reply}");
    assert_eq!(reply["id"], Value::Null, "the id is not echoed");
    assert!(reply.to_string().len() < 1 << 20);
    // The port still works.
    let health = host.request(json!({"id": 1, "request_type": "Health"}));
    assert_eq!(health["response_type"], "Health");
}

#[test]
fn a_stop_must_name_its_target() {
    let mut host = NativeHost::start();
    let reply = host.request(json!({"id": 1, "request_type": "StopGeneration"}));
    assert_eq!(reply["error"]["status"], 400, "{reply}");
    let reply = host.request(json!({"id": 2, "request_type": "StopGeneration", "job_id": "zz"}));
    assert_eq!(reply["error"]["status"], 400, "{reply}");
}

/// A streamed chat on a connection of its own, and its job id.
fn open_chat(server: &HttpServer, body: &Value) -> (EventStream, String) {
    let mut stream = EventStream::send(server.addr, "/api/chat", body);
    let job = stream.head();
    (stream, job)
}

/// A Gemma model dir and an HTTP server whose Gemma runs on one thread.
fn gemma_server(test: &str) -> Option<(TempDir, HttpServer)> {
    let real = crate::inference::real_models(test)?;
    let models = crate::inference::gemma_models(&real);
    let server = crate::inference::http_server(&models, &[]);
    let load = server.post(
        &format!("/api/models/{}/load", crate::inference::GEMMA),
        &json!({"threads": 1}),
    );
    load.assert_status(200);
    Some((models, server))
}

fn long_chat(id: &str) -> Value {
    json!({"id": id, "model": crate::inference::GEMMA, "stream": true, "max_tokens": 400,
        "messages": [{"role": "user", "content": "Tell me a long story."}]})
}

#[test]
fn gemma_only_a_job_id_stops_a_job_from_another_connection() {
    let Some((_models, server)) =
        gemma_server("gemma_only_a_job_id_stops_a_job_from_another_connection")
    else {
        return;
    };
    let (mut stream, job) = open_chat(&server, &long_chat("g"));
    let first = stream.next_event();
    assert_eq!(first["job_id"], job, "the first chunk names the job too");

    // My client id, named from another connection, reaches nothing.
    let rpc = |body: Value| {
        http(
            server.addr,
            "POST",
            "/v1/rpc",
            &[],
            Some(body.to_string().as_bytes()),
        )
    };
    let other = rpc(json!({"id": "s", "request_type": "StopGeneration", "target_id": "g"}));
    assert_eq!(other.ok_json()["state"], "unknown");
    let status = rpc(json!({"id": "h", "request_type": "GetHaltStatus", "target_id": "g"}));
    assert_eq!(
        status.ok_json()["state"],
        "unknown",
        "nor can it be observed"
    );
    for _ in 0..3 {
        let chunk = stream.next_event();
        assert_eq!(
            chunk["response_type"], "ChatChunk",
            "my generation goes on: {chunk}"
        );
    }

    // My job id does, from anywhere.
    let watched = server.get(&format!("/api/generations/{job}")).ok_json();
    assert_eq!(watched["state"], "running");
    let stopped = http(
        server.addr,
        "POST",
        &format!("/api/generations/{job}/stop"),
        &[],
        None,
    );
    assert_eq!(stopped.ok_json()["state"], "stopping");
    let mut after = 0;
    let last = loop {
        let event = stream.next_event();
        if event["done"] == true {
            break event;
        }
        after += 1;
    };
    assert_eq!(last["finish_reason"], "cancelled", "{last}");
    assert!(
        after <= 1,
        "{after} chunks arrived after the stop was acknowledged"
    );
}

#[test]
fn gemma_no_chunk_follows_the_stopped_reply_on_one_connection() {
    let Some(real) =
        crate::inference::real_models("gemma_no_chunk_follows_the_stopped_reply_on_one_connection")
    else {
        return;
    };
    let models = crate::inference::gemma_models(&real);
    let mut host = crate::inference::native_host(&models);
    let load = host.request(json!({"id": "l", "request_type": "LoadModel",
        "model": crate::inference::GEMMA, "threads": 1}));
    assert_eq!(load["response_type"], "ModelLoaded", "{load}");
    let mut chat = long_chat("g");
    chat["request_type"] = json!("Chat");
    host.send(&chat);
    let first = host.recv_within(Duration::from_secs(60));
    let job = job_id(&first);
    assert_eq!(host.recv()["response_type"], "ChatChunk");
    host.send(&json!({"id": "s", "request_type": "StopGeneration", "job_id": job}));
    let mut stopped = false;
    loop {
        let frame = host.recv();
        if frame["id"] == "s" {
            assert_eq!(frame["state"], "stopping", "{frame}");
            assert_eq!(frame["job_id"], job);
            stopped = true;
            continue;
        }
        assert_eq!(frame["id"], "g");
        if frame["done"] == true {
            assert_eq!(frame["finish_reason"], "cancelled", "{frame}");
            break;
        }
        assert!(!stopped, "a chunk arrived after the Stopped reply: {frame}");
    }
    assert!(stopped);
}

#[test]
fn gemma_a_full_queue_answers_503_with_retry_after() {
    let Some(real) =
        crate::inference::real_models("gemma_a_full_queue_answers_503_with_retry_after")
    else {
        return;
    };
    let models = crate::inference::gemma_models(&real);
    let server = crate::inference::http_server(&models, &[("TABAGENT_QUEUE_CAPACITY", "1")]);
    let (mut stream, job) = open_chat(&server, &long_chat("long"));
    assert_eq!(stream.next_event()["response_type"], "ChatChunk");
    let refused = server.post(
        "/api/chat",
        &json!({"model": crate::inference::GEMMA, "max_tokens": 1,
            "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    http(
        server.addr,
        "POST",
        &format!("/api/generations/{job}/stop"),
        &[],
        None,
    )
    .assert_status(200);
    while stream.next_event()["done"] != true {}
}

/// Starts `tabagent` over HTTP with small outbox bounds and send buffers.
fn tight_server(models: &TempDir) -> HttpServer {
    let models = models.path().to_path_buf();
    HttpServer::start_with(TempDir::new("data"), move |command| {
        command
            .env("TABAGENT_MODELS_DIR", &models)
            .env("TABAGENT_SEND_QUEUE_BYTES", "4096")
            .env("TABAGENT_SEND_TIMEOUT", "2")
            .env("TABAGENT_HTTP_SEND_BUFFER", "4096")
            // The pull below comes from a file server on loopback.
            .env("TABAGENT_ALLOW_LOOPBACK_PULLS", "true");
    })
}

/// A connection that sends `head` and then never reads (a tiny receive window).
fn never_reads(server: &HttpServer, head: &str) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

#[test]
fn a_chat_stream_nobody_reads_ends_and_stalls_no_one() {
    let models = crate::inference::tiny_models(&["tiny"]);
    let server = tight_server(&models);
    // The tiny model runs to max_tokens (480 tokens, ~70 KB of events): far
    // more than the bounds and buffers below hold. `ignore_eos`, because a
    // batch shared with the other chat below changes the sampled tokens.
    let body = json!({"model": "tiny", "stream": true, "max_tokens": 480, "ignore_eos": true,
        "messages": [{"role": "user", "content": "hello"}]})
    .to_string();
    let head = format!(
        "POST /api/chat HTTP/1.1\r\nHost: {}\r\n{}Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr,
        crate::util::auth_line(),
        body.len()
    );
    let mut stalled = never_reads(&server, &head);
    std::thread::sleep(Duration::from_millis(300));

    // Another client's chat completes meanwhile.
    let started = Instant::now();
    let other = server.post(
        "/api/chat",
        &json!({"model": "tiny", "max_tokens": 8, "stream": false,
            "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(other.ok_json()["response_type"], "ChatComplete");
    assert!(started.elapsed() < Duration::from_secs(5));

    // The stalled stream's job ends by itself: the bounds above stop it (a
    // generation that ran on would keep its slot busy until max_tokens).
    let deadline = Instant::now() + Duration::from_secs(90);
    while !crate::slots::busy_jobs(&crate::slots::loaded_slots(&server, "tiny")).is_empty() {
        assert!(Instant::now() < deadline, "the stalled job still runs");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Only now does the client read: the stream was ended before the
    // generation finished, its last event says why (or, had the reader
    // stayed away past the send timeout, the connection was closed), and it
    // never completes.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = Vec::new();
    let read = stalled.read_to_end(&mut received);
    assert!(
        read.is_ok(),
        "the server closed the stalled stream: {read:?}"
    );
    let text = String::from_utf8_lossy(&received);
    assert!(
        !text.contains("ChatComplete"),
        "the whole generation should not have been queued: {} bytes",
        received.len()
    );
    let ended = text.contains("slow-reader") || !text.contains("\"done\":true");
    assert!(ended, "{text}");
}

#[test]
fn an_event_subscriber_that_never_reads_holds_up_no_load_or_pull() {
    let models = crate::inference::tiny_models(&["tiny"]);
    let server = tight_server(&models);
    let head = format!(
        "GET /api/events HTTP/1.1\r\nHost: {}\r\n{}Connection: close\r\n\r\n",
        server.addr,
        crate::util::auth_line()
    );
    let mut subscriber = never_reads(&server, &head);
    std::thread::sleep(Duration::from_millis(200));

    // Far more events than the subscriber's bounds hold: every load and
    // unload still answers at once.
    for _ in 0..60 {
        let started = Instant::now();
        server
            .post("/api/models/tiny/load", &json!({}))
            .assert_status(200);
        server
            .post("/api/models/tiny/unload", &json!({}))
            .assert_status(200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a load waited on the subscriber"
        );
    }
    let file = crate::pull::fake_gguf(4 << 20);
    let sha256 = crate::pull::sha256_hex(&file);
    let files =
        crate::pull::FileServer::start(std::collections::HashMap::from([("/m.gguf", file)]), None);
    let started = Instant::now();
    let pulled = server.post(
        "/api/pull",
        &json!({"url": files.url("/m.gguf"), "model": "pulled", "sha256": sha256}),
    );
    assert!(pulled.events().last().unwrap().contains("PullComplete"));
    assert!(started.elapsed() < Duration::from_secs(10));

    // The subscriber was dropped: its connection closes after the send timeout.
    subscriber
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = Vec::new();
    assert!(
        subscriber.read_to_end(&mut received).is_ok(),
        "the server ended the stalled subscription"
    );
}
