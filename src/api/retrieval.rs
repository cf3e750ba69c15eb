//! Embeddings, rerank, the document store and chat history.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One text or many, as OpenAI's `input` takes them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TextInput {
    /// A single text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
}

impl TextInput {
    /// The texts, in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            TextInput::One(text) => vec![text],
            TextInput::Many(texts) => texts,
        }
    }
}

/// Embed texts.
#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingsRequest {
    /// The model id; the selected embedding model when left out.
    pub model: Option<String>,
    /// The texts.
    pub input: TextInput,
    /// `float` (default) or `base64` (little-endian f32), as OpenAI does.
    pub encoding_format: Option<String>,
}

/// Score documents against a query.
#[derive(Debug, Clone, Deserialize)]
pub struct RerankRequest {
    /// The model id; the selected rerank (or embedding) model when left out.
    pub model: Option<String>,
    /// The query.
    pub query: String,
    /// The candidates.
    pub documents: Vec<String>,
    /// Keep only the best N (a u32, as openapi.yaml bounds it).
    pub top_n: Option<u32>,
}

/// Search a collection.
#[derive(Debug, Clone, Deserialize)]
pub struct RagQueryRequest {
    /// The collection.
    pub collection: String,
    /// The question.
    pub query: String,
    /// How many chunks to return (default 5).
    pub top_k: Option<usize>,
    /// Drop hits whose cosine similarity to the query is below this (-1 to 1).
    pub min_score: Option<f32>,
    /// Rerank the candidates with the rerank model.
    #[serde(default)]
    pub rerank: bool,
}

/// Add (or replace, by URL) a document.
#[derive(Debug, Clone, Deserialize)]
pub struct AddDocumentRequest {
    /// The collection (created on first use).
    pub collection: String,
    /// The document's text.
    pub text: String,
    /// Where it came from; re-adding the same URL replaces it.
    pub url: Option<String>,
    /// Its title.
    pub title: Option<String>,
    /// Anything else the client wants back with its hits.
    pub metadata: Option<Value>,
}

/// Names a document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteDocumentRequest {
    /// The collection.
    pub collection: String,
    /// The document id.
    pub document_id: i64,
}

/// Names a collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollectionRef {
    /// The collection.
    pub collection: String,
}

/// Read a session's messages.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatHistoryRequest {
    /// The session.
    pub session_id: String,
    /// Page size (default 50).
    pub limit: Option<u32>,
    /// Only messages with an id below this (newest-first paging) or above it
    /// (oldest-first paging).
    pub before: Option<i64>,
    /// `newest` (default) or `oldest` first.
    pub order: Option<String>,
}

/// Store one message.
#[derive(Debug, Clone, Deserialize)]
pub struct SaveMessageRequest {
    /// The session (created on first use).
    pub session_id: String,
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
    /// Anything else, e.g. the page URL and title.
    pub metadata: Option<Value>,
}

/// List sessions.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListSessionsRequest {
    /// Page size (default 50).
    pub limit: Option<u32>,
    /// Only sessions whose title or messages contain this text.
    pub search: Option<String>,
}

/// Names a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRef {
    /// The session.
    pub session_id: String,
}

/// Embeddings' reply.
#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingList {
    /// The model used.
    pub model: String,
    /// One vector per input, in input order (f32 list, or base64 string).
    pub embeddings: Vec<Value>,
    /// Vector length.
    pub dimensions: usize,
    /// Tokens read.
    pub prompt_tokens: u32,
}

/// One scored document.
#[derive(Debug, Clone, Serialize)]
pub struct RerankHit {
    /// Its position in the request's documents.
    pub index: usize,
    /// Higher is more relevant.
    pub relevance_score: f32,
}

/// Rerank's reply.
#[derive(Debug, Clone, Serialize)]
pub struct RerankResults {
    /// The model used.
    pub model: String,
    /// How the scores were made, e.g. `embedding_similarity`.
    pub method: String,
    /// Best first.
    pub results: Vec<RerankHit>,
}

/// One retrieved chunk with its source.
#[derive(Debug, Clone, Serialize)]
pub struct RagHit {
    /// The chunk's text.
    pub text: String,
    /// Fused score in (0, 1]: reciprocal rank fusion of the vector and
    /// keyword rankings, 1 when first in both; the rerank score with `rerank`.
    pub score: f32,
    /// Cosine similarity of the chunk's vector with the query's.
    pub similarity: f32,
    /// The document it belongs to.
    pub document_id: i64,
    /// Byte offsets of the chunk in the document's text.
    pub start: usize,
    /// End offset (exclusive).
    pub end: usize,
    /// The document's URL.
    pub url: Option<String>,
    /// The document's title.
    pub title: Option<String>,
    /// The document's metadata.
    pub metadata: Option<Value>,
}

/// RagQuery's reply.
#[derive(Debug, Clone, Serialize)]
pub struct RagResults {
    /// The collection searched.
    pub collection: String,
    /// Best first.
    pub hits: Vec<RagHit>,
}

/// AddDocument's reply.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentAdded {
    /// The collection.
    pub collection: String,
    /// The document's id.
    pub document_id: i64,
    /// How many chunks were stored.
    pub chunks: usize,
    /// Whether it replaced a document with the same URL.
    pub replaced: bool,
}

/// A deleted document.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentRef {
    /// The collection.
    pub collection: String,
    /// The document id.
    pub document_id: i64,
}

/// One collection.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionInfo {
    /// Its name.
    pub name: String,
    /// The embedding model its vectors come from.
    pub model: Option<String>,
    /// Documents in it.
    pub documents: u64,
    /// Chunks in it.
    pub chunks: u64,
}

/// ListCollections' reply.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionList {
    /// The collections, by name.
    pub collections: Vec<CollectionInfo>,
}

/// ClearCollection's reply.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionCleared {
    /// The collection.
    pub collection: String,
    /// Documents removed.
    pub documents_removed: u64,
}

/// One stored message.
#[derive(Debug, Clone, Serialize)]
pub struct StoredMessage {
    /// Its id (increasing in save order).
    pub id: i64,
    /// The session.
    pub session_id: String,
    /// The role.
    pub role: String,
    /// The text.
    pub content: String,
    /// Its metadata.
    pub metadata: Option<Value>,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// ChatHistory's reply.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    /// The session.
    pub session_id: String,
    /// One page of messages.
    pub messages: Vec<StoredMessage>,
    /// Pass as `before` to get the next page; none at the end.
    pub next_before: Option<i64>,
    /// The chat's settings (SetSessionSettings), if any were kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<Value>,
}

/// SaveMessage's reply, sent only once the message is durable.
#[derive(Debug, Clone, Serialize)]
pub struct SavedMessage {
    /// The stored message.
    pub message: StoredMessage,
}

/// One session.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// Its id.
    pub session_id: String,
    /// Its title (first user message, shortened).
    pub title: Option<String>,
    /// Messages in it.
    pub messages: u64,
    /// Unix milliseconds of the last message.
    pub updated_at: i64,
    /// The chat's settings (SetSessionSettings), if any were kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<Value>,
}

/// ListSessions' reply.
#[derive(Debug, Clone, Serialize)]
pub struct SessionList {
    /// Most recently updated first.
    pub sessions: Vec<SessionInfo>,
}
