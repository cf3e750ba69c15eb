//! Native messaging against the real binary: framing, pipelining, every
//! malformed case, oversize headers and the end of stdin.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{NativeHost, TempDir, frame};

#[test]
fn health_round_trip_echoes_string_and_number_ids() {
    let mut host = NativeHost::start();
    for id in [json!("a-1"), json!(42), json!(1.5)] {
        let reply = host.request(json!({"id": id, "request_type": "Health"}));
        assert_eq!(reply["id"], id);
        assert_eq!(reply["response_type"], "Health");
        assert_eq!(reply["status"], "ok");
        assert_eq!(reply["done"], true);
    }
    assert_eq!(host.close_and_wait(), Some(0));
}

#[test]
fn two_hundred_pipelined_requests_all_come_back() {
    let mut host = NativeHost::start();
    let mut bytes = Vec::new();
    for i in 0..200 {
        let kind = [
            "Health",
            "GetParams",
            "GetStats",
            "ListModels",
            "SystemInfo",
        ][i % 5];
        bytes.extend(frame(
            json!({"id": i, "request_type": kind})
                .to_string()
                .as_bytes(),
        ));
    }
    host.send_raw(&bytes);
    let mut seen = HashSet::new();
    for _ in 0..200 {
        let reply = host.recv();
        assert_eq!(reply["done"], true, "{reply}");
        assert_ne!(reply["response_type"], "Error", "{reply}");
        assert!(
            seen.insert(reply["id"].as_u64().unwrap()),
            "duplicate reply {reply}"
        );
    }
    assert_eq!(seen.len(), 200);
}

#[test]
fn frames_split_across_many_writes_are_reassembled() {
    let mut host = NativeHost::start();
    let bytes = frame(
        json!({"id": "slow", "request_type": "Health"})
            .to_string()
            .as_bytes(),
    );
    for byte in bytes {
        host.send_raw(&[byte]);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(host.recv()["id"], "slow");
}

#[test]
fn malformed_messages_get_error_frames_and_the_host_keeps_serving() {
    let mut host = NativeHost::start();
    let cases: [(&[u8], Value, &str); 6] = [
        (b"{not json", Value::Null, "not valid JSON"),
        (b"\"\xff\xfe\"", Value::Null, "UTF-8"),
        (br#"[1, 2]"#, Value::Null, "JSON object"),
        (
            br#"{"id": 7, "request_type": "Teleport"}"#,
            json!(7),
            "unknown request_type",
        ),
        (
            br#"{"id": "m", "request_type": "SaveMessage", "role": "user"}"#,
            json!("m"),
            "missing field",
        ),
        (
            br#"{"id": "t", "request_type": "SetParams", "temperature": "hot"}"#,
            json!("t"),
            "invalid",
        ),
    ];
    for (body, id, words) in cases {
        host.send_raw(&frame(body));
        let reply = host.recv();
        assert_eq!(reply["response_type"], "Error", "{reply}");
        assert_eq!(reply["id"], id);
        assert_eq!(reply["error"]["status"], 400, "{reply}");
        assert!(
            reply["error"]["detail"].as_str().unwrap().contains(words),
            "{reply}"
        );
        for key in ["type", "title", "status", "detail"] {
            assert!(
                reply["error"].get(key).is_some(),
                "{key} missing in {reply}"
            );
        }
    }
    let reply = host.request(json!({"id": "after", "request_type": "Health"}));
    assert_eq!(reply["status"], "ok");
}

#[test]
fn an_oversize_header_gets_an_error_then_a_non_zero_exit() {
    let mut host = NativeHost::start();
    host.send_raw(&(64u32 * 1024 * 1024 + 1).to_ne_bytes());
    let reply = host.recv();
    assert_eq!(reply["response_type"], "Error");
    assert_eq!(reply["error"]["status"], 413);
    let code = crate::util::wait_exit(&mut host.child, Duration::from_secs(20));
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}");
}

#[test]
fn a_frame_truncated_at_eof_is_a_clean_exit() {
    let mut host = NativeHost::start();
    host.send_raw(&frame(br#"{"id": 1, "request_type": "Health"}"#)[..10]);
    assert_eq!(host.close_and_wait(), Some(0));
}

#[test]
fn sigterm_is_a_clean_exit() {
    let mut host = NativeHost::start();
    assert_eq!(
        host.request(json!({"id": 1, "request_type": "Health"}))["status"],
        "ok"
    );
    let status = std::process::Command::new("kill")
        .args(["-TERM", &host.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        crate::util::wait_exit(&mut host.child, Duration::from_secs(20)),
        Some(0)
    );
}

#[test]
fn params_are_validated_and_survive_a_restart() {
    let data = TempDir::new("params");
    let path = data.path().to_path_buf();
    let mut host = NativeHost::start_with(data, |_| {});
    let bad = host.request(json!({"id": 1, "request_type": "SetParams", "top_p": 3.0}));
    assert_eq!(bad["error"]["status"], 422, "{bad}");
    let set =
        host.request(json!({"id": 2, "request_type": "SetParams", "temperature": 0.25, "seed": 7}));
    assert_eq!(
        (set["temperature"].as_f64(), set["seed"].as_u64()),
        (Some(0.25), Some(7)),
        "{set}"
    );
    assert_eq!(host.close_and_wait(), Some(0));
    let data = std::mem::replace(&mut host.data, TempDir::new("unused"));
    drop(host);
    let mut again = NativeHost::start_with(data, |_| {});
    let params = again.request(json!({"id": 3, "request_type": "GetParams"}));
    assert_eq!(params["temperature"].as_f64(), Some(0.25), "{params}");
    assert_eq!(params["top_p"].as_f64(), Some(0.95));
    assert!(path.join("params.json").is_file());
}

#[test]
fn stats_count_native_requests_and_errors() {
    let mut host = NativeHost::start();
    host.send_raw(&frame(b"nope"));
    host.recv();
    host.request(json!({"id": 1, "request_type": "Health"}));
    let stats = host.request(json!({"id": 2, "request_type": "GetStats"}));
    assert_eq!(stats["requests"]["native"], 3, "{stats}");
    assert!(stats["errors"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["latency"]["max_us"].as_u64().unwrap() > 0, "{stats}");
}

#[test]
fn system_info_and_resources_are_real() {
    let mut host = NativeHost::start();
    let info = host.request(json!({"id": 1, "request_type": "SystemInfo"}));
    assert!(info["cores"].as_u64().unwrap() >= 1, "{info}");
    assert!(
        info["total_memory_bytes"].as_u64().unwrap() > 1 << 28,
        "{info}"
    );
    assert!(!info["cpu_model"].as_str().unwrap().is_empty());
    let resources = host.request(json!({"id": 2, "request_type": "GetResources"}));
    let rss = resources["process_rss_bytes"].as_u64().unwrap();
    assert!(rss > 1 << 20 && rss < 1 << 30, "{resources}");
}
