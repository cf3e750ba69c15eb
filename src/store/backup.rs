//! Backups and exports: the whole history and the knowledge base read out as
//! one value, a session read out for export, and a backup written back.
//!
//! A restore is one writer task, so one transaction (a savepoint of the
//! writer's batch): every session in the file replaces the stored session of
//! the same id, messages keep their times, and the collections come back
//! with their documents and vectors ([`super::backup_documents`]). Any
//! failure rolls the whole task back; nothing is half written. The file is
//! checked whole before the task is queued ([`BackupFile::check`]).

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::backup_documents::{
    CollectionDump, RestoredCollections, check_collections, dump_collections, restore_collections,
};
use super::history::{ROLES, check_session_id, parse_metadata};
use super::{Store, StoreError};

/// The `format` of a backup file.
pub const FORMAT: &str = "tabagent-backup";
/// The version this tabagent writes. It also reads version 1, whose
/// collections list their documents' titles only (nothing to restore).
pub const VERSION: u32 = 2;

/// A backup file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The generation defaults (GetParams), if saved.
    #[serde(default)]
    pub settings: Option<Value>,
    /// The collections with their documents, chunks and vectors.
    #[serde(default)]
    pub collections: Vec<CollectionDump>,
    /// Every session with its messages.
    #[serde(default)]
    pub sessions: Vec<SessionDump>,
}

/// A session in a backup or an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionDump {
    /// The session id.
    pub session_id: String,
    /// Its title.
    #[serde(default)]
    pub title: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds of its last message.
    pub updated_at: i64,
    /// The chat's settings (SetSessionSettings), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Value>,
    /// Oldest first.
    pub messages: Vec<MessageDump>,
}

/// A message in a backup or an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageDump {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
    /// Its metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl BackupFile {
    /// Reads and checks a backup file whole: its format and version, every
    /// session id and role, no session twice, and every collection with its
    /// documents and vectors.
    pub fn check(bytes: &[u8]) -> Result<BackupFile, StoreError> {
        let not_a_backup =
            |e: serde_json::Error| StoreError::Invalid(format!("not a tabagent backup: {e}"));
        let mut value: Value = serde_json::from_slice(bytes).map_err(not_a_backup)?;
        if value["format"] != FORMAT {
            return Err(StoreError::Invalid(format!(
                "not a tabagent backup (format {})",
                value["format"]
            )));
        }
        match value["version"].as_u64() {
            Some(1) => forget_document_titles(&mut value),
            Some(v) if v == u64::from(VERSION) => {}
            _ => {
                return Err(StoreError::Invalid(format!(
                    "backup version {} is not 1 or {VERSION}, the ones this tabagent reads",
                    value["version"]
                )));
            }
        }
        let file: BackupFile = serde_json::from_value(value).map_err(not_a_backup)?;
        let mut seen = std::collections::HashSet::new();
        for session in &file.sessions {
            check_session_id(&session.session_id)?;
            if !seen.insert(session.session_id.as_str()) {
                return Err(StoreError::Invalid(format!(
                    "session {:?} is in the backup twice",
                    session.session_id
                )));
            }
            if let Some(message) = session
                .messages
                .iter()
                .find(|m| !ROLES.contains(&m.role.as_str()))
            {
                return Err(StoreError::Invalid(format!(
                    "session {:?} has a message with role {:?}",
                    session.session_id, message.role
                )));
            }
        }
        check_collections(&file.collections)?;
        Ok(file)
    }

    /// Messages in all.
    pub fn message_count(&self) -> u64 {
        self.sessions.iter().map(|s| s.messages.len() as u64).sum()
    }
}

impl Store {
    /// Every session with its messages and every collection with its
    /// documents, read in one transaction (a consistent snapshot);
    /// `settings` is the caller's.
    pub fn backup(&self, settings: Option<Value>, now_ms: i64) -> Result<BackupFile, StoreError> {
        self.read(move |c| {
            let tx = c.unchecked_transaction()?;
            let file = BackupFile {
                format: FORMAT.into(),
                version: VERSION,
                created_at: now_ms,
                settings,
                collections: dump_collections(&tx)?,
                sessions: dump_sessions(&tx)?,
            };
            tx.finish()?;
            Ok(file)
        })
    }

    /// One session with its messages, for export.
    pub fn session_dump(&self, session_id: &str) -> Result<SessionDump, StoreError> {
        let key = session_id.to_string();
        self.read(move |c| dump_session(c, &key))
    }

    /// Writes a checked backup in one transaction.
    pub fn restore(&self, file: BackupFile) -> Result<RestoreCounts, StoreError> {
        self.write(move |tx, now| restore(tx, &file, now))
    }
}

/// A version 1 file lists each collection's document titles, for the user to
/// upload again; this version reads documents whole, so the titles go.
fn forget_document_titles(file: &mut Value) {
    if let Some(collections) = file["collections"].as_array_mut() {
        for collection in collections.iter_mut().filter_map(Value::as_object_mut) {
            collection.remove("documents");
        }
    }
}

/// Every session, oldest first, with its messages.
fn dump_sessions(connection: &Connection) -> Result<Vec<SessionDump>, StoreError> {
    let mut sessions: Vec<(i64, SessionDump)> = connection
        .prepare_cached(
            "SELECT id, key, title, created_at, updated_at, settings FROM sessions ORDER BY id",
        )?
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                SessionDump {
                    session_id: row.get(1)?,
                    title: row.get(2)?,
                    created_at: row.get(3)?,
                    updated_at: row.get(4)?,
                    settings: parse_metadata(row.get(5)?),
                    messages: Vec::new(),
                },
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (id, session) in &mut sessions {
        session.messages = messages_of(connection, *id)?;
    }
    Ok(sessions.into_iter().map(|(_, s)| s).collect())
}

/// One session, for export.
fn dump_session(connection: &Connection, key: &str) -> Result<SessionDump, StoreError> {
    check_session_id(key)?;
    let row = connection
        .prepare_cached(
            "SELECT id, title, created_at, updated_at, settings FROM sessions WHERE key = ?1",
        )?
        .query_row([key], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get::<_, Option<String>>(4)?,
            ))
        });
    let (id, title, created_at, updated_at, settings) = match row {
        Ok(row) => row,
        Err(rusqlite::Error::QueryReturnedNoRows) => {
            return Err(StoreError::NotFound(format!("no session {key:?}")));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(SessionDump {
        session_id: key.to_string(),
        title,
        created_at,
        updated_at,
        settings: parse_metadata(settings),
        messages: messages_of(connection, id)?,
    })
}

fn messages_of(connection: &Connection, session: i64) -> Result<Vec<MessageDump>, StoreError> {
    Ok(connection
        .prepare_cached(
            "SELECT role, content, metadata, created_at FROM messages WHERE session_id = ?1 ORDER BY id",
        )?
        .query_map([session], |row| {
            Ok(MessageDump {
                role: row.get(0)?,
                content: row.get(1)?,
                metadata: parse_metadata(row.get(2)?),
                created_at: row.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?)
}

/// What a restore wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreCounts {
    /// Sessions written (each replaced the session of the same id).
    pub sessions: u64,
    /// Messages written.
    pub messages: u64,
    /// Collections created.
    pub collections_created: u64,
    /// Documents written, with their chunks and vectors.
    pub documents: u64,
}

/// Writes a checked backup (one transaction: the caller's writer task).
fn restore(
    connection: &Connection,
    file: &BackupFile,
    now_ms: i64,
) -> Result<RestoreCounts, StoreError> {
    let mut messages = 0u64;
    for session in &file.sessions {
        connection
            .prepare_cached("DELETE FROM sessions WHERE key = ?1")?
            .execute([&session.session_id])?;
        let id: i64 = connection
            .prepare_cached(
                "INSERT INTO sessions (key, title, created_at, updated_at, message_count, settings)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
            )?
            .query_row(
                params![
                    session.session_id,
                    session.title,
                    session.created_at,
                    session.updated_at,
                    session.messages.len() as i64,
                    session
                        .settings
                        .as_ref()
                        .filter(|s| s.is_object())
                        .map(Value::to_string)
                ],
                |row| row.get(0),
            )?;
        let mut insert = connection.prepare_cached(
            "INSERT INTO messages (session_id, role, content, metadata, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for message in &session.messages {
            let metadata = message
                .metadata
                .as_ref()
                .filter(|m| !m.is_null())
                .map(Value::to_string);
            insert.execute(params![
                id,
                message.role,
                message.content,
                metadata,
                message.created_at
            ])?;
            messages += 1;
        }
    }
    let RestoredCollections { created, documents } =
        restore_collections(connection, &file.collections, now_ms)?;
    Ok(RestoreCounts {
        sessions: file.sessions.len() as u64,
        messages,
        collections_created: created,
        documents,
    })
}
