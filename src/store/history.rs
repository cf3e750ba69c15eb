//! Chat sessions and messages: the SQL behind SaveMessage, ChatHistory,
//! ListSessions and DeleteSession.
//!
//! A session is created by its first message. Its row keeps a message count,
//! the time of its last message and a title (the first user message,
//! shortened), so listing sessions needs no scan of messages unless a search
//! asks for one (sessions updated in the same millisecond are ordered by their
//! newest message id). ListSessions' `search` is a case-insensitive (ASCII)
//! substring match over titles and message text: a scan, which is fine for
//! one person's history; SearchHistory's ranked full-text search is in
//! [`super::history_search`]. A session row with no messages (only its
//! settings) is not listed.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::StoreError;
use crate::api::{
    ChatHistoryRequest, History, SaveMessageRequest, SessionInfo, SessionList, StoredMessage,
};

/// The roles a message may have.
pub const ROLES: &[&str] = &["system", "user", "assistant", "tool"];
/// The longest session id accepted, in characters.
pub const MAX_SESSION_ID: usize = 256;
/// The default page size of ChatHistory and ListSessions.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page size.
pub const MAX_LIMIT: u32 = 1000;
/// Characters of the first user message kept as a session's title.
const TITLE_CHARS: usize = 80;

/// A checked SaveMessage.
pub(crate) struct NewMessage {
    session_id: String,
    role: String,
    content: String,
    metadata: Option<String>,
    title: Option<String>,
}

impl NewMessage {
    pub(crate) fn check(request: SaveMessageRequest) -> Result<NewMessage, StoreError> {
        check_session_id(&request.session_id)?;
        if !ROLES.contains(&request.role.as_str()) {
            return Err(StoreError::Invalid(format!(
                "role {:?} is not one of {}",
                request.role,
                ROLES.join(", ")
            )));
        }
        let title = (request.role == "user").then(|| title_of(&request.content));
        Ok(NewMessage {
            metadata: request
                .metadata
                .filter(|m| !m.is_null())
                .map(|m| m.to_string()),
            session_id: request.session_id,
            role: request.role,
            content: request.content,
            title: title.filter(|t| !t.is_empty()),
        })
    }
}

pub(crate) fn check_session_id(session_id: &str) -> Result<(), StoreError> {
    // Characters, not bytes: JSON Schema's maxLength (openapi.yaml) counts them.
    if session_id.is_empty() || session_id.chars().count() > MAX_SESSION_ID {
        return Err(StoreError::Invalid(format!(
            "session_id must be 1 to {MAX_SESSION_ID} characters long"
        )));
    }
    Ok(())
}

pub(crate) fn check_limit(limit: Option<u32>) -> Result<u32, StoreError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        0 => Err(StoreError::Invalid("limit must be at least 1".into())),
        n if n > MAX_LIMIT => Err(StoreError::Invalid(format!(
            "limit {n} is above the maximum of {MAX_LIMIT}"
        ))),
        n => Ok(n),
    }
}

/// The first line of a user message, cut to [`TITLE_CHARS`] characters.
pub(crate) fn title_of(content: &str) -> String {
    let line = content
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    match line.char_indices().nth(TITLE_CHARS) {
        Some((cut, _)) => format!("{}…", line[..cut].trim_end()),
        None => line.to_string(),
    }
}

/// Inserts one message, creating or updating its session.
pub(crate) fn insert_message(
    connection: &Connection,
    message: &NewMessage,
    now_ms: i64,
) -> Result<StoredMessage, StoreError> {
    let session: i64 = connection
        .prepare_cached(
            "INSERT INTO sessions (key, title, created_at, updated_at, message_count)
             VALUES (?1, ?2, ?3, ?3, 1)
             ON CONFLICT (key) DO UPDATE SET
                 updated_at = excluded.updated_at,
                 message_count = message_count + 1,
                 title = coalesce(title, excluded.title)
             RETURNING id",
        )?
        .query_row(params![message.session_id, message.title, now_ms], |row| {
            row.get(0)
        })?;
    let id: i64 = connection
        .prepare_cached(
            "INSERT INTO messages (session_id, role, content, metadata, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
        )?
        .query_row(
            params![
                session,
                message.role,
                message.content,
                message.metadata,
                now_ms
            ],
            |row| row.get(0),
        )?;
    Ok(StoredMessage {
        id,
        session_id: message.session_id.clone(),
        role: message.role.clone(),
        content: message.content.clone(),
        metadata: parse_metadata(message.metadata.clone()),
        created_at: now_ms,
    })
}

/// A checked ChatHistory.
pub(crate) struct Page {
    session_id: String,
    limit: u32,
    before: Option<i64>,
    oldest_first: bool,
}

impl Page {
    pub(crate) fn check(request: &ChatHistoryRequest) -> Result<Page, StoreError> {
        check_session_id(&request.session_id)?;
        let oldest_first = match request.order.as_deref() {
            None | Some("newest") => false,
            Some("oldest") => true,
            Some(other) => {
                return Err(StoreError::Invalid(format!(
                    "order {other:?} is not newest or oldest"
                )));
            }
        };
        Ok(Page {
            session_id: request.session_id.clone(),
            limit: check_limit(request.limit)?,
            before: request.before,
            oldest_first,
        })
    }
}

/// One page of a session's messages; an unknown session has none.
pub(crate) fn read_page(connection: &Connection, page: &Page) -> Result<History, StoreError> {
    // One more row than asked says whether another page exists.
    let sql = if page.oldest_first {
        "SELECT m.id, m.role, m.content, m.metadata, m.created_at
         FROM messages m JOIN sessions s ON s.id = m.session_id
         WHERE s.key = ?1 AND m.id > ?2 ORDER BY m.id ASC LIMIT ?3"
    } else {
        "SELECT m.id, m.role, m.content, m.metadata, m.created_at
         FROM messages m JOIN sessions s ON s.id = m.session_id
         WHERE s.key = ?1 AND m.id < ?2 ORDER BY m.id DESC LIMIT ?3"
    };
    let cursor = page.before.unwrap_or(if page.oldest_first {
        i64::MIN
    } else {
        i64::MAX
    });
    let mut statement = connection.prepare_cached(sql)?;
    let mut messages = statement
        .query_map(
            params![page.session_id, cursor, i64::from(page.limit) + 1],
            |row| {
                Ok(StoredMessage {
                    id: row.get(0)?,
                    session_id: page.session_id.clone(),
                    role: row.get(1)?,
                    content: row.get(2)?,
                    metadata: parse_metadata(row.get(3)?),
                    created_at: row.get(4)?,
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let more = messages.len() > page.limit as usize;
    messages.truncate(page.limit as usize);
    let settings: Option<String> = connection
        .prepare_cached("SELECT settings FROM sessions WHERE key = ?1")?
        .query_row([&page.session_id], |row| row.get(0))
        .optional()?
        .flatten();
    Ok(History {
        session_id: page.session_id.clone(),
        settings: parse_metadata(settings),
        next_before: if more {
            messages.last().map(|m| m.id)
        } else {
            None
        },
        messages,
    })
}

/// Sessions, most recently updated first, optionally those matching `search`.
pub(crate) fn list_sessions(
    connection: &Connection,
    limit: u32,
    search: Option<&str>,
) -> Result<SessionList, StoreError> {
    let read = |row: &rusqlite::Row<'_>| {
        Ok(SessionInfo {
            session_id: row.get(0)?,
            title: row.get(1)?,
            messages: row.get::<_, i64>(2)?.max(0) as u64,
            updated_at: row.get(3)?,
            settings: parse_metadata(row.get(4)?),
        })
    };
    let sessions = match search.filter(|s| !s.is_empty()) {
        None => connection
            .prepare_cached(
                "SELECT key, title, message_count, updated_at, settings FROM sessions s
                 WHERE message_count > 0
                 ORDER BY updated_at DESC, (SELECT max(m.id) FROM messages m WHERE m.session_id = s.id) DESC
                 LIMIT ?1",
            )?
            .query_map([limit], read)?
            .collect::<Result<Vec<_>, _>>()?,
        Some(text) => {
            let pattern = format!("%{}%", escape_like(text));
            connection
                .prepare_cached(
                    "SELECT key, title, message_count, updated_at, settings FROM sessions s
                     WHERE message_count > 0 AND (s.title LIKE ?1 ESCAPE '\\' OR s.key LIKE ?1 ESCAPE '\\'
                        OR EXISTS (SELECT 1 FROM messages m
                                   WHERE m.session_id = s.id AND m.content LIKE ?1 ESCAPE '\\'))
                     ORDER BY updated_at DESC,
                              (SELECT max(m.id) FROM messages m WHERE m.session_id = s.id) DESC
                     LIMIT ?2",
                )?
                .query_map(params![pattern, limit], read)?
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    Ok(SessionList { sessions })
}

/// Deletes a session and (by cascade) its messages; how many messages went.
pub(crate) fn delete_session(connection: &Connection, key: &str) -> Result<u64, StoreError> {
    check_session_id(key)?;
    let count: Option<i64> = connection
        .prepare_cached("DELETE FROM sessions WHERE key = ?1 RETURNING message_count")?
        .query_row([key], |row| row.get(0))
        .optional()?;
    count
        .map(|c| c.max(0) as u64)
        .ok_or_else(|| StoreError::NotFound(format!("no session {key:?}")))
}

/// `%`, `_` and `\` taken literally in a LIKE pattern with `ESCAPE '\'`.
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Stored metadata back as JSON (text that is not JSON comes back as a string).
pub(crate) fn parse_metadata(text: Option<String>) -> Option<Value> {
    text.map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_the_first_line_cut_on_a_char_boundary() {
        assert_eq!(title_of("\n  hello there \nsecond"), "hello there");
        let long = "é".repeat(100);
        let title = title_of(&long);
        assert_eq!(title.chars().count(), TITLE_CHARS + 1);
        assert!(title.ends_with('…'));
    }

    #[test]
    fn like_patterns_are_literal() {
        assert_eq!(escape_like(r"50%_a\b"), r"50\%\_a\\b");
    }
}
