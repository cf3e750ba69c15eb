//! Requests and replies that search and edit chat history: SearchHistory
//! (full-text search over message text), TruncateSession (drop a session's
//! messages from one on: regenerate and edit-and-resend) and
//! SetSessionSettings (a chat's model and parameters, kept with it).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Full-text search over every stored message.
#[derive(Debug, Clone, Deserialize)]
pub struct SearchHistoryRequest {
    /// Words to find (all of them, each also as a prefix: `bak` finds `baking`).
    pub query: String,
    /// Sessions returned, at most (default 20).
    pub limit: Option<u32>,
}

/// SearchHistory's reply.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryResults {
    /// The query as sent.
    pub query: String,
    /// Sessions with a matching message, the best match first.
    pub sessions: Vec<HistoryHit>,
}

/// A session with its matching messages.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryHit {
    /// The session.
    pub session_id: String,
    /// Its title.
    pub title: Option<String>,
    /// Messages in it.
    pub messages: u64,
    /// Unix milliseconds of its last message.
    pub updated_at: i64,
    /// Its best matching messages (at most three), best first.
    pub matches: Vec<HistoryMatch>,
}

/// One matching message.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryMatch {
    /// The message id.
    pub message_id: i64,
    /// Its role.
    pub role: String,
    /// The words around the match (`…` where text was cut).
    pub snippet: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Delete a session's messages from one on.
#[derive(Debug, Clone, Deserialize)]
pub struct TruncateSessionRequest {
    /// The session.
    pub session_id: String,
    /// The first message to delete; every later one goes too.
    pub from_id: i64,
}

/// TruncateSession's reply.
#[derive(Debug, Clone, Serialize)]
pub struct SessionTruncated {
    /// The session.
    pub session_id: String,
    /// Messages deleted.
    pub deleted: u64,
    /// Messages left.
    pub messages: u64,
}

/// Keep a chat's settings with its session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionSettings {
    /// The session (created if it has no messages yet).
    pub session_id: String,
    /// A JSON object, e.g. `{"model": "...", "temperature": 0.7}`; at most
    /// 16 KiB; replaces what was kept.
    pub settings: Value,
}
