//! The store's unit tests: history and group commit; the schema and its
//! migrations are in [`schema`], documents and search in [`documents`],
//! backups in [`backup`].

use std::sync::Arc;

use rusqlite::Connection;
use serde_json::json;

use super::testing::{BAG_OF_WORDS, TempDir, bag_of_words};
use super::*;
use crate::api::{ChatHistoryRequest, ListSessionsRequest, RagQueryRequest, SaveMessageRequest};
use crate::error::ApiError;

mod backup;
mod documents;
mod history_search;
mod schema;

fn store(dir: &TempDir) -> Store {
    Store::open(dir.path(), StoreOptions::default()).unwrap()
}

fn message(session: &str, role: &str, content: &str) -> SaveMessageRequest {
    SaveMessageRequest {
        session_id: session.into(),
        role: role.into(),
        content: content.into(),
        metadata: None,
    }
}

fn history(session: &str, limit: u32, before: Option<i64>, order: &str) -> ChatHistoryRequest {
    ChatHistoryRequest {
        session_id: session.into(),
        limit: Some(limit),
        before,
        order: Some(order.into()),
    }
}

fn document(collection: &str, text: &str, url: Option<&str>) -> AddDocumentRequest {
    AddDocumentRequest {
        collection: collection.into(),
        text: text.into(),
        url: url.map(String::from),
        title: Some("A title".into()),
        metadata: Some(json!({"lang": "en"})),
    }
}

fn query(collection: &str, text: &str, top_k: usize) -> RagQueryRequest {
    RagQueryRequest {
        collection: collection.into(),
        query: text.into(),
        top_k: Some(top_k),
        min_score: None,
        rerank: false,
    }
}

/// Chunks and stores a document with `model`'s vectors, as the handler
/// does; [`bag_of_words`] stands in for the embedder.
fn add_as(
    store: &Store,
    request: AddDocumentRequest,
    model: &str,
    dims: usize,
) -> Result<DocumentAdded, StoreError> {
    let document = store.chunk_document(request, model, dims)?;
    let vectors = document
        .texts()
        .iter()
        .map(|text| bag_of_words(text, dims))
        .collect();
    store.add_document(document, vectors)
}

fn add(
    store: &Store,
    request: AddDocumentRequest,
    dims: usize,
) -> Result<DocumentAdded, StoreError> {
    add_as(store, request, BAG_OF_WORDS, dims)
}

/// Searches with the query's [`bag_of_words`] vector for `top_k` hits.
fn search(store: &Store, request: &RagQueryRequest, dims: usize) -> Result<RagResults, StoreError> {
    let query = store.check_query(request, BAG_OF_WORDS, dims)?;
    let vector = bag_of_words(query.text(), dims);
    store.search(&query, vector, query.top_k())
}

fn version_of(dir: &TempDir) -> i64 {
    Connection::open(dir.path().join(DB_FILE))
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

// ---- history ------------------------------------------------------------

#[test]
fn history_pages_both_ways() {
    let dir = TempDir::new("pages");
    let store = store(&dir);
    let ids: Vec<i64> = (0..7)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            store
                .save_message(message("s", role, &format!("m{i}")))
                .unwrap()
                .id
        })
        .collect();
    store.save_message(message("other", "user", "x")).unwrap();

    let first = store
        .chat_history(&history("s", 3, None, "newest"))
        .unwrap();
    let contents: Vec<_> = first.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["m6", "m5", "m4"]);
    let second = store
        .chat_history(&history("s", 3, first.next_before, "newest"))
        .unwrap();
    assert_eq!(second.messages[0].content, "m3");
    let third = store
        .chat_history(&history("s", 3, second.next_before, "newest"))
        .unwrap();
    assert_eq!(third.messages.len(), 1);
    assert_eq!(third.next_before, None);

    let oldest = store
        .chat_history(&history("s", 4, None, "oldest"))
        .unwrap();
    assert_eq!(oldest.messages[0].id, ids[0]);
    let rest = store
        .chat_history(&history("s", 4, oldest.next_before, "oldest"))
        .unwrap();
    assert_eq!(
        rest.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        ids[4..]
    );
    assert_eq!(rest.next_before, None);

    let none = store
        .chat_history(&history("nobody", 3, None, "newest"))
        .unwrap();
    assert!(none.messages.is_empty() && none.next_before.is_none());
}

#[test]
fn invalid_history_requests_are_422s() {
    let dir = TempDir::new("invalid");
    let store = store(&dir);
    for (request, words) in [
        (message("", "user", "x"), "session_id"),
        (message("s", "robot", "x"), "role"),
        (message(&"s".repeat(300), "user", "x"), "session_id"),
    ] {
        let error = store.save_message(request).unwrap_err();
        assert!(error.to_string().contains(words), "{error}");
        assert_eq!(ApiError::from(error).status, 422);
    }
    for (limit, order) in [(0, "newest"), (5000, "newest"), (5, "sideways")] {
        let error = store
            .chat_history(&history("s", limit, None, order))
            .unwrap_err();
        assert_eq!(ApiError::from(error).status, 422);
    }
    let error = store.delete_session("missing").unwrap_err();
    assert_eq!(ApiError::from(error).status, 404);
}

#[test]
fn sessions_list_by_recency_with_titles_counts_and_search() {
    let dir = TempDir::new("sessions");
    let store = store(&dir);
    store
        .save_message(message("a", "system", "You are helpful."))
        .unwrap();
    store
        .save_message(message("a", "user", "How do I bake bread?\nDetails follow"))
        .unwrap();
    store
        .save_message(message("b", "user", "100% rye_flour"))
        .unwrap();
    store
        .save_message(message("b", "assistant", "Use a starter"))
        .unwrap();
    store
        .save_message(message("a", "assistant", "Knead the dough."))
        .unwrap();

    let all = store
        .list_sessions(&ListSessionsRequest::default())
        .unwrap();
    let names: Vec<_> = all.sessions.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        all.sessions[0].title.as_deref(),
        Some("How do I bake bread?")
    );
    assert_eq!(all.sessions[0].messages, 3);

    let search = |text: &str| {
        store
            .list_sessions(&ListSessionsRequest {
                limit: None,
                search: Some(text.into()),
            })
            .unwrap()
            .sessions
            .into_iter()
            .map(|s| s.session_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(search("KNEAD"), ["a"]);
    assert_eq!(search("starter"), ["b"]);
    assert_eq!(search("0%"), ["b"], "% is literal");
    assert_eq!(search("ry__flour"), Vec::<String>::new(), "_ is literal");
    assert_eq!(search("rye_"), ["b"]);

    assert_eq!(store.delete_session("a").unwrap(), 3);
    let left = store
        .list_sessions(&ListSessionsRequest::default())
        .unwrap();
    assert_eq!(left.sessions.len(), 1);
    assert!(
        store
            .chat_history(&history("a", 10, None, "newest"))
            .unwrap()
            .messages
            .is_empty()
    );
}

#[test]
fn unicode_and_metadata_round_trip() {
    let dir = TempDir::new("unicode");
    let store = store(&dir);
    let text = "Ünïcödé ✓ 日本語 🙂\u{0}nul and \u{202e}rtl";
    let mut request = message("séance-🙂", "user", text);
    request.metadata = Some(json!({"url": "https://例え.jp/パス", "title": "タイトル"}));
    let saved = store.save_message(request).unwrap();
    let page = store
        .chat_history(&history("séance-🙂", 10, None, "newest"))
        .unwrap();
    assert_eq!(page.messages[0].content, text);
    assert_eq!(page.messages[0].metadata, saved.metadata);
    assert_eq!(page.messages[0].created_at, saved.created_at);
}

#[test]
fn concurrent_writers_are_grouped_and_all_durable() {
    let dir = TempDir::new("group");
    let store = Arc::new(store(&dir));
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                (0..100)
                    .map(|i| {
                        store
                            .save_message(message(&format!("s{t}"), "user", &format!("{t}-{i}")))
                            .unwrap()
                            .id
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 1600);
    drop(store);
    // Reopened from disk: every session has its 100 messages, in order.
    let store = self::store(&dir);
    for t in 0..16 {
        let page = store
            .chat_history(&history(&format!("s{t}"), 1000, None, "oldest"))
            .unwrap();
        let contents: Vec<_> = page.messages.iter().map(|m| m.content.clone()).collect();
        let expected: Vec<_> = (0..100).map(|i| format!("{t}-{i}")).collect();
        assert_eq!(contents, expected);
    }
}

#[test]
fn a_failing_write_fails_alone_in_its_batch() {
    let dir = TempDir::new("savepoint");
    let store = Arc::new(store(&dir));
    let (tx, rx) = std::sync::mpsc::channel();
    // Hold the writer busy so the next tasks land in one batch.
    let (release, wait) = std::sync::mpsc::channel::<()>();
    store.write_then(
        move |_, _| {
            let _ = wait.recv();
            Ok(())
        },
        |_| {},
    );
    for i in 0..5 {
        let tx = tx.clone();
        if i == 2 {
            store.write_then(
                |connection, _| {
                    connection.execute("INSERT INTO messages (id) VALUES (1)", [])?;
                    Ok(0)
                },
                move |result| tx.send((i, result.map(|_| 0))).unwrap(),
            );
        } else {
            store.save_message_then(message("s", "user", &format!("{i}")), move |result| {
                tx.send((i, result.map(|m| m.id))).unwrap()
            });
        }
    }
    release.send(()).unwrap();
    let mut results: Vec<_> = (0..5).map(|_| rx.recv().unwrap()).collect();
    results.sort_by_key(|r| r.0);
    for (i, result) in results {
        assert_eq!(result.is_ok(), i != 2, "{i}: {result:?}");
    }
    let page = store
        .chat_history(&history("s", 10, None, "oldest"))
        .unwrap();
    assert_eq!(page.messages.len(), 4);
}

#[test]
fn a_panicking_write_is_an_error_not_a_dead_writer() {
    let dir = TempDir::new("panic");
    let store = store(&dir);
    let (tx, rx) = std::sync::mpsc::channel();
    store.write_then(
        |_, _| -> Result<(), StoreError> { panic!("bug in a write") },
        move |r| tx.send(r).unwrap(),
    );
    let error = rx.recv().unwrap().unwrap_err();
    assert!(error.to_string().contains("bug in a write"));
    store
        .save_message(message("s", "user", "still works"))
        .unwrap();
}
