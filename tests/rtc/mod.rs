//! WebRTC: a second str0m peer in the test process connects to tabagent over
//! loopback UDP, after signaling over HTTP (or /v1/rpc, or native messaging).
//! Most tests run the server in-process (so they can publish push events and
//! shorten the idle timeout); one drives the real binary in `--mode all`.

pub mod browser;
pub mod client;
mod history;
mod knowledge;
mod server;
mod sessions;
pub mod signaling;
mod slow_peer;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tabagent::api::ServerEvent;

use self::client::{Client, http_json, post};
pub use self::server::TestServer;
use crate::util::TempDir;

pub(crate) fn health(id: impl Into<Value>) -> Value {
    json!({"id": id.into(), "request_type": "Health"})
}

#[test]
fn health_over_the_data_channel_and_session_state() {
    let server = TestServer::start();
    let (mut client, signal) = Client::signal(server.http);
    assert!(
        signal["sdp"].as_str().unwrap().contains("127.0.0.1"),
        "a loopback candidate"
    );
    assert!(signal["sdp"].as_str().unwrap().contains("a=ice-lite"));
    assert!(signal["created_at"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(signal["max_message_bytes"], 1 << 20);
    client.wait_open(Duration::from_secs(10));

    let reply = client.call(health("h1"));
    assert_eq!(reply["response_type"], "Health", "{reply}");
    assert_eq!(reply["id"], "h1");
    assert_eq!(reply["done"], true);
    // Numeric ids come back as numbers; a bad request keeps its id.
    let reply = client.call(json!({"id": 7, "request_type": "Nope"}));
    assert_eq!(
        (reply["id"].clone(), reply["error"]["status"].clone()),
        (json!(7), json!(400))
    );

    let session = server.session(&client.session_id);
    assert_eq!(session["state"], "connected", "{session}");
    assert_eq!(session["peer_id"], "test");
    assert!(session["messages_in"].as_u64().unwrap() >= 2);
    assert!(session["bytes_out"].as_u64().unwrap() > 0);
    let list = server.get("/v1/webrtc/sessions");
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "{list}");
    // Signaling over the data channel itself works too.
    let reply = client.call(
        json!({"id": "s", "request_type": "GetWebRtcSession", "session_id": client.session_id}),
    );
    assert_eq!(reply["response_type"], "WebRtcSession", "{reply}");
}

#[test]
fn a_thousand_requests_come_back_in_order() {
    let server = TestServer::start();
    let mut client = Client::connect(server.http);
    for i in 0..1000 {
        client.send(&health(i));
    }
    for i in 0..1000 {
        let reply = client.recv(Duration::from_secs(20));
        assert_eq!(reply["id"], i, "{reply}");
        assert_eq!(reply["response_type"], "Health");
    }
    let session = server.session(&client.session_id);
    assert_eq!(session["messages_in"], 1000);
    assert_eq!(session["messages_out"], 1000);
}

#[test]
fn a_session_over_its_rate_gets_an_error_frame_with_retry_after() {
    let server = TestServer::start();
    server
        .handler
        .limiter()
        .set(tabagent::ratelimit::RateSettings {
            requests_per_second: 5,
            offers_per_minute: 0,
            generations_per_client: 0,
        });
    let mut client = Client::connect(server.http);
    // Bursts of twice the rate pass; the next one is refused with an Error frame.
    for i in 0..11 {
        client.send(&health(i));
    }
    let replies: Vec<Value> = (0..11)
        .map(|_| client.recv(Duration::from_secs(20)))
        .collect();
    for reply in &replies[..10] {
        assert_eq!(reply["response_type"], "Health", "{reply}");
    }
    let refused = &replies[10];
    assert_eq!(refused["response_type"], "Error", "{refused}");
    assert_eq!(refused["error"]["status"], 429, "{refused}");
    assert_eq!(refused["error"]["retry_after"], 1, "{refused}");
    assert_eq!(refused["id"], 10);
    // The session is one client: another session has a bucket of its own.
    let mut other = Client::connect(server.http);
    assert_eq!(other.call(health("o"))["response_type"], "Health");
    let metrics = server.handler.metrics();
    assert!(
        metrics.contains("\ntabagent_webrtc_sessions 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "tabagent_requests_total{transport=\"webrtc\",route=\"Health\",status=\"429\"} 1\n"
        ),
        "{metrics}"
    );
}

#[test]
fn server_push_streams_to_subscribed_sessions_only() {
    let server = TestServer::start();
    let mut all = Client::connect(server.http);
    let mut low = Client::connect(server.http);
    let mut none = Client::connect(server.http);
    let ack = all.recv_after_send(json!({"id": "sub", "request_type": "Subscribe"}));
    assert_eq!(
        (ack["response_type"].clone(), ack["done"].clone()),
        (json!("Subscribed"), json!(false))
    );
    assert_eq!(ack["events"].as_array().unwrap().len(), 6);
    let ack =
        low.recv_after_send(json!({"id": 1, "request_type": "Subscribe", "events": ["LowMemory"]}));
    assert_eq!(ack["events"], json!(["LowMemory"]));
    let bad = none.call(json!({"id": 2, "request_type": "Subscribe", "events": ["Weather"]}));
    assert_eq!(bad["error"]["status"], 400);
    assert!(bad["error"]["detail"].as_str().unwrap().contains("Weather"));

    // A stream of events arrives whole and in order.
    for i in 0..200 {
        let event = ServerEvent::ModelLoadProgress {
            model: "m".into(),
            progress: i as f32 / 200.0,
        };
        assert_eq!(server.handler.events().publish(&event), 1);
    }
    server.handler.events().publish(&ServerEvent::LowMemory {
        available_bytes: 1,
        total_bytes: 2,
    });
    for i in 0..200 {
        let event = all.recv(Duration::from_secs(10));
        assert_eq!(event["response_type"], "Event");
        assert_eq!(event["event"], "ModelLoadProgress");
        assert_eq!(event["id"], "sub");
        assert_eq!(event["done"], false);
        assert!((event["progress"].as_f64().unwrap() - i as f64 / 200.0).abs() < 1e-6);
    }
    assert_eq!(all.recv(Duration::from_secs(10))["event"], "LowMemory");
    let event = low.recv(Duration::from_secs(10));
    assert_eq!(
        (event["event"].clone(), event["id"].clone()),
        (json!("LowMemory"), json!(1))
    );
    for _ in 0..20 {
        none.drive(Duration::from_millis(5));
    }
    assert!(none.inbox.is_empty(), "{:?}", none.inbox);

    // A closed session's subscription ends at the next event.
    let session = all.session_id.clone();
    let closed = http_json(
        server.http,
        "DELETE",
        &format!("/v1/webrtc/session/{session}"),
        None,
    );
    assert_eq!(closed["response_type"], "WebRtcSessionClosed", "{closed}");
    let loaded = ServerEvent::ModelLoaded { model: "m".into() };
    assert_eq!(server.handler.events().publish(&loaded), 0);
    assert_eq!(server.handler.events().len(), 1);
}

#[test]
fn large_replies_are_split_and_large_requests_joined() {
    let server = TestServer::with(|s| s.max_message_bytes = 512 * 1024);
    let mut client = Client::connect(server.http);
    // The error echoes the 300 kB name: a reply over the client's 256 KiB limit.
    let name = "X".repeat(300_000);
    let reply = client.call(json!({"id": "big", "request_type": name}));
    assert_eq!(reply["error"]["status"], 400);
    assert!(reply["error"]["detail"].as_str().unwrap().contains(&name));
    assert!(
        client.frames_received >= 2,
        "the reply came in Partial frames"
    );

    // A request in Partial frames, joined by the server.
    let text = json!({"id": "p", "request_type": "Health", "pad": "y".repeat(100_000)}).to_string();
    let pieces: Vec<&str> = text
        .as_bytes()
        .chunks(30_000)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    for (seq, piece) in pieces.iter().enumerate() {
        let last = seq + 1 == pieces.len();
        client.send(
            &json!({"id": "p", "request_type": "Partial", "seq": seq, "last": last, "data": piece}),
        );
    }
    let reply = client.recv(Duration::from_secs(10));
    assert_eq!(
        (reply["id"].clone(), reply["response_type"].clone()),
        (json!("p"), json!("Health"))
    );

    // Over the session's limit: 413, and the session keeps working.
    let chunk = "z".repeat(200_000);
    for seq in 0..3 {
        client.send(&json!({"id": "o", "request_type": "Partial", "seq": seq, "last": seq == 2, "data": chunk}));
    }
    let reply = client.recv(Duration::from_secs(10));
    assert_eq!(
        (reply["id"].clone(), reply["error"]["status"].clone()),
        (json!("o"), json!(413))
    );
    assert_eq!(client.call(health("after"))["response_type"], "Health");
}

#[test]
fn bad_input_gets_clear_errors_and_other_sessions_keep_working() {
    let server = TestServer::start();
    let mut client = Client::connect(server.http);

    let reply = post(
        server.http,
        "/v1/webrtc/offer",
        &json!({"sdp": "not sdp at all"}),
    );
    assert_eq!(reply["http_status"], 400, "{reply}");
    assert!(reply["detail"].as_str().unwrap().contains("SDP"));
    let garbage = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nthis is=not sdp\r\n";
    let reply = post(server.http, "/v1/webrtc/offer", &json!({"sdp": garbage}));
    assert_eq!(reply["http_status"], 400, "{reply}");
    let audio_only =
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
    let reply = post(server.http, "/v1/webrtc/offer", &json!({"sdp": audio_only}));
    assert!(
        reply["detail"]
            .as_str()
            .unwrap()
            .contains("no data channel"),
        "{reply}"
    );
    let reply = post(
        server.http,
        "/v1/webrtc/ice",
        &json!({"session_id": "nope", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}),
    );
    assert_eq!(reply["http_status"], 404, "{reply}");
    let reply = post(
        server.http,
        "/v1/webrtc/ice",
        &json!({"session_id": client.session_id, "candidate": "candidate:garbage"}),
    );
    assert_eq!(reply["http_status"], 400, "{reply}");
    let reply = post(
        server.http,
        "/v1/webrtc/answer",
        &json!({"session_id": client.session_id, "sdp": "v=0\r\n"}),
    );
    assert_eq!(reply["http_status"], 400, "{reply}");
    assert_eq!(server.get("/v1/webrtc/session/nope")["http_status"], 404);
    let reply = http_json(server.http, "DELETE", "/v1/webrtc/session/nope", None);
    assert_eq!(reply["http_status"], 404);

    // Malformed messages on the data channel: an error reply each.
    client.send_raw(b"{not json");
    let reply = client.recv(Duration::from_secs(10));
    assert_eq!(
        (reply["id"].clone(), reply["error"]["status"].clone()),
        (Value::Null, json!(400))
    );
    client.send_raw(&[0xff, 0xfe, 0x00]);
    assert!(
        client.recv(Duration::from_secs(10))["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("UTF-8")
    );

    // Random bytes at every UDP socket, from a stranger.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut seed = 0x2545_f491_u64;
    for _ in 0..200 {
        let len = (seed % 1400) as usize + 1;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        for udp in &server.udp {
            stranger.send_to(&bytes, udp).unwrap();
        }
    }
    assert_eq!(client.call(health("still"))["response_type"], "Health");
    let (mut second, _) = Client::signal(server.http);
    second.wait_open(Duration::from_secs(10));
    assert_eq!(second.call(health(1))["response_type"], "Health");
}

#[test]
fn http_event_stream_carries_server_push() {
    use std::io::{Read, Write};
    let server = TestServer::start();
    let mut stream = std::net::TcpStream::connect(server.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = r#"{"events": ["ModelLoaded"]}"#;
    write!(
        stream,
        "POST /api/events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.http,
        body.len()
    )
    .unwrap();
    let mut seen = String::new();
    let mut read_until = |seen: &mut String, needle: &str| {
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            let n = stream.read(&mut buf).expect("the stream stays open");
            assert!(n > 0, "the stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    read_until(&mut seen, "\"Subscribed\"");
    assert!(seen.contains("text/event-stream"), "{seen}");
    // Events before this one were for other kinds only.
    server.handler.events().publish(&ServerEvent::LowMemory {
        available_bytes: 1,
        total_bytes: 2,
    });
    server.handler.events().publish(&ServerEvent::ModelLoaded {
        model: "tiny".into(),
    });
    read_until(&mut seen, "\"ModelLoaded\"");
    assert!(!seen.contains("LowMemory"), "{seen}");
}

/// The real model path: a tiny random GGUF streams ChatChunks on the channel,
/// and another session that subscribed hears the model load and unload.
#[cfg(feature = "llama")]
#[test]
fn streamed_chat_over_the_data_channel() {
    let server = TestServer::start();
    let models = server.data.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(crate::util::tiny_gguf(), models.join("tiny.gguf")).unwrap();
    let mut watcher = Client::connect(server.http);
    let ack = watcher.recv_after_send(json!({"id": "w", "request_type": "Subscribe",
        "events": ["ModelLoadProgress", "ModelLoaded", "ModelUnloaded"]}));
    assert_eq!(ack["response_type"], "Subscribed", "{ack}");
    let mut client = Client::connect(server.http);
    let replies = client.request(json!({
        "id": "chat", "request_type": "Chat", "model": "tiny", "stream": true, "max_tokens": 32, "seed": 1,
        "messages": [{"role": "user", "content": "Say hello."}],
    }));
    let last = replies.last().unwrap();
    assert_eq!(last["response_type"], "ChatComplete", "{last}");
    let chunks: Vec<&Value> = replies
        .iter()
        .filter(|r| r["response_type"] == "ChatChunk")
        .collect();
    assert!(chunks.len() >= 2, "{replies:?}");
    assert!(
        chunks
            .iter()
            .all(|c| c["done"] == false && c["id"] == "chat")
    );
    // The session still answers afterwards.
    assert_eq!(client.call(health("after"))["response_type"], "Health");

    let unloaded = client.call(json!({"id": "u", "request_type": "UnloadModel", "model": "tiny"}));
    assert_eq!(unloaded["response_type"], "ModelUnloaded", "{unloaded}");
    let mut progress = Vec::new();
    let loaded = loop {
        let event = watcher.recv(Duration::from_secs(10));
        assert_eq!(
            (&event["id"], &event["model"]),
            (&json!("w"), &json!("tiny")),
            "{event}"
        );
        match event["event"].as_str() {
            Some("ModelLoadProgress") => progress.push(event["progress"].as_f64().unwrap()),
            _ => break event,
        }
    };
    assert_eq!(loaded["event"], "ModelLoaded", "{loaded}");
    // llama.cpp reports as it reads the tensors: from 0 to 1, never back.
    assert_eq!(progress.first(), Some(&0.0), "{progress:?}");
    assert_eq!(progress.last(), Some(&1.0), "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
    let unloaded = watcher.recv(Duration::from_secs(10));
    assert_eq!(
        (&unloaded["event"], &unloaded["reason"]),
        (&json!("ModelUnloaded"), &json!("requested")),
        "{unloaded}"
    );
}

/// Headless Chromium (Debian's `chromium`) through tests/browser/run.sh, in a
/// network namespace with loopback only. Skipped, saying why, when the
/// browser, node or namespaces are missing (a failure under CI=true).
#[test]
fn chromium_reaches_tabagent_over_a_data_channel() {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tabagent"));
    let run = match browser::run_page(binary) {
        Ok(run) => run,
        Err(why) => {
            crate::util::skip("chromium_reaches_tabagent_over_a_data_channel", &why);
            return;
        }
    };
    eprintln!("{}", run.stdout);
    assert!(run.passed, "{}\n{}", run.stdout, run.stderr);
}
