//! Opening the database: the file, its pragmas and the schema migrations.
//!
//! The schema is versioned with `PRAGMA user_version`. [`MIGRATIONS`] holds
//! one SQL script per version, applied in order inside one IMMEDIATE
//! transaction, so a crash halfway leaves the old version intact. Before the
//! file is opened for writing its header is read (the version is the 4 bytes
//! at offset 60): a file from a newer tabagent is refused before SQLite
//! writes anything to it, and checked again inside the transaction in case
//! the newer version is still in the WAL.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{StoreError, StoreOptions};

/// The database's file name in the data dir.
pub const DB_FILE: &str = "tabagent.db";

/// How long a connection waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One script per schema version; `MIGRATIONS[n]` takes version `n` to `n + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[V1_HISTORY, V2_DOCUMENTS, V3_RESPONSES, V4_HISTORY_SEARCH];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Version 1: chat sessions and their messages.
const V1_HISTORY: &str = "
CREATE TABLE sessions (
    id            INTEGER PRIMARY KEY,
    key           TEXT NOT NULL UNIQUE,         -- the client's session id
    title         TEXT,                         -- the first user message, shortened
    created_at    INTEGER NOT NULL,             -- unix milliseconds
    updated_at    INTEGER NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_by_update ON sessions(updated_at);
-- AUTOINCREMENT: ids keep increasing in save order even after the newest
-- messages are deleted, so a client's `before` cursor never meets a reused id.
CREATE TABLE messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    metadata   TEXT,                            -- JSON
    created_at INTEGER NOT NULL
);
CREATE INDEX messages_by_session ON messages(session_id, id);
";

/// Version 2: collections, documents, chunks with their vectors, and the
/// FTS5 keyword index over chunk text (kept in step by triggers).
const V2_DOCUMENTS: &str = "
-- AUTOINCREMENT: a cached index is keyed by collection id and version, so an
-- id must never come back for a new collection.
CREATE TABLE collections (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    model      TEXT,                            -- the embedding model of its vectors
    dimensions INTEGER,
    version    INTEGER NOT NULL DEFAULT 0,      -- bumped by every change: stale caches reload
    created_at INTEGER NOT NULL
);
CREATE TABLE documents (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    url           TEXT,
    title         TEXT,
    metadata      TEXT,                         -- JSON
    length        INTEGER NOT NULL,             -- bytes of text
    created_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX documents_by_url ON documents(collection_id, url) WHERE url IS NOT NULL;
CREATE INDEX documents_by_collection ON documents(collection_id);
CREATE TABLE chunks (
    id            INTEGER PRIMARY KEY,
    document_id   INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    collection_id INTEGER NOT NULL,
    start         INTEGER NOT NULL,             -- byte offsets in the document's text
    end           INTEGER NOT NULL,
    text          TEXT NOT NULL,
    embedding     BLOB NOT NULL                 -- little-endian f32, L2-normalised
);
CREATE INDEX chunks_by_document ON chunks(document_id);
CREATE INDEX chunks_by_collection ON chunks(collection_id, id);
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    text, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
";

/// Version 3: OpenAI Responses API responses, chained by `previous_id`.
const V3_RESPONSES: &str = "
CREATE TABLE responses (
    id          TEXT PRIMARY KEY,               -- resp_ + 32 hex digits
    previous_id TEXT,                           -- previous_response_id (no foreign key: it may be deleted)
    model       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,               -- unix seconds
    input       TEXT NOT NULL,                  -- JSON: this request's turns (ChatMessage list)
    output      TEXT NOT NULL,                  -- JSON: the assistant's turn (ChatMessage list)
    object      TEXT NOT NULL                   -- JSON: the whole Response object, for GetResponse
) WITHOUT ROWID;
";

/// Version 4: the FTS5 index over message text (SearchHistory), filled from
/// the messages already stored and kept in step by triggers (a cascade from a
/// deleted session fires them too), and each session's settings (the chat's
/// model and parameters, SetSessionSettings).
const V4_HISTORY_SEARCH: &str = "
CREATE VIRTUAL TABLE messages_fts USING fts5(
    content, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
ALTER TABLE sessions ADD COLUMN settings TEXT;  -- JSON object: the chat's model and parameters
";

/// Opens the write connection: creates the dir and file, sets the pragmas
/// and brings the schema up to [`SCHEMA_VERSION`].
pub(crate) fn open_writer(
    data_dir: &Path,
    path: &Path,
    options: &StoreOptions,
) -> Result<Connection, StoreError> {
    let open_error = |reason: String| StoreError::Open {
        path: path.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(data_dir).map_err(|e| {
        open_error(format!(
            "cannot create the data dir {}: {e}",
            data_dir.display()
        ))
    })?;
    if let Some(found) = header_version(path).filter(|&v| v > SCHEMA_VERSION) {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
        });
    }
    let connection = Connection::open(path).map_err(|e| open_error(describe(&e)))?;
    let setup = || -> rusqlite::Result<String> {
        connection.busy_timeout(BUSY_TIMEOUT)?;
        connection.pragma_update(None, "foreign_keys", true)?;
        let mode: String =
            connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        // Keep the WAL from staying large after a burst of writes.
        connection.pragma_update(None, "journal_size_limit", 64 << 20)?;
        if let Some(bytes) = options.max_size_bytes {
            let page_size: i64 = connection.pragma_query_value(None, "page_size", |r| r.get(0))?;
            let pages = (bytes as i64 / page_size).max(1);
            connection.pragma_update(None, "max_page_count", pages)?;
        }
        Ok(mode)
    };
    let mode = setup().map_err(|e| open_error(describe(&e)))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(open_error(format!(
            "cannot switch to WAL mode (the journal mode is {mode})"
        )));
    }
    migrate(&connection, path)?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

/// Opens one more read connection.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let connection = Connection::open_with_flags(path, flags).map_err(|e| StoreError::Open {
        path: path.to_path_buf(),
        reason: describe(&e),
    })?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.pragma_update(None, "foreign_keys", true)?;
    // Reads only: a bug that writes here fails instead of bypassing the writer.
    connection.pragma_update(None, "query_only", true)?;
    connection.set_prepared_statement_cache_capacity(32);
    Ok(connection)
}

/// Applies the missing migrations in one transaction.
fn migrate(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    let tx = rusqlite::Transaction::new_unchecked(connection, TransactionBehavior::Immediate)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        // Dropping the transaction rolls back: nothing was written.
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
        });
    }
    if found < 0 {
        return Err(StoreError::Open {
            path: path.to_path_buf(),
            reason: format!("its schema version {found} is not one tabagent writes"),
        });
    }
    for (from, script) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(script).map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            reason: format!("migration to schema version {} failed: {e}", from + 1),
        })?;
    }
    if found < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        log::info!(
            "database {}: schema version {found} -> {SCHEMA_VERSION}",
            path.display()
        );
    }
    tx.commit()?;
    Ok(())
}

/// The schema version in the file's header, if the file exists and has one.
fn header_version(path: &Path) -> Option<i64> {
    let mut header = [0u8; 64];
    std::fs::File::open(path)
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    if !header.starts_with(b"SQLite format 3\0") {
        return None;
    }
    // Bytes 60..64 are user_version, big-endian (SQLite file format, section 1.3).
    let bytes: [u8; 4] = header[60..64].try_into().ok()?;
    Some(i64::from(i32::from_be_bytes(bytes)))
}

/// An open error in words that say what to do.
fn describe(error: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code() {
        Some(ErrorCode::CannotOpen) => {
            format!("{error} (does the data dir exist, and may this user write to it?)")
        }
        Some(ErrorCode::ReadOnly) => {
            format!("{error} (the data dir or the file is read-only)")
        }
        Some(ErrorCode::NotADatabase) => {
            format!("{error} (the file is not a tabagent database; it was left untouched)")
        }
        Some(ErrorCode::DiskFull) => format!("{error} (the disk is full)"),
        _ => error.to_string(),
    }
}
