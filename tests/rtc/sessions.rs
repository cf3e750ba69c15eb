//! WebRTC sessions over their life: an idle one closed and removed, a live
//! one kept, and a hundred at once (the hundred-and-first refused).

use std::time::{Duration, Instant};

use serde_json::json;

use super::client::{Client, post};
use super::{TestServer, health};

#[test]
fn idle_sessions_are_closed_and_removed() {
    let server = TestServer::with(|s| s.idle_timeout = Duration::from_millis(800));
    let mut client = Client::connect(server.http);
    assert_eq!(client.call(health(1))["response_type"], "Health");
    let (_never_connected, signal) = Client::signal(server.http);
    let quiet = signal["session_id"].as_str().unwrap().to_string();
    assert_eq!(server.session(&quiet)["state"], "new");
    // A client that keeps talking stays; one that went away does not.
    let started = Instant::now();
    let mut n = 2;
    while started.elapsed() < Duration::from_millis(1600) {
        assert_eq!(client.call(health(n))["response_type"], "Health");
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(server.session(&client.session_id)["state"], "connected");
    assert_eq!(server.session(&quiet)["http_status"], 404);
    let id = client.session_id.clone();
    drop(client);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(server.session(&id)["http_status"], 404);
    assert_eq!(server.get("/v1/webrtc/sessions")["sessions"], json!([]));
}

#[test]
fn a_hundred_sessions_at_once() {
    let server = TestServer::with(|s| s.max_sessions = 100);
    let mut clients: Vec<Client> = (0..100).map(|_| Client::signal(server.http).0).collect();
    let refused = post(
        server.http,
        "/v1/webrtc/offer",
        &json!({"sdp": Client::offer().1}),
    );
    assert_eq!(refused["http_status"], 503, "{refused}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while clients.iter().any(|c| c.channel.is_none()) {
        assert!(Instant::now() < deadline, "not every channel opened");
        for client in &mut clients {
            client.drive(Duration::ZERO);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(&health(i));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while clients.iter().any(|c| c.inbox.is_empty()) {
        assert!(Instant::now() < deadline, "not every session answered");
        for client in &mut clients {
            client.drive(Duration::ZERO);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let reply = client.inbox.pop_front().unwrap();
        assert_eq!(
            (reply["id"].clone(), reply["response_type"].clone()),
            (json!(i), json!("Health"))
        );
    }
    assert_eq!(
        server.get("/v1/webrtc/sessions")["sessions"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
}
