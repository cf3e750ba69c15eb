//! Signaling other than the client's offer: tabagent offers and the client
//! answers, over `/v1/rpc`; and native messaging carries the signaling for
//! the real binary in `--mode all`.

use std::process::Command;

use super::*;
use crate::util::NativeHost;

#[test]
fn tabagent_can_offer_and_rpc_carries_signaling() {
    let server = TestServer::start();
    let offer = post(
        server.http,
        "/v1/rpc",
        &json!({"id": 1, "request_type": "CreateWebRtcOffer"}),
    );
    assert_eq!(
        (offer["response_type"].clone(), offer["type"].clone()),
        (json!("WebRtcSignal"), json!("offer")),
        "{offer}"
    );
    let session_id = offer["session_id"].as_str().unwrap().to_string();

    // The client answers tabagent's offer (as a browser's setRemoteDescription would).
    client::init_crypto();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = socket.local_addr().unwrap();
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(str0m::Candidate::host(local, "udp").unwrap());
    let sdp = str0m::change::SdpOffer::from_sdp_string(offer["sdp"].as_str().unwrap()).unwrap();
    let answer = rtc.sdp_api().accept_offer(sdp).unwrap();
    let reply = post(
        server.http,
        "/v1/webrtc/answer",
        &json!({"session_id": session_id, "sdp": answer.to_sdp_string()}),
    );
    assert_eq!(reply["response_type"], "WebRtcSession", "{reply}");
    let again = post(
        server.http,
        "/v1/webrtc/answer",
        &json!({"session_id": session_id, "sdp": answer.to_sdp_string()}),
    );
    assert_eq!(again["http_status"], 409, "{again}");
    let mut client = Client::adopt(rtc, socket, &session_id);
    client.wait_open(Duration::from_secs(10));
    assert_eq!(client.call(health("x"))["response_type"], "Health");

    let ice = post(
        server.http,
        "/v1/webrtc/ice",
        &json!({"session_id": session_id, "candidate": ""}),
    );
    assert_eq!(ice["state"], "connected", "{ice}");
    let closed = http_json(
        server.http,
        "DELETE",
        &format!("/v1/webrtc/session/{session_id}"),
        None,
    );
    assert_eq!(closed["session_id"], session_id.as_str());
    assert_eq!(server.session(&session_id)["http_status"], 404);
}

/// The real binary in `--mode all`, serving native messaging on its stdin
/// as Chrome starts it, and a client on a data channel it signaled there
/// (as the extension's offscreen document does through the service worker).
pub fn host_and_channel(
    data: TempDir,
    configure: impl FnOnce(&mut Command),
) -> (NativeHost, Client) {
    let mut command = crate::util::command(data.path());
    command
        .args(["--mode", "all", "--bind", "127.0.0.1:0"])
        .env("TABAGENT_WEBRTC_HOSTS", "127.0.0.1");
    configure(&mut command);
    let mut host = NativeHost::spawn(command, data);
    let (mut client, sdp) = Client::offer();
    let reply = host.request(json!({"id": "o", "request_type": "CreateWebRtcOffer", "sdp": sdp}));
    assert_eq!(reply["response_type"], "WebRtcSignal", "{reply}");
    client.accept(
        reply["session_id"].as_str().unwrap(),
        reply["sdp"].as_str().unwrap(),
    );
    client.wait_open(Duration::from_secs(10));
    (host, client)
}

#[test]
fn native_messaging_signals_for_the_real_binary() {
    let (mut host, mut client) = host_and_channel(TempDir::new("rtc-native"), |_| {});
    let health = client.call(health(5));
    assert!(
        health["features"]
            .as_array()
            .unwrap()
            .contains(&json!("webrtc")),
        "{health}"
    );
    let session = host.request(
        json!({"id": "g", "request_type": "GetWebRtcSession", "session_id": client.session_id}),
    );
    assert_eq!(session["state"], "connected", "{session}");
    // The key is handed over native messaging, never over a data channel.
    let key = host.request(json!({"id": "k", "request_type": "GetApiKey"}));
    assert_eq!(key["api_key"], crate::util::TEST_KEY, "{key}");
    let refused = client.call(json!({"id": "k", "request_type": "GetApiKey"}));
    assert_eq!(refused["error"]["status"], 403, "{refused}");
    assert!(!refused.to_string().contains(crate::util::TEST_KEY));
}
