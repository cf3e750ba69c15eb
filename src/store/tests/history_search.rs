//! SearchHistory, TruncateSession and SetSessionSettings on a real database.

use serde_json::json;

use super::schema::V1_FIXTURE;
use super::*;
use crate::api::{SearchHistoryRequest, SessionSettings, TruncateSessionRequest};
use crate::error::ApiError;

fn find(store: &Store, text: &str) -> HistoryResults {
    store
        .search_history(&SearchHistoryRequest {
            query: text.into(),
            limit: None,
        })
        .unwrap()
}

fn sessions_of(results: &HistoryResults) -> Vec<&str> {
    results
        .sessions
        .iter()
        .map(|s| s.session_id.as_str())
        .collect()
}

#[test]
fn messages_already_stored_are_indexed_by_the_migration() {
    let dir = TempDir::new("fts-migrate");
    Connection::open(dir.path().join(DB_FILE))
        .unwrap()
        .execute_batch(V1_FIXTURE)
        .unwrap();
    let store = store(&dir);
    let found = find(&store, "hello");
    assert_eq!(sessions_of(&found), ["old"]);
    let hit = &found.sessions[0];
    assert_eq!(hit.title.as_deref(), Some("Hello from v1"));
    assert_eq!(hit.messages, 2);
    assert_eq!(hit.matches[0].role, "user");
    assert_eq!(hit.matches[0].snippet, "Hello from v1");
}

#[test]
fn a_saved_message_is_found_at_once_by_any_of_its_words_ranked_by_relevance() {
    let dir = TempDir::new("fts-search");
    let store = store(&dir);
    store
        .save_message(message("bread", "user", "How do I bake sourdough bread?"))
        .unwrap();
    store
        .save_message(message(
            "bread",
            "assistant",
            "Feed the starter, then knead.",
        ))
        .unwrap();
    store
        .save_message(message("cake", "user", "A cake recipe please"))
        .unwrap();
    store
        .save_message(message(
            "cake",
            "assistant",
            "Mix flour, sugar and eggs; bake 30 minutes. Not sourdough, of course.",
        ))
        .unwrap();
    assert_eq!(sessions_of(&find(&store, "STARTER")), ["bread"]);
    // All words must match; each word is also a prefix.
    assert_eq!(sessions_of(&find(&store, "bak sugar")), ["cake"]);
    assert!(find(&store, "sourdough volcano").sessions.is_empty());
    // Both sessions mention sourdough; the short message where it matters
    // more ranks first.
    let both = find(&store, "sourdough");
    assert_eq!(sessions_of(&both), ["bread", "cake"]);
    assert_eq!(
        both.sessions[0].matches[0].snippet,
        "How do I bake sourdough bread?"
    );
    // Diacritics and case do not matter; FTS syntax is taken literally.
    store
        .save_message(message("fr", "user", "Crème brûlée au café"))
        .unwrap();
    assert_eq!(sessions_of(&find(&store, "CREME brulee")), ["fr"]);
    assert!(find(&store, "NEAR(creme cafe) OR -x").sessions.is_empty());
    // A long message's snippet is cut around the match.
    let long = format!("{} needle {}", "hay ".repeat(200), "hay ".repeat(200));
    let saved = store.save_message(message("long", "tool", &long)).unwrap();
    let hit = &find(&store, "needle").sessions[0];
    assert_eq!(hit.matches[0].message_id, saved.id);
    assert!(hit.matches[0].snippet.contains("needle"));
    assert!(
        hit.matches[0].snippet.starts_with('…'),
        "{}",
        hit.matches[0].snippet
    );
    assert!(hit.matches[0].snippet.len() < 200);
    // A deleted session leaves the index.
    store.delete_session("bread").unwrap();
    assert!(find(&store, "starter").sessions.is_empty());
}

#[test]
fn the_limit_counts_sessions_and_each_shows_its_best_three_matches() {
    let dir = TempDir::new("fts-limit");
    let store = store(&dir);
    for session in 0..5 {
        for turn in 0..4 {
            store
                .save_message(message(
                    &format!("s{session}"),
                    "user",
                    &format!("apple {turn}"),
                ))
                .unwrap();
        }
    }
    let some = store
        .search_history(&SearchHistoryRequest {
            query: "apple".into(),
            limit: Some(2),
        })
        .unwrap();
    assert_eq!(some.sessions.len(), 2);
    assert!(some.sessions.iter().all(|s| s.matches.len() == 3));
    let wordless = store
        .search_history(&SearchHistoryRequest {
            query: " ?! ¥".into(),
            limit: None,
        })
        .unwrap();
    assert!(wordless.sessions.is_empty(), "{wordless:?}");
    for (query, limit) in [("apple", Some(0)), ("apple", Some(10_000))] {
        let error = store
            .search_history(&SearchHistoryRequest {
                query: query.into(),
                limit,
            })
            .unwrap_err();
        assert_eq!(ApiError::from(error).status, 422, "{query:?} {limit:?}");
    }
}

#[test]
fn truncating_drops_later_messages_from_history_search_and_title() {
    let dir = TempDir::new("truncate");
    let store = store(&dir);
    let first = store
        .save_message(message("s", "user", "first question"))
        .unwrap();
    store
        .save_message(message("s", "assistant", "first answer"))
        .unwrap();
    let second = store
        .save_message(message("s", "user", "second question"))
        .unwrap();
    store
        .save_message(message("s", "assistant", "second answer zebra"))
        .unwrap();
    store
        .save_message(message("other", "user", "keep me"))
        .unwrap();

    let cut = store
        .truncate_session(&TruncateSessionRequest {
            session_id: "s".into(),
            from_id: second.id,
        })
        .unwrap();
    assert_eq!((cut.deleted, cut.messages), (2, 2));
    let page = store
        .chat_history(&history("s", 10, None, "oldest"))
        .unwrap();
    let texts: Vec<_> = page.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["first question", "first answer"]);
    assert!(find(&store, "zebra").sessions.is_empty());
    let listed = store
        .list_sessions(&ListSessionsRequest::default())
        .unwrap();
    assert_eq!(
        listed
            .sessions
            .iter()
            .find(|s| s.session_id == "s")
            .unwrap()
            .messages,
        2
    );

    // A message of another session, or none, is a 404; nothing changes.
    for (session, from_id) in [("s", 999), ("other", first.id), ("nope", first.id)] {
        let error = store
            .truncate_session(&TruncateSessionRequest {
                session_id: session.into(),
                from_id,
            })
            .unwrap_err();
        assert_eq!(ApiError::from(error).status, 404, "{session} {from_id}");
    }

    // Editing the first message: the title follows the new one, and a
    // session left empty is gone until its next message.
    store
        .truncate_session(&TruncateSessionRequest {
            session_id: "s".into(),
            from_id: first.id,
        })
        .unwrap();
    let listed = store
        .list_sessions(&ListSessionsRequest::default())
        .unwrap();
    assert_eq!(sessions_ids(&listed), ["other"]);
    store
        .save_message(message("s", "user", "edited question"))
        .unwrap();
    let listed = store
        .list_sessions(&ListSessionsRequest::default())
        .unwrap();
    assert_eq!(listed.sessions[0].title.as_deref(), Some("edited question"));
}

fn sessions_ids(list: &SessionList) -> Vec<&str> {
    list.sessions
        .iter()
        .map(|s| s.session_id.as_str())
        .collect()
}

#[test]
fn settings_stay_with_the_session_through_history_truncation_and_backup() {
    let dir = TempDir::new("settings");
    let store = store(&dir);
    let settings = json!({"model": "smollm2", "temperature": 0.2});
    // Set before the first message: the session is kept but not listed.
    store
        .set_session_settings(&SessionSettings {
            session_id: "s".into(),
            settings: settings.clone(),
        })
        .unwrap();
    assert!(
        store
            .list_sessions(&ListSessionsRequest::default())
            .unwrap()
            .sessions
            .is_empty()
    );
    let page = store
        .chat_history(&history("s", 10, None, "oldest"))
        .unwrap();
    assert_eq!(page.settings, Some(settings.clone()));
    let first = store.save_message(message("s", "user", "hi")).unwrap();
    let listed = store
        .list_sessions(&ListSessionsRequest::default())
        .unwrap();
    assert_eq!(listed.sessions[0].settings, Some(settings.clone()));
    assert_eq!(listed.sessions[0].title.as_deref(), Some("hi"));
    // Truncated to nothing, a session with settings keeps them.
    store
        .truncate_session(&TruncateSessionRequest {
            session_id: "s".into(),
            from_id: first.id,
        })
        .unwrap();
    let page = store
        .chat_history(&history("s", 10, None, "oldest"))
        .unwrap();
    assert_eq!(page.settings, Some(settings.clone()));
    store.save_message(message("s", "user", "again")).unwrap();
    assert_eq!(
        store.session_dump("s").unwrap().settings,
        Some(settings.clone())
    );
    let file = store.backup(None, 0).unwrap();
    assert_eq!(file.sessions[0].settings, Some(settings.clone()));
    // Restored into another store, they come back.
    let other_dir = TempDir::new("settings-restore");
    let other = Store::open(other_dir.path(), StoreOptions::default()).unwrap();
    other.restore(file).unwrap();
    let page = other
        .chat_history(&history("s", 10, None, "oldest"))
        .unwrap();
    assert_eq!(page.settings, Some(settings));
    let error = store
        .set_session_settings(&SessionSettings {
            session_id: "s".into(),
            settings: json!("not an object"),
        })
        .unwrap_err();
    assert_eq!(ApiError::from(error).status, 422);
}
