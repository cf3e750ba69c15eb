//! The SQLite store: chat sessions and the retrieval document store, in one
//! file, `<data_dir>/tabagent.db`.
//!
//! # Threads
//! One writer thread owns the only write connection ([`group_commit`]); every
//! change (a saved message, a deleted session, an added document) is a task
//! sent to it. Reads run on the caller's thread (a pool job, never the event
//! loop) with a connection from a small pool of read-only connections; WAL
//! lets them read while the writer writes. The vectors of each collection are
//! kept in memory ([`vectors`]), loaded on the first query and kept current
//! by the writer after each commit.
//!
//! # What the store does not do
//! It runs no model: documents arrive as text and leave as chunks to embed,
//! then come back with one vector per chunk; a query comes with its vector
//! and leaves as ranked candidates. Embedding and reranking are the
//! handler's (`handler/retrieval.rs`), so nothing here depends on `engine`.
//!
//! # Durability
//! The database runs in WAL mode with `synchronous=FULL`: a COMMIT returns
//! only after the WAL has been fsynced, so a committed transaction survives a
//! process kill and a power cut. (`NORMAL` would survive a kill but could lose
//! the last commits on power loss; that is not "acknowledged means durable".)
//! A client is told a write succeeded only from the callback the writer runs
//! *after* that COMMIT returned. The cost of one fsync per write is paid once
//! per batch instead: the writer takes every task that queued while the
//! previous commit was running, applies them all in one transaction (each in
//! its own savepoint, so one failing task fails alone) and commits once —
//! group commit. Nothing waits on purpose to grow a batch: a lone write
//! commits at once, and batches grow by themselves under load.
//!
//! # Schema
//! Versioned with `PRAGMA user_version`; [`db`] runs the missing migrations
//! in one transaction at open. A file written by a newer tabagent is refused
//! with a clear error and never written to. When the store cannot be opened
//! (read-only or missing data dir, a newer or corrupt file) the host still
//! runs; the store's requests answer 503 with the reason, and [`StoreSlot`]
//! tries again on the next request, so freeing the disk needs no restart.

mod backup;
mod backup_documents;
mod chunking;
mod db;
mod documents;
mod error;
mod group_commit;
mod history;
mod history_search;
mod responses;
mod search;
mod vectors;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::Connection;

use crate::api::{
    AddDocumentRequest, ChatHistoryRequest, CollectionCleared, CollectionList, DocumentAdded,
    DocumentList, DocumentRef, History, HistoryResults, ListSessionsRequest, RagQueryRequest,
    RagResults, SaveMessageRequest, SearchHistoryRequest, SessionList, SessionSettings,
    SessionTruncated, StoredMessage, TruncateSessionRequest,
};
use crate::jobs::lock;

pub use backup::{BackupFile, MessageDump, RestoreCounts, SessionDump};
pub use backup_documents::{ChunkDump, CollectionDump, DocumentDump};
pub use chunking::{ChunkConfig, chunk_text};
pub use db::{DB_FILE, SCHEMA_VERSION};
pub use documents::ChunkedDocument;
pub use error::StoreError;
use group_commit::{Task, Writer};
pub use history_search::{DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT, MAX_SETTINGS_BYTES};
pub use responses::Conversation;
pub use search::SearchQuery;
pub use vectors::VectorIndex;

/// Checks a collection name (1 to 256 characters).
pub fn check_collection_name(name: &str) -> Result<(), StoreError> {
    documents::check_name(name)
}

/// How to open a store.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Refuse writes that would grow the database beyond this many bytes
    /// (`PRAGMA max_page_count`); they fail as [`StoreError::Full`].
    pub max_size_bytes: Option<u64>,
    /// How documents are cut into chunks.
    pub chunking: ChunkConfig,
}

/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;

/// The open database: the writer thread, the read connections and the
/// in-memory vectors.
pub struct Store {
    path: PathBuf,
    options: StoreOptions,
    writer: Writer,
    readers: Mutex<Vec<Connection>>,
    vectors: Arc<vectors::VectorCache>,
}

impl Store {
    /// Opens (creating and migrating as needed) the database in `data_dir`.
    pub fn open(data_dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let path = data_dir.join(DB_FILE);
        let connection = db::open_writer(data_dir, &path, &options)?;
        Ok(Store {
            writer: Writer::start(connection)?,
            readers: Mutex::default(),
            vectors: Arc::default(),
            path,
            options,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `read` with a read-only connection from the pool.
    fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = lock(&self.readers).pop();
        let connection = match pooled {
            Some(connection) => connection,
            None => db::open_reader(&self.path)?,
        };
        let result = read(&connection);
        let mut idle = lock(&self.readers);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(connection);
        }
        result
    }

    /// Runs `apply` in the writer's next batch; `done` gets its result once
    /// the batch's COMMIT returned (or failed). Never blocks on the disk.
    pub(crate) fn write_then<T: Send + 'static>(
        &self,
        apply: impl FnOnce(&Connection, i64) -> Result<T, StoreError> + Send + 'static,
        done: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) {
        self.writer.submit(Task::boxed(apply, done));
    }

    /// Runs `apply` in the writer's next batch and waits for the commit.
    fn write<T: Send + 'static>(
        &self,
        apply: impl FnOnce(&Connection, i64) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.write_then(apply, move |result| {
            let _ = tx.send(result);
        });
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }

    /// Like [`Store::write`], for changes to a collection: the in-memory
    /// vectors follow the change on the writer thread, right after the commit.
    fn write_changing<T: Send + 'static>(
        &self,
        apply: impl FnOnce(&Connection, i64) -> Result<(T, vectors::Change), StoreError>
        + Send
        + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let cache = Arc::clone(&self.vectors);
        self.write_then(apply, move |result| {
            let result = result.map(|(reply, change)| {
                cache.apply(change);
                reply
            });
            let _ = tx.send(result);
        });
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }

    /// Stores one message; `done` runs once it is durable (or failed). The
    /// request is checked first: an invalid one fails before it is queued.
    pub fn save_message_then(
        &self,
        request: SaveMessageRequest,
        done: impl FnOnce(Result<StoredMessage, StoreError>) + Send + 'static,
    ) {
        match history::NewMessage::check(request) {
            Ok(message) => self.write_then(
                move |tx, now| history::insert_message(tx, &message, now),
                done,
            ),
            Err(error) => done(Err(error)),
        }
    }

    /// Stores one message and returns once it is durable.
    pub fn save_message(&self, request: SaveMessageRequest) -> Result<StoredMessage, StoreError> {
        let message = history::NewMessage::check(request)?;
        self.write(move |tx, now| history::insert_message(tx, &message, now))
    }

    /// One page of a session's messages.
    pub fn chat_history(&self, request: &ChatHistoryRequest) -> Result<History, StoreError> {
        let page = history::Page::check(request)?;
        self.read(|connection| history::read_page(connection, &page))
    }

    /// Sessions, most recently updated first.
    pub fn list_sessions(&self, request: &ListSessionsRequest) -> Result<SessionList, StoreError> {
        let limit = history::check_limit(request.limit)?;
        self.read(|connection| history::list_sessions(connection, limit, request.search.as_deref()))
    }

    /// Deletes a session and its messages; returns how many messages went.
    pub fn delete_session(&self, session_id: &str) -> Result<u64, StoreError> {
        let key = session_id.to_string();
        self.write(move |tx, _| history::delete_session(tx, &key))
    }

    /// Sessions whose messages match a full-text query, best first.
    pub fn search_history(
        &self,
        request: &SearchHistoryRequest,
    ) -> Result<HistoryResults, StoreError> {
        let query = history_search::HistoryQuery::check(&request.query, request.limit)?;
        self.read(|connection| history_search::search(connection, &query))
    }

    /// Deletes a session's messages from `from_id` on.
    pub fn truncate_session(
        &self,
        request: &TruncateSessionRequest,
    ) -> Result<SessionTruncated, StoreError> {
        let (key, from_id) = (request.session_id.clone(), request.from_id);
        self.write(move |tx, _| history_search::truncate(tx, &key, from_id))
    }

    /// Keeps a chat's settings with its session (creating the session).
    pub fn set_session_settings(&self, request: &SessionSettings) -> Result<(), StoreError> {
        let text = history_search::check_settings(&request.settings)?;
        let key = request.session_id.clone();
        self.write(move |tx, now| history_search::set_settings(tx, &key, &text, now))
    }

    /// Checks a document and cuts it into chunks whose vectors will come
    /// from `model` (`dimensions` floats each); nothing is written. Fails
    /// fast, before any embedding, on a bad request or a collection bound to
    /// another model.
    pub fn chunk_document(
        &self,
        request: AddDocumentRequest,
        model: &str,
        dimensions: usize,
    ) -> Result<ChunkedDocument, StoreError> {
        documents::check_name(&request.collection)?;
        let existing = self.read(|c| documents::find_collection(c, &request.collection))?;
        documents::check_model(existing.as_ref(), &request.collection, model, dimensions)?;
        documents::chunk(request, &self.options.chunking, model, dimensions)
    }

    /// Stores a chunked document with one vector per chunk, in chunk order,
    /// replacing the collection's document with the same URL. The writer
    /// checks the collection's model again in its transaction.
    pub fn add_document(
        &self,
        document: ChunkedDocument,
        vectors: Vec<Vec<f32>>,
    ) -> Result<DocumentAdded, StoreError> {
        let prepared = documents::with_vectors(document, vectors)?;
        self.write_changing(move |tx, now| documents::insert(tx, prepared, now))
    }

    /// Deletes one document and its chunks.
    pub fn delete_document(
        &self,
        collection: &str,
        document_id: i64,
    ) -> Result<DocumentRef, StoreError> {
        let name = collection.to_string();
        self.write_changing(move |tx, _| documents::delete_document(tx, &name, document_id))
    }

    /// Deletes a collection with all its documents.
    pub fn clear_collection(&self, collection: &str) -> Result<CollectionCleared, StoreError> {
        let name = collection.to_string();
        self.write_changing(move |tx, _| documents::clear_collection(tx, &name))
    }

    /// The embedding model a collection's vectors come from; None for a
    /// collection that does not exist (yet).
    pub fn collection_model(&self, collection: &str) -> Result<Option<String>, StoreError> {
        documents::check_name(collection)?;
        let row = self.read(|c| documents::find_collection(c, collection))?;
        Ok(row.and_then(|r| r.model))
    }

    /// A collection's documents, newest first.
    pub fn list_documents(&self, collection: &str) -> Result<DocumentList, StoreError> {
        let name = collection.to_string();
        self.read(move |c| documents::list_documents(c, &name))
    }

    /// Every collection with its counts.
    pub fn list_collections(&self) -> Result<CollectionList, StoreError> {
        self.read(documents::list_collections)
    }

    /// Checks a RagQuery whose vector will come from `model` (`dimensions`
    /// floats): its values, then that the collection exists (404) and holds
    /// that model's vectors (409) — before any embedding.
    pub fn check_query(
        &self,
        request: &RagQueryRequest,
        model: &str,
        dimensions: usize,
    ) -> Result<SearchQuery, StoreError> {
        let query = SearchQuery::check(request, model, dimensions)?;
        self.read(|connection| search::check_collection(connection, &query))?;
        Ok(query)
    }

    /// Hybrid search with the query's vector: vector similarity and BM25
    /// keywords, fused by rank; at most `limit` candidates, best first.
    pub fn search(
        &self,
        query: &SearchQuery,
        vector: Vec<f32>,
        limit: usize,
    ) -> Result<RagResults, StoreError> {
        self.read(|connection| search::run(connection, &self.vectors, query, vector, limit))
    }
}

/// The store the handler uses, or why it has none. The handler's slot opens
/// it at the first request that needs it ([`StoreSlot::lazy`]): an idle
/// server has not touched SQLite (about 1.2 MiB less resident memory). A
/// failed open is tried again on the next request (the disk may have been
/// freed or the dir made writable), except for a database newer than this
/// binary, which only an upgrade fixes.
pub struct StoreSlot {
    data_dir: PathBuf,
    options: StoreOptions,
    /// None: not opened yet.
    state: Mutex<Option<Result<Arc<Store>, StoreError>>>,
}

impl StoreSlot {
    /// Opens the store in `data_dir` now, logging (not failing on) an error.
    pub fn open(data_dir: &Path, options: StoreOptions) -> StoreSlot {
        let slot = StoreSlot::lazy(data_dir, options);
        let _ = slot.get();
        slot
    }

    /// A slot that opens the store in `data_dir` when it is first needed.
    pub fn lazy(data_dir: &Path, options: StoreOptions) -> StoreSlot {
        StoreSlot {
            data_dir: data_dir.to_path_buf(),
            options,
            state: Mutex::new(None),
        }
    }

    /// The open store, opening it now if it is not open yet or an earlier
    /// attempt failed.
    pub fn get(&self) -> Result<Arc<Store>, StoreError> {
        let mut state = lock(&self.state);
        let first = match &*state {
            Some(Ok(store)) => return Ok(Arc::clone(store)),
            Some(Err(error @ StoreError::TooNew { .. })) => return Err(error.clone()),
            Some(Err(_)) => false,
            None => true,
        };
        let opened = Store::open(&self.data_dir, self.options.clone()).map(Arc::new);
        match (&opened, first) {
            (Ok(store), true) => log::info!("database {}", store.path().display()),
            (Ok(_), false) => log::info!("the database is available again"),
            (Err(error), true) => {
                log::error!("chat history and documents are unavailable: {error}")
            }
            (Err(_), false) => {}
        }
        *state = Some(opened.clone());
        opened
    }

    /// The store if it is open; never opens it (no I/O: callable on the event loop).
    pub fn if_open(&self) -> Option<Arc<Store>> {
        lock(&self.state)
            .as_ref()
            .and_then(|state| state.as_ref().ok())
            .map(Arc::clone)
    }

    /// Writes queued and not yet committed (for a bounded wait at shutdown).
    pub fn pending_writes(&self) -> usize {
        match &*lock(&self.state) {
            Some(Ok(store)) => store.writer.pending(),
            _ => 0,
        }
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
