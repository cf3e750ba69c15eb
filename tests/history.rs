//! History search and the conversation controls' edits against the real
//! binary: SearchHistory (FTS5), TruncateSession and SetSessionSettings over
//! HTTP and native messaging; with llama, regenerate and edit-and-resend as
//! the side panel does them (truncate, then Responses again).

use serde_json::{Value, json};

use crate::util::{HttpServer, NativeHost, http};

fn save(server: &HttpServer, session: &str, role: &str, content: &str) -> i64 {
    let reply = server.post(
        &format!("/api/sessions/{session}/messages"),
        &json!({"role": role, "content": content}),
    );
    reply.ok_json()["message"]["id"].as_i64().unwrap()
}

fn session_ids(results: &Value) -> Vec<&str> {
    results["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect()
}

#[test]
fn history_search_truncation_and_settings_over_http() {
    let server = HttpServer::start();
    save(&server, "bread", "user", "How do I bake sourdough bread?");
    save(&server, "bread", "assistant", "Feed the starter every day.");
    let cake = save(&server, "cake", "user", "A chocolate cake, please");
    let later = save(
        &server,
        "cake",
        "assistant",
        "Melt the chocolate with butter.",
    );

    // Found at once, by a word in the body (not the title), as a prefix.
    let found = server.get("/api/history/search?query=STARTER").ok_json();
    assert_eq!(found["response_type"], "HistoryResults");
    assert_eq!(session_ids(&found), ["bread"], "{found}");
    let hit = &found["sessions"][0];
    assert_eq!(hit["title"], "How do I bake sourdough bread?");
    assert_eq!(hit["messages"], 2);
    assert_eq!(hit["matches"][0]["role"], "assistant");
    assert_eq!(hit["matches"][0]["snippet"], "Feed the starter every day.");
    let found = server.get("/api/history/search?query=choc+butt").ok_json();
    assert_eq!(session_ids(&found), ["cake"], "{found}");
    assert_eq!(found["sessions"][0]["matches"][0]["message_id"], later);
    let found = server
        .get("/api/history/search?query=the&limit=1")
        .ok_json();
    assert_eq!(found["sessions"].as_array().unwrap().len(), 1, "{found}");

    // A query with no words (only punctuation or symbols) finds nothing.
    for query in ["%3F%21", "%C2%A5"] {
        let found = server
            .get(&format!("/api/history/search?query={query}"))
            .ok_json();
        assert_eq!(found["sessions"], serde_json::json!([]), "{found}");
    }

    // Typed errors: no query is a 400.
    for (path, status) in [
        ("/api/history/search", 400),
        ("/api/history/search?query=", 400),
        ("/api/history/search?query=%20%20", 400),
        ("/api/history/search?query=a&limit=0", 422),
        ("/api/history/search?query=a&limit=x", 400),
    ] {
        let reply = server.get(path);
        assert_eq!(reply.status, status, "{path}: {:?}", reply.json());
        assert_eq!(
            reply.header("Content-Type"),
            Some("application/problem+json")
        );
    }

    // Edit-and-resend: the answer and everything after go.
    let cut = http(
        server.addr,
        "DELETE",
        &format!("/api/sessions/cake/messages?from_id={later}"),
        &[],
        None,
    );
    let cut = cut.ok_json();
    assert_eq!(cut["response_type"], "SessionTruncated", "{cut}");
    assert_eq!(
        (cut["deleted"].as_u64(), cut["messages"].as_u64()),
        (Some(1), Some(1))
    );
    let found = server.get("/api/history/search?query=butter").ok_json();
    assert!(session_ids(&found).is_empty(), "{found}");
    let page = server.get("/api/sessions/cake/messages").ok_json();
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    assert_eq!(page["messages"][0]["id"], cake);
    let missing = http(
        server.addr,
        "DELETE",
        &format!("/api/sessions/bread/messages?from_id={cake}"),
        &[],
        None,
    );
    assert_eq!(missing.status, 404, "another session's message");

    // The chat's settings, kept with it.
    let settings = json!({"model": "tiny", "temperature": 0.3, "max_tokens": 64});
    let put = http(
        server.addr,
        "PUT",
        "/api/sessions/cake/settings",
        &[("Content-Type", "application/json")],
        Some(json!({"settings": settings}).to_string().as_bytes()),
    );
    assert_eq!(put.ok_json()["response_type"], "SessionSettings");
    let page = server.get("/api/sessions/cake/messages").ok_json();
    assert_eq!(page["settings"], settings);
    let listed = server.get("/api/sessions").ok_json();
    let cake_entry = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session_id"] == "cake")
        .unwrap();
    assert_eq!(cake_entry["settings"], settings);
    let bad = http(
        server.addr,
        "PUT",
        "/api/sessions/cake/settings",
        &[("Content-Type", "application/json")],
        Some(br#"{"settings": [1]}"#),
    );
    assert_eq!(bad.status, 422);
}

#[test]
fn history_search_and_truncation_over_native_messaging() {
    let mut host = NativeHost::start();
    let mut ids = Vec::new();
    for (i, (role, content)) in [
        ("user", "Plan a trip to Kyoto"),
        ("assistant", "Visit Fushimi Inari early."),
        ("user", "And in Osaka?"),
        ("assistant", "Try takoyaki in Dotonbori."),
    ]
    .into_iter()
    .enumerate()
    {
        let saved = host.request(json!({"id": i, "request_type": "SaveMessage",
            "session_id": "trip", "role": role, "content": content}));
        ids.push(saved["message"]["id"].as_i64().unwrap());
    }
    let found =
        host.request(json!({"id": "q", "request_type": "SearchHistory", "query": "takoyaki"}));
    assert_eq!(found["response_type"], "HistoryResults", "{found}");
    assert_eq!(found["done"], true);
    assert_eq!(session_ids(&found), ["trip"]);
    assert_eq!(found["sessions"][0]["matches"][0]["message_id"], ids[3]);

    let cut = host.request(json!({"id": "t", "request_type": "TruncateSession",
        "session_id": "trip", "from_id": ids[2]}));
    assert_eq!(cut["deleted"], 2, "{cut}");
    let found =
        host.request(json!({"id": "q2", "request_type": "SearchHistory", "query": "takoyaki"}));
    assert!(session_ids(&found).is_empty(), "{found}");
    let found =
        host.request(json!({"id": "q3", "request_type": "SearchHistory", "query": "inari"}));
    assert_eq!(session_ids(&found), ["trip"]);

    let empty = host.request(json!({"id": "e", "request_type": "SearchHistory", "query": ""}));
    assert_eq!(empty["response_type"], "Error");
    assert_eq!(empty["error"]["status"], 400, "{empty}");
    let settings = host.request(json!({"id": "s", "request_type": "SetSessionSettings",
        "session_id": "trip", "settings": {"model": "m"}}));
    assert_eq!(settings["response_type"], "SessionSettings", "{settings}");
    let page =
        host.request(json!({"id": "h", "request_type": "ChatHistory", "session_id": "trip"}));
    assert_eq!(page["settings"]["model"], "m");
    assert_eq!(host.close_and_wait(), Some(0));
}

/// Regenerate and edit-and-resend as the side panel does them: truncate
/// from the turn replaced, then send it again; the server's history is what
/// the user sees.
#[cfg(feature = "llama")]
#[test]
fn regenerate_and_edit_and_resend_keep_the_server_history_as_shown() {
    use crate::util::{TempDir, tiny_gguf};

    let data = TempDir::new("history-regenerate");
    let models = data.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(tiny_gguf(), models.join("tiny.gguf")).unwrap();
    let mut host = NativeHost::start_with(data, |_| {});
    let mut turn = |id: &str, input: &str| {
        host.request(
            json!({"id": id, "request_type": "Responses", "session_id": "c",
            "input": input, "model": "tiny", "max_tokens": 4, "stream": false}),
        )
    };
    let first = turn("1", "first question about zanzibar");
    assert_eq!(first["response_type"], "ChatComplete", "{first}");
    turn("2", "second question");
    let history = |host: &mut NativeHost| -> Vec<(String, String, i64)> {
        let page = host.request(json!({"id": "h", "request_type": "ChatHistory",
            "session_id": "c", "order": "oldest"}));
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap().to_string(),
                    m["content"].as_str().unwrap().to_string(),
                    m["id"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let before = history(&mut host);
    assert_eq!(before.len(), 4);

    // Regenerate the last answer: delete from its user turn, send it again.
    let cut = host.request(json!({"id": "t1", "request_type": "TruncateSession",
        "session_id": "c", "from_id": before[2].2}));
    assert_eq!(cut["deleted"], 2, "{cut}");
    let again = host.request(
        json!({"id": "3", "request_type": "Responses", "session_id": "c",
        "input": "second question", "model": "tiny", "max_tokens": 4, "stream": false}),
    );
    let after = history(&mut host);
    assert_eq!(after.len(), 4, "{after:?}");
    assert_eq!(after[..2], before[..2]);
    assert_eq!(after[2].1, "second question");
    assert!(after[2].2 > before[3].2, "new ids: a new turn");
    assert_eq!(after[3].1, again["text"].as_str().unwrap());

    // Edit the first question and resend: one turn left, the edited one.
    host.request(json!({"id": "t2", "request_type": "TruncateSession",
        "session_id": "c", "from_id": after[0].2}));
    host.request(
        json!({"id": "4", "request_type": "Responses", "session_id": "c",
        "input": "edited question", "model": "tiny", "max_tokens": 4, "stream": false}),
    );
    let edited = history(&mut host);
    assert_eq!(edited.len(), 2, "{edited:?}");
    assert_eq!(edited[0].1, "edited question");
    let found =
        host.request(json!({"id": "q", "request_type": "SearchHistory", "query": "edited"}));
    assert_eq!(found["sessions"][0]["title"], "edited question", "{found}");
    let gone =
        host.request(json!({"id": "q2", "request_type": "SearchHistory", "query": "zanzibar"}));
    assert!(session_ids(&gone).is_empty(), "{gone}");
    assert_eq!(host.close_and_wait(), Some(0));
}
