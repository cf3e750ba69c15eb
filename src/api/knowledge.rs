//! The knowledge base and backups: uploads in parts (an upload id and
//! numbered chunks, base64 in JSON, the same on every transport), their
//! indexing into a collection, document lists, citations in grounded chats,
//! and files the server hands back in parts (a backup, an exported chat).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

/// `UploadStart`: announce a file that will follow in numbered chunks.
#[derive(Debug, Clone, Deserialize)]
pub struct UploadStartRequest {
    /// `document` (the default: indexed into `collection` at UploadFinish)
    /// or `restore` (a backup file for Restore).
    #[serde(default)]
    pub purpose: Option<String>,
    /// The collection a document goes into (created on first use).
    #[serde(default)]
    pub collection: Option<String>,
    /// The file's name; its extension picks the extractor unless
    /// `content_type` says otherwise.
    pub filename: String,
    /// `application/pdf`, `text/markdown`, `text/plain` or `text/html`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// The file's size in bytes.
    pub size: u64,
    /// Bytes per chunk (every chunk but the last has exactly this many).
    #[serde(default)]
    pub chunk_size: Option<u64>,
    /// The file's sha256 (hex), checked when the last chunk is in.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// `UploadChunk`: one numbered part of an upload.
#[derive(Debug, Clone, Deserialize)]
pub struct UploadChunkRequest {
    /// From UploadStarted.
    pub upload_id: String,
    /// 0-based; chunk `index` holds bytes from `index * chunk_size`.
    pub index: u64,
    /// The bytes, base64 (standard alphabet, padded).
    pub data: String,
}

/// Names an upload (UploadFinish, UploadCancel, Restore).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadRef {
    /// From UploadStarted.
    pub upload_id: String,
}

/// `UploadStarted`: where to send the chunks.
#[derive(Debug, Clone, Serialize)]
pub struct UploadStarted {
    /// Names the upload in UploadChunk, UploadFinish and UploadCancel.
    pub upload_id: String,
    /// Bytes per chunk.
    pub chunk_size: u64,
    /// How many chunks make the file.
    pub chunks: u64,
}

/// `UploadChunkStored`: a chunk is on disk.
#[derive(Debug, Clone, Serialize)]
pub struct UploadChunkStored {
    /// The upload.
    pub upload_id: String,
    /// The chunk stored.
    pub index: u64,
    /// Chunks received so far.
    pub received: u64,
    /// Chunks in all.
    pub chunks: u64,
}

/// `IndexingStarted`: the file is complete; it is being indexed in the
/// background, with `IndexProgress` events (Subscribe) until it is done.
#[derive(Debug, Clone, Serialize)]
pub struct IndexingStarted {
    /// The upload.
    pub upload_id: String,
    /// The indexing job (StopGeneration takes it).
    pub job_id: String,
    /// The collection.
    pub collection: String,
    /// The file's name.
    pub filename: String,
}

/// `ListDocuments`: the documents of a collection.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentInfo {
    /// Its id.
    pub document_id: i64,
    /// Its title (an uploaded file's name).
    pub title: Option<String>,
    /// Its URL (`upload:<filename>` for an uploaded file).
    pub url: Option<String>,
    /// Its metadata (an upload's `filename`, `content_type`, `bytes`, `pages`).
    pub metadata: Option<Value>,
    /// Bytes of text.
    pub length: u64,
    /// Chunks stored.
    pub chunks: u64,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// ListDocuments' reply.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentList {
    /// The collection.
    pub collection: String,
    /// Newest first.
    pub documents: Vec<DocumentInfo>,
}

/// One excerpt a grounded chat was given, numbered as the answer cites it.
#[derive(Debug, Clone, Serialize)]
pub struct Citation {
    /// Its number in the prompt: the answer cites it as `[index]`.
    pub index: usize,
    /// Whether the answer cites it.
    pub cited: bool,
    /// The collection it came from.
    pub collection: String,
    /// The document.
    pub document_id: i64,
    /// The document's title.
    pub title: Option<String>,
    /// The document's URL.
    pub url: Option<String>,
    /// The PDF page the passage starts on (1-based), for paged documents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// The page it ends on (a passage may run across a page break).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_end: Option<u32>,
    /// Byte offsets of the passage in the document's text.
    pub start: usize,
    /// End offset (exclusive).
    pub end: usize,
    /// The passage.
    pub text: String,
    /// Its retrieval score.
    pub score: f32,
}

/// `ExportSession`: one chat as a file.
#[derive(Debug, Clone, Deserialize)]
pub struct ExportSessionRequest {
    /// The session.
    pub session_id: String,
    /// `markdown` (the default) or `json`.
    #[serde(default)]
    pub format: Option<String>,
}

/// One part of a file the server sends (Backup, ExportSession), never final.
#[derive(Debug, Clone, Serialize)]
pub struct FilePart {
    /// 0-based, in order.
    pub index: u64,
    /// The bytes, base64 (at most 512 KiB decoded).
    pub data: String,
}

/// The end of a file sent in parts: what the parts make.
#[derive(Debug, Clone, Serialize)]
pub struct FileComplete {
    /// A name to save it under.
    pub filename: String,
    /// Its media type.
    pub content_type: String,
    /// Parts sent.
    pub parts: u64,
    /// Bytes in all.
    pub bytes: u64,
    /// sha256 (hex) of the whole file.
    pub sha256: String,
    /// Sessions in it.
    pub sessions: u64,
    /// Messages in it.
    pub messages: u64,
    /// Collections in it, with their documents (Backup).
    pub collections: u64,
}

/// `Restored`: a backup was applied whole.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// Sessions written (each replaced the session of the same id).
    pub sessions: u64,
    /// Messages written.
    pub messages: u64,
    /// Collections created (the ones that existed keep their documents).
    pub collections_created: u64,
    /// Documents written, with their chunks and vectors (each replaced the
    /// collection's document of the same URL).
    pub documents: u64,
    /// Whether the generation defaults were restored.
    pub settings: bool,
}

/// The states of an `IndexProgress` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexState {
    /// Reading the file's text.
    Extracting,
    /// Embedding: `chunk` of `chunks` done.
    Embedding,
    /// Stored: `document_id` names it.
    Done,
    /// Failed (or stopped): `error` says why; nothing was stored.
    Failed,
}

/// The `IndexProgress` event: an uploaded document on its way into a collection.
#[derive(Debug, Clone, Serialize)]
pub struct IndexProgress {
    /// The upload.
    pub upload_id: String,
    /// The collection.
    pub collection: String,
    /// The file's name.
    pub filename: String,
    /// Where it stands.
    pub state: IndexState,
    /// Chunks embedded so far.
    pub chunk: u64,
    /// Chunks in all (0 until the text is cut).
    pub chunks: u64,
    /// The stored document (state `done`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_id: Option<i64>,
    /// Why it failed (state `failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}
