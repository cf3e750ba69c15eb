//! SearchHistory's SQL: full-text search over message text with the FTS5
//! index of schema version 4, and the edits of a session that the side
//! panel's conversation controls need (TruncateSession, SetSessionSettings).
//!
//! The query's words are all required, each also as a prefix (`bak` finds
//! "baking"), and each is quoted so no character of the user's text is FTS5
//! syntax; a query with no words (only punctuation or symbols) matches
//! nothing. Messages are ranked by BM25; a session ranks by its best message
//! and shows its best few as snippets (16 tokens around the match). The
//! index is kept by triggers on the messages table, so a message is
//! searchable as soon as its write commits.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::StoreError;
use super::history::{check_session_id, title_of};
use super::search::query_terms;
use crate::api::{HistoryHit, HistoryMatch, HistoryResults, SessionTruncated};

/// Sessions returned when a search does not say.
pub const DEFAULT_SEARCH_LIMIT: u32 = 20;
/// The most sessions one search may ask for.
pub const MAX_SEARCH_LIMIT: u32 = 200;
/// Matching messages shown per session.
const MATCHES_PER_SESSION: usize = 3;
/// Matching messages read, at most, to fill the sessions asked for.
const MAX_ROWS: i64 = 2000;
/// Query words used, at most.
const MAX_TERMS: usize = 16;
/// The largest settings object, in bytes of JSON.
pub const MAX_SETTINGS_BYTES: usize = 16 * 1024;

/// A checked SearchHistory.
pub(crate) struct HistoryQuery {
    text: String,
    /// The FTS5 match expression; `None` when the text has no words.
    fts: Option<String>,
    limit: u32,
}

impl HistoryQuery {
    /// Checks the request's values; no I/O.
    pub(crate) fn check(text: &str, limit: Option<u32>) -> Result<HistoryQuery, StoreError> {
        let limit = match limit.unwrap_or(DEFAULT_SEARCH_LIMIT) {
            0 => return Err(StoreError::Invalid("limit must be at least 1".into())),
            n if n > MAX_SEARCH_LIMIT => {
                return Err(StoreError::Invalid(format!(
                    "limit {n} is above the maximum of {MAX_SEARCH_LIMIT}"
                )));
            }
            n => n,
        };
        let terms = query_terms(text, MAX_TERMS);
        let fts = (!terms.is_empty()).then(|| {
            terms
                .iter()
                .map(|t| format!("\"{t}\"*"))
                .collect::<Vec<_>>()
                .join(" ")
        });
        Ok(HistoryQuery {
            text: text.to_string(),
            fts,
            limit,
        })
    }
}

/// Sessions with messages matching the query, best first.
pub(crate) fn search(
    connection: &Connection,
    query: &HistoryQuery,
) -> Result<HistoryResults, StoreError> {
    let mut sessions: Vec<HistoryHit> = Vec::new();
    let Some(fts) = &query.fts else {
        return Ok(HistoryResults {
            query: query.text.clone(),
            sessions,
        });
    };
    let mut statement = connection.prepare_cached(
        "SELECT s.key, s.title, s.message_count, s.updated_at,
                m.id, m.role, m.created_at,
                snippet(messages_fts, 0, '', '', '…', 16)
         FROM messages_fts
         JOIN messages m ON m.id = messages_fts.rowid
         JOIN sessions s ON s.id = m.session_id
         WHERE messages_fts MATCH ?1
         ORDER BY messages_fts.rank, m.id DESC
         LIMIT ?2",
    )?;
    let mut rows = statement.query(params![fts, MAX_ROWS])?;
    while let Some(row) = rows.next()? {
        let key: String = row.get(0)?;
        let found = HistoryMatch {
            message_id: row.get(4)?,
            role: row.get(5)?,
            created_at: row.get(6)?,
            snippet: row.get(7)?,
        };
        match sessions.iter().position(|s| s.session_id == key) {
            Some(at) if sessions[at].matches.len() < MATCHES_PER_SESSION => {
                sessions[at].matches.push(found);
            }
            Some(_) => {}
            None if sessions.len() < query.limit as usize => sessions.push(HistoryHit {
                session_id: key,
                title: row.get(1)?,
                messages: row.get::<_, i64>(2)?.max(0) as u64,
                updated_at: row.get(3)?,
                matches: vec![found],
            }),
            None => {}
        }
    }
    Ok(HistoryResults {
        query: query.text.clone(),
        sessions,
    })
}

/// Deletes the session's messages from `from_id` on and recomputes its
/// count and title; a session left with no messages and no settings is
/// deleted (sessions exist while they have messages).
pub(crate) fn truncate(
    connection: &Connection,
    key: &str,
    from_id: i64,
) -> Result<SessionTruncated, StoreError> {
    check_session_id(key)?;
    let session: Option<(i64, Option<String>)> = connection
        .prepare_cached("SELECT id, settings FROM sessions WHERE key = ?1")?
        .query_row([key], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((session, settings)) = session else {
        return Err(StoreError::NotFound(format!("no session {key:?}")));
    };
    let exists: bool = connection
        .prepare_cached("SELECT 1 FROM messages WHERE id = ?1 AND session_id = ?2")?
        .query_row(params![from_id, session], |_| Ok(true))
        .optional()?
        .unwrap_or(false);
    if !exists {
        return Err(StoreError::NotFound(format!(
            "session {key:?} has no message {from_id}"
        )));
    }
    let deleted = connection
        .prepare_cached("DELETE FROM messages WHERE session_id = ?1 AND id >= ?2")?
        .execute(params![session, from_id])? as u64;
    let left: i64 = connection
        .prepare_cached("SELECT count(*) FROM messages WHERE session_id = ?1")?
        .query_row([session], |row| row.get(0))?;
    if left == 0 && settings.is_none() {
        connection
            .prepare_cached("DELETE FROM sessions WHERE id = ?1")?
            .execute([session])?;
    } else {
        // The title is the first user message's: it may be the one deleted.
        let first_user: Option<String> = connection
            .prepare_cached(
                "SELECT content FROM messages WHERE session_id = ?1 AND role = 'user'
                 ORDER BY id LIMIT 1",
            )?
            .query_row([session], |row| row.get(0))
            .optional()?;
        let title = first_user.map(|c| title_of(&c)).filter(|t| !t.is_empty());
        connection
            .prepare_cached("UPDATE sessions SET message_count = ?2, title = ?3 WHERE id = ?1")?
            .execute(params![session, left, title])?;
    }
    Ok(SessionTruncated {
        session_id: key.to_string(),
        deleted,
        messages: left.max(0) as u64,
    })
}

/// Checks a settings object: an object, at most [`MAX_SETTINGS_BYTES`] of JSON.
pub(crate) fn check_settings(settings: &Value) -> Result<String, StoreError> {
    if !settings.is_object() {
        return Err(StoreError::Invalid(format!(
            "settings must be a JSON object, not {}",
            crate::api::json_kind(settings)
        )));
    }
    let text = settings.to_string();
    if text.len() > MAX_SETTINGS_BYTES {
        return Err(StoreError::Invalid(format!(
            "settings take {} bytes, above the maximum of {MAX_SETTINGS_BYTES}",
            text.len()
        )));
    }
    Ok(text)
}

/// Keeps `settings` (checked JSON text) with the session, creating it.
pub(crate) fn set_settings(
    connection: &Connection,
    key: &str,
    settings: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    check_session_id(key)?;
    connection
        .prepare_cached(
            "INSERT INTO sessions (key, title, created_at, updated_at, message_count, settings)
             VALUES (?1, NULL, ?2, ?2, 0, ?3)
             ON CONFLICT (key) DO UPDATE SET settings = excluded.settings",
        )?
        .execute(params![key, now_ms, settings])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_is_a_quoted_prefix() {
        let query = HistoryQuery::check("Bake* \"NEAR(x)\" bake", None).unwrap();
        assert_eq!(query.fts.unwrap(), "\"bake\"* \"near\"* \"x\"*");
        assert_eq!(query.limit, DEFAULT_SEARCH_LIMIT);
        assert_eq!(HistoryQuery::check(" ?! ", None).unwrap().fts, None);
        assert!(HistoryQuery::check("a", Some(0)).is_err());
        assert!(HistoryQuery::check("a", Some(MAX_SEARCH_LIMIT + 1)).is_err());
    }

    #[test]
    fn settings_are_small_objects() {
        assert!(check_settings(&serde_json::json!({"model": "m"})).is_ok());
        assert!(check_settings(&serde_json::json!([1])).is_err());
        let big = serde_json::json!({"x": "y".repeat(MAX_SETTINGS_BYTES)});
        assert!(check_settings(&big).is_err());
    }
}
