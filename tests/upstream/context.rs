//! Fitting a history to an upstream model's context: the context it
//! reports (llama-server's `/props`, vLLM's `max_model_len`) and its
//! `/tokenize` when it has one, else the documented estimate.

use serde_json::{Value, json};

use super::fake::{Fake, FakeServer};
use super::{gateway, tables, wait_listed};

/// A long history: a system message, `turns` turns of twenty words each
/// way, and a short last question.
fn long_history(turns: usize) -> Vec<Value> {
    let twenty = vec!["word"; 20].join(" ");
    let mut messages = vec![json!({"role": "system", "content": "be brief"})];
    for _ in 0..turns {
        messages.push(json!({"role": "user", "content": twenty}));
        messages.push(json!({"role": "assistant", "content": twenty}));
    }
    messages.push(json!({"role": "user", "content": "last question here"}));
    messages
}

/// A history is trimmed to the context the upstream reports: llama-server's
/// `/props` with its `/tokenize` counting, vLLM's `max_model_len` with the
/// documented estimate (four characters a token, four a message, eight a
/// conversation); `truncate: false` is a 400 with those numbers.
#[test]
fn histories_fit_the_context_the_upstream_reports() {
    let props = FakeServer::start(Fake::Props);
    let listed = FakeServer::start(Fake::MaxLen);
    let gateway = gateway(&tables(&[
        ("props", props.addr, 0, 30),
        ("listed", listed.addr, 0, 30),
    ]));
    wait_listed(&gateway, "props/m");
    wait_listed(&gateway, "listed/m");
    let info = gateway.get("/api/models/props%2Fm").ok_json();
    assert_eq!(
        (&info["context_length"], &info["context_source"]),
        (&json!(256), &json!("props")),
        "{info}"
    );
    let info = gateway.get("/api/models/listed%2Fm").ok_json();
    assert_eq!(
        (&info["context_length"], &info["context_source"]),
        (&json!(300), &json!("models")),
        "{info}"
    );

    let history = long_history(30); // 62 messages
    // By /tokenize: 20 tokens + 4 a message, 6 and 7 for the ends, 8 in all:
    // 1461. 256 - 32 for the reply leaves 224: the system message, 4 turns
    // and the question (213); 52 messages go.
    // By the estimate: 99 characters are 24 tokens (+4), 6 and 8 for the
    // ends: 1702. 300 - 32 leaves 268: 4 turns again (246).
    for (model, fake, prompt, context) in [
        ("props/m", &props, 1461, 256),
        ("listed/m", &listed, 1702, 300),
    ] {
        let reply = gateway
            .post(
                "/v1/chat/completions",
                &json!({"model": model, "messages": history, "max_tokens": 32}),
            )
            .ok_json();
        assert_eq!(reply["trimmed_messages"], 52, "{model}: {reply}");
        assert_eq!(reply["choices"][0]["message"]["content"], "abc");
        let sent = fake.bodies("POST /v1/chat/completions");
        let messages = sent.last().unwrap()["messages"].as_array().unwrap().clone();
        assert_eq!(messages.len(), 10, "{model}: {messages:?}");
        assert_eq!(messages[0], history[0]);
        assert_eq!(messages[1]["role"], "user");
        assert_eq!(messages.last(), history.last());
        assert!(sent.last().unwrap().get("truncate").is_none());

        let refused = gateway.post(
            "/v1/chat/completions",
            &json!({"model": model, "messages": history, "max_tokens": 32, "truncate": false}),
        );
        let problem = refused.assert_status(400).json();
        let expected = format!(
            "the conversation is {prompt} tokens: {} tokens more than the model's \
             {context}-token context holds",
            prompt + 1 - context
        );
        assert!(
            problem["detail"].as_str().unwrap().contains(&expected),
            "{model}: {problem}"
        );
    }
    assert!(
        !props.bodies("POST /tokenize").is_empty(),
        "the props upstream's /tokenize counted"
    );

    // tabagent's own fields (a history trimmed the same way).
    let done = gateway
        .post(
            "/api/chat",
            &json!({"model": "listed/m", "stream": false, "messages": history, "max_tokens": 32}),
        )
        .ok_json();
    assert_eq!(
        (&done["trimmed_messages"], &done["text"]),
        (&json!(52), &json!("abc")),
        "{done}"
    );
}
