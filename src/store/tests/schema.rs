//! The store's unit tests of the schema: a new file gets the current one,
//! older files are migrated with their history, and a newer, foreign or
//! unreachable file is a clear error that leaves it untouched.

use rusqlite::Connection;
use serde_json::json;

use super::super::testing::TempDir;
use super::super::*;
use super::{add, document, history, message, store, version_of};
use crate::error::ApiError;

#[test]
fn an_empty_dir_gets_the_current_schema() {
    let dir = TempDir::new("empty");
    let nested = dir.path().join("a/b");
    let store = Store::open(&nested, StoreOptions::default()).unwrap();
    assert!(store.path().starts_with(&nested));
    drop(store);
    let db = Connection::open(nested.join(DB_FILE)).unwrap();
    let version: i64 = db
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = db
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// Version 1 as it shipped, frozen here: a later edit of the migration code
/// must still upgrade files written by the old one.
pub(super) const V1_FIXTURE: &str = "
CREATE TABLE sessions (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, title TEXT,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, message_count INTEGER NOT NULL DEFAULT 0);
CREATE INDEX sessions_by_update ON sessions(updated_at);
CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role TEXT NOT NULL, content TEXT NOT NULL, metadata TEXT, created_at INTEGER NOT NULL);
CREATE INDEX messages_by_session ON messages(session_id, id);
INSERT INTO sessions VALUES (1, 'old', 'Hello from v1', 1000, 2000, 2);
INSERT INTO messages (session_id, role, content, metadata, created_at) VALUES
    (1, 'user', 'Hello from v1', '{\"url\":\"https://example.com\"}', 1000),
    (1, 'assistant', 'Hi!', NULL, 2000);
PRAGMA user_version = 1;
";

#[test]
fn a_version_1_file_is_migrated_and_keeps_its_history() {
    let dir = TempDir::new("v1");
    Connection::open(dir.path().join(DB_FILE))
        .unwrap()
        .execute_batch(V1_FIXTURE)
        .unwrap();
    let store = store(&dir);
    let page = store
        .chat_history(&history("old", 10, None, "oldest"))
        .unwrap();
    assert_eq!(page.messages.len(), 2);
    assert_eq!(
        page.messages[0].metadata,
        Some(json!({"url": "https://example.com"}))
    );
    // The new tables work, and new ids follow the old ones.
    let saved = store.save_message(message("old", "user", "again")).unwrap();
    assert_eq!(saved.id, 3);
    let dims = 16;
    add(&store, document("c", "Some text.", None), dims).unwrap();
    drop(store);
    assert_eq!(version_of(&dir), SCHEMA_VERSION);
}

#[test]
fn a_newer_file_is_refused_and_left_untouched() {
    let dir = TempDir::new("newer");
    let path = dir.path().join(DB_FILE);
    {
        let db = Connection::open(&path).unwrap();
        db.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let error = Store::open(dir.path(), StoreOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(error, StoreError::TooNew { found: 99, .. }),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("99") && text.contains("newer") && text.contains("untouched"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file is unchanged"
    );
    assert!(!dir.path().join(format!("{DB_FILE}-wal")).exists());
    assert_eq!(ApiError::from(error).status, 503);

    // The slot does not retry a newer file.
    let slot = StoreSlot::open(dir.path(), StoreOptions::default());
    assert!(matches!(slot.get(), Err(StoreError::TooNew { .. })));
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let dir = TempDir::new("garbage");
    let path = dir.path().join(DB_FILE);
    std::fs::write(&path, vec![7u8; 8192]).unwrap();
    let error = Store::open(dir.path(), StoreOptions::default())
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("not a tabagent database"),
        "{error}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 8192]);
}

#[test]
fn a_data_dir_that_cannot_exist_is_a_clear_error_and_the_slot_recovers() {
    let dir = TempDir::new("blocked");
    let data = dir.path().join("data");
    std::fs::write(&data, b"a file where the dir should be").unwrap();
    let slot = StoreSlot::open(&data, StoreOptions::default());
    let error = slot.get().err().unwrap();
    assert!(
        error.to_string().contains("cannot create the data dir"),
        "{error}"
    );
    let api = ApiError::from(error);
    assert_eq!(api.status, 503);
    // Fixed while running: the next request finds the store.
    std::fs::remove_file(&data).unwrap();
    let store = slot.get().unwrap();
    store.save_message(message("s", "user", "hi")).unwrap();
}

#[test]
fn a_full_database_fails_writes_clearly_and_keeps_working() {
    let dir = TempDir::new("full");
    let options = StoreOptions {
        max_size_bytes: Some(256 << 10),
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    let big = "x".repeat(16 << 10);
    let mut saved = 0;
    let error = loop {
        match store.save_message(message("s", "user", &big)) {
            Ok(_) => saved += 1,
            Err(error) => break error,
        }
        assert!(saved < 100, "the limit never hit");
    };
    assert!(matches!(error, StoreError::Full(_)), "{error}");
    assert_eq!(ApiError::from(error).status, 507);
    // What was acknowledged is all there; small writes still fail cleanly,
    // and deleting makes room again.
    let page = store
        .chat_history(&history("s", 1000, None, "newest"))
        .unwrap();
    assert_eq!(page.messages.len(), saved);
    assert_eq!(store.delete_session("s").unwrap(), saved as u64);
    store
        .save_message(message("t", "user", "fits again"))
        .unwrap();
    let check: String = Connection::open(store.path())
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
