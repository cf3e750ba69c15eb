//! Backups and exports: the whole history and the collections list read out
//! as one value, a session read out for export, and a backup written back.
//!
//! A restore is one writer task, so one transaction (a savepoint of the
//! writer's batch): every session in the file replaces the stored session of
//! the same id, messages keep their times, and collections missing here are
//! created empty (documents are not in a backup: re-upload them). Any
//! failure rolls the whole task back; nothing is half written. The file is
//! checked whole before the task is queued ([`BackupFile::check`]).

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreError;
use super::documents::{check_name, find_collection};
use super::history::{ROLES, check_session_id, parse_metadata};

/// The `format` of a backup file.
pub const FORMAT: &str = "tabagent-backup";
/// The version this tabagent writes and reads.
pub const VERSION: u32 = 1;

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
    /// The collections (names and models, not their documents).
    #[serde(default)]
    pub collections: Vec<CollectionDump>,
    /// Every session with its messages.
    #[serde(default)]
    pub sessions: Vec<SessionDump>,
}

/// A collection in a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionDump {
    /// Its name.
    pub name: String,
    /// The embedding model of its vectors.
    #[serde(default)]
    pub model: Option<String>,
    /// Its vectors' length.
    #[serde(default)]
    pub dimensions: Option<u32>,
    /// Its documents' titles, for the user to see what to upload again.
    #[serde(default)]
    pub documents: Vec<String>,
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
    /// session id, role and collection name, no session twice.
    pub fn check(bytes: &[u8]) -> Result<BackupFile, StoreError> {
        let file: BackupFile = serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Invalid(format!("not a tabagent backup: {e}")))?;
        if file.format != FORMAT {
            return Err(StoreError::Invalid(format!(
                "not a tabagent backup (format {:?})",
                file.format
            )));
        }
        if file.version != VERSION {
            return Err(StoreError::Invalid(format!(
                "backup version {} is not {VERSION}, the one this tabagent reads",
                file.version
            )));
        }
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
        for collection in &file.collections {
            check_name(&collection.name)?;
        }
        Ok(file)
    }

    /// Messages in all.
    pub fn message_count(&self) -> u64 {
        self.sessions.iter().map(|s| s.messages.len() as u64).sum()
    }
}

/// Every session, oldest first, with its messages.
pub(crate) fn dump_sessions(connection: &Connection) -> Result<Vec<SessionDump>, StoreError> {
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
pub(crate) fn dump_session(connection: &Connection, key: &str) -> Result<SessionDump, StoreError> {
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

/// Every collection with its documents' titles.
pub(crate) fn dump_collections(connection: &Connection) -> Result<Vec<CollectionDump>, StoreError> {
    let mut collections: Vec<(i64, CollectionDump)> = connection
        .prepare_cached("SELECT id, name, model, dimensions FROM collections ORDER BY name")?
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                CollectionDump {
                    name: row.get(1)?,
                    model: row.get(2)?,
                    dimensions: row
                        .get::<_, Option<i64>>(3)?
                        .and_then(|d| u32::try_from(d).ok()),
                    documents: Vec::new(),
                },
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (id, collection) in &mut collections {
        collection.documents = connection
            .prepare_cached(
                "SELECT coalesce(title, url, '') FROM documents WHERE collection_id = ?1 ORDER BY id",
            )?
            .query_map([*id], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
    }
    Ok(collections.into_iter().map(|(_, c)| c).collect())
}

/// Writes a checked backup (one transaction: the caller's writer task).
/// Returns (sessions, messages, collections created).
pub(crate) fn restore(
    connection: &Connection,
    file: &BackupFile,
    now_ms: i64,
) -> Result<(u64, u64, u64), StoreError> {
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
    let mut created = 0u64;
    for collection in &file.collections {
        if find_collection(connection, &collection.name)?.is_some() {
            continue;
        }
        connection
            .prepare_cached(
                "INSERT INTO collections (name, model, dimensions, created_at) VALUES (?1, NULL, NULL, ?2)",
            )?
            .execute(params![collection.name, now_ms])?;
        created += 1;
    }
    Ok((file.sessions.len() as u64, messages, created))
}
