//! `n` > 1 relayed: every choice an upstream returns reaches the client.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::fake::{Fake, FakeServer};
use super::{config_dir, gateway, tables, wait_listed};
use crate::util::NativeHost;

/// The text of choice `i` of the fake's answer to `n` > 1.
fn choice_text(i: u64) -> String {
    if i == 0 {
        "abc".into()
    } else {
        format!("a{i}bc")
    }
}

/// `n` > 1 relayed: every choice the upstream returns reaches the client,
/// by index, over HTTP (OpenAI's shape, whole and streamed) and native
/// messaging (tabagent's: chunks with `index`, the reply's `choices`).
#[test]
fn every_choice_of_n_is_relayed() {
    let fake = FakeServer::start(Fake::Streams);
    let config = tables(&[("f", fake.addr, 0, 30)]);
    let gateway = gateway(&config);
    wait_listed(&gateway, "f/m");
    let messages = json!([{"role": "user", "content": "hi"}]);
    let whole = gateway
        .post(
            "/v1/chat/completions",
            &json!({"model": "f/m", "n": 3, "messages": messages}),
        )
        .ok_json();
    let choices = whole["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{whole}");
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i);
        assert_eq!(
            choice["message"]["content"],
            choice_text(i as u64),
            "{whole}"
        );
        assert_eq!(choice["finish_reason"], "stop");
    }
    assert_eq!(fake.bodies("POST /v1/chat/completions")[0]["n"], 3);
    assert_eq!(whole["usage"]["completion_tokens"], 9);

    let streamed = gateway.post(
        "/v1/chat/completions",
        &json!({"model": "f/m", "n": 3, "stream": true, "messages": messages}),
    );
    let mut texts = vec![String::new(); 3];
    let mut finished = [false; 3];
    for event in streamed.assert_status(200).events() {
        if event == "[DONE]" {
            continue;
        }
        let value: Value = serde_json::from_str(&event).unwrap();
        for choice in value["choices"].as_array().unwrap() {
            let i = choice["index"].as_u64().unwrap() as usize;
            if let Some(piece) = choice.pointer("/delta/content").and_then(Value::as_str) {
                texts[i].push_str(piece);
            }
            if choice["finish_reason"].is_string() {
                finished[i] = true;
            }
        }
    }
    let expected: Vec<String> = (0..3).map(choice_text).collect();
    assert_eq!(texts, expected);
    assert_eq!(finished, [true; 3]);

    let data = config_dir(&config);
    let file = data.path().join("gateway.toml");
    let mut host = NativeHost::start_with(data, |c| {
        c.env("TABAGENT_CONFIG", file);
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let replies = loop {
        host.send(
            &json!({"id": 1, "request_type": "Chat", "model": "f/m", "stream": true,
            "n": 3, "messages": messages}),
        );
        let replies = host.recv_until_done(&json!(1));
        // The host's first health check may not have listed the model yet.
        if replies.last().unwrap()["response_type"] == "ChatComplete" {
            break replies;
        }
        assert!(Instant::now() < deadline, "{replies:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut texts = vec![String::new(); 3];
    for reply in replies.iter().filter(|r| r["response_type"] == "ChatChunk") {
        let i = reply["index"].as_u64().unwrap_or(0) as usize;
        texts[i].push_str(reply["delta"].as_str().unwrap());
    }
    assert_eq!(texts, expected);
    let last = replies.last().unwrap();
    assert_eq!(last["text"], "abc", "{last}");
    let rest: Vec<(u64, String)> = last["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["index"].as_u64().unwrap(),
                c["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(rest, [(1, choice_text(1)), (2, choice_text(2))], "{last}");
}
