//! The context policy and `n` on the real binary with the tiny GGUF: an
//! over-long chat loses its oldest turns (and says how many), or is a 400
//! that says by how much with `truncate: false`; generation at the end of
//! the context stops with `length`, or shifts and goes on when
//! `context_shift` is set; `n: 3` returns three choices, streamed or not,
//! on the OpenAI routes.

use serde_json::{Value, json};

use crate::inference::{http_server, tiny_models};
use crate::util::HttpServer;

/// A tiny model served with a 256-token context (and any extra settings).
fn small_context(env: &[(&str, &str)]) -> (crate::util::TempDir, HttpServer) {
    let models = tiny_models(&["tiny"]);
    let server = http_server(&models, env);
    server
        .post(
            "/api/models/tiny/load",
            &json!({"context_size": 256, "parallel": 4}),
        )
        .assert_status(200);
    (models, server)
}

/// A system message and `turns` question/answer pairs, then a question.
fn long_conversation(turns: usize) -> Value {
    let mut messages = vec![json!({"role": "system", "content": "You answer briefly."})];
    for i in 0..turns {
        messages.push(json!({"role": "user", "content": format!("question {i}: what about the weather on the hills today")}));
        messages.push(json!({"role": "assistant", "content": format!("answer {i}: it is sunny and the wind is light")}));
    }
    messages.push(json!({"role": "user", "content": "and the last question?"}));
    Value::Array(messages)
}

#[test]
fn tiny_an_over_long_chat_is_trimmed_or_refused_by_how_much() {
    let (_models, server) = small_context(&[]);
    let body = |truncate: Option<bool>| {
        let mut body = json!({"model": "tiny", "messages": long_conversation(20),
            "max_tokens": 8, "stream": false});
        if let Some(truncate) = truncate {
            body["truncate"] = json!(truncate);
        }
        body
    };
    let trimmed = server.post("/api/chat", &body(None)).ok_json();
    let dropped = trimmed["trimmed_messages"].as_u64().unwrap_or(0);
    assert!(
        dropped >= 2 && dropped % 2 == 0,
        "whole turns dropped: {trimmed}"
    );
    assert!(trimmed["usage"]["prompt_tokens"].as_u64().unwrap() + 8 <= 256);
    let refused = server.post("/api/chat", &body(Some(false)));
    assert_eq!(refused.status, 400);
    let detail = refused.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("tokens more than the model's"), "{detail}");
    // The OpenAI route says how many went, too.
    let openai = server
        .post(
            "/v1/chat/completions",
            &json!({"model": "tiny", "messages": long_conversation(20), "max_tokens": 4}),
        )
        .ok_json();
    assert_eq!(
        openai["trimmed_messages"].as_u64(),
        Some(dropped),
        "{openai}"
    );
    // A conversation that fits is left whole.
    let short = server
        .post(
            "/api/chat",
            &json!({"model": "tiny", "messages": long_conversation(1), "max_tokens": 4,
                "stream": false}),
        )
        .ok_json();
    assert!(short.get("trimmed_messages").is_none(), "{short}");
}

#[test]
fn tiny_generation_at_the_context_end_stops_or_shifts_per_the_setting() {
    let body = json!({"model": "tiny", "prompt": "once upon a time", "max_tokens": 600,
        "ignore_eos": true, "stream": false});
    let (_models, server) = small_context(&[]);
    let stopped = server.post("/api/generate", &body).ok_json();
    let usage = &stopped["usage"];
    assert_eq!(stopped["finish_reason"], "length", "{stopped}");
    let total =
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap();
    assert!(total <= 256, "stopped at the context's end: {usage}");
    let (_models, server) = small_context(&[("TABAGENT_CONTEXT_SHIFT", "true")]);
    let shifted = server.post("/api/generate", &body).ok_json();
    assert_eq!(shifted["usage"]["completion_tokens"], 600, "{shifted}");
    assert_eq!(shifted["finish_reason"], "length");
}

#[test]
fn tiny_n_three_returns_three_choices() {
    let (_models, server) = small_context(&[]);
    let messages = json!([{"role": "user", "content": "hello"}]);
    let reply = server
        .post(
            "/v1/chat/completions",
            &json!({"model": "tiny", "messages": messages, "n": 3, "max_tokens": 12,
                "temperature": 1.0, "seed": 5}),
        )
        .ok_json();
    let choices = reply["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{reply}");
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i);
        assert!(choice["message"]["content"].is_string(), "{choice}");
    }
    let texts: Vec<&str> = choices
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap())
        .collect();
    assert!(
        texts[0] != texts[1] || texts[1] != texts[2],
        "each choice has its own seed: {texts:?}"
    );
    let usage = &reply["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() >= 3, "{usage}");

    // Streamed: chunks of every choice, and a finish reason for each.
    let streamed = server.post(
        "/v1/completions",
        &json!({"model": "tiny", "prompt": "hi", "n": 3, "max_tokens": 6, "stream": true,
            "ignore_eos": true}),
    );
    let events: Vec<Value> = streamed
        .events()
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let mut seen = [0usize; 3];
    let mut finished = [false; 3];
    for event in &events {
        for choice in event["choices"].as_array().unwrap() {
            let index = choice["index"].as_u64().unwrap() as usize;
            if choice["finish_reason"].is_string() {
                finished[index] = true;
            } else {
                seen[index] += 1;
            }
        }
    }
    assert!(seen.iter().all(|n| *n >= 1), "{seen:?}");
    assert_eq!(finished, [true; 3]);

    // More choices than slots is a 400.
    let refused = server.post(
        "/v1/chat/completions",
        &json!({"model": "tiny", "messages": messages, "n": 5, "max_tokens": 4}),
    );
    assert_eq!(
        refused.status,
        400,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
}
