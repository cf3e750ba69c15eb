//! Collections and documents: preparing a document (chunk, embed) off the
//! writer, and the SQL that stores, replaces and deletes it.
//!
//! A collection is bound to the embedding model (and vector length) of its
//! first document: vectors of two models are not comparable, so adding or
//! querying with another model is a 409 that says which model to use. A
//! document with a URL replaces the collection's document with that URL, in
//! the same transaction: a reader sees the old chunks or the new ones, never
//! both or neither. Every change bumps the collection's `version`, which
//! keeps the in-memory vectors honest (see [`super::vectors`]).

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use super::chunking::{ChunkConfig, chunk_text};
use super::vectors::{Change, VectorIndex, extend_from_blob, normalise, to_blob};
use crate::api::{
    AddDocumentRequest, CollectionCleared, CollectionInfo, CollectionList, DocumentAdded,
    DocumentRef,
};
use crate::engine::Embedder;

/// The largest document accepted, in bytes of text.
pub const MAX_DOCUMENT_BYTES: usize = 32 << 20;
/// The longest collection name, in characters.
pub const MAX_NAME: usize = 256;
/// Chunks embedded per call to the embedder (and between cancel checks).
const EMBED_BATCH: usize = 32;

/// A document cut and embedded, ready for the writer.
pub(crate) struct PreparedDocument {
    collection: String,
    url: Option<String>,
    title: Option<String>,
    metadata: Option<String>,
    length: usize,
    model: String,
    dimensions: usize,
    chunks: Vec<PreparedChunk>,
}

struct PreparedChunk {
    start: usize,
    end: usize,
    text: String,
    vector: Vec<f32>,
}

pub(crate) fn check_name(collection: &str) -> Result<(), StoreError> {
    // Characters, not bytes: JSON Schema's maxLength (openapi.yaml) counts them.
    if collection.is_empty() || collection.chars().count() > MAX_NAME {
        return Err(StoreError::Invalid(format!(
            "collection must be 1 to {MAX_NAME} characters long"
        )));
    }
    Ok(())
}

/// Checks, chunks and embeds a document; nothing is written.
pub(crate) fn prepare(
    request: AddDocumentRequest,
    config: &ChunkConfig,
    embedder: &dyn Embedder,
    cancelled: &dyn Fn() -> bool,
) -> Result<PreparedDocument, StoreError> {
    check_name(&request.collection)?;
    if request.text.len() > MAX_DOCUMENT_BYTES {
        return Err(StoreError::Invalid(format!(
            "the document has {} bytes of text; at most {MAX_DOCUMENT_BYTES} are accepted",
            request.text.len()
        )));
    }
    let ranges = chunk_text(&request.text, config);
    if ranges.is_empty() {
        return Err(StoreError::Invalid("the document's text is empty".into()));
    }
    let dimensions = embedder.dimensions();
    let mut chunks = Vec::with_capacity(ranges.len());
    for batch in ranges.chunks(EMBED_BATCH) {
        if cancelled() {
            return Err(StoreError::Cancelled);
        }
        let texts: Vec<String> = batch
            .iter()
            .map(|r| request.text[r.clone()].to_string())
            .collect();
        let vectors = embedder.embed(&texts).map_err(StoreError::Embedding)?;
        if vectors.len() != texts.len() || vectors.iter().any(|v| v.len() != dimensions) {
            return Err(StoreError::Sqlite(format!(
                "the embedder returned {} vectors for {} texts, or not {dimensions} floats each",
                vectors.len(),
                texts.len()
            )));
        }
        for ((range, text), mut vector) in batch.iter().zip(texts).zip(vectors) {
            normalise(&mut vector);
            chunks.push(PreparedChunk {
                start: range.start,
                end: range.end,
                text,
                vector,
            });
        }
    }
    Ok(PreparedDocument {
        collection: request.collection,
        url: request.url.filter(|u| !u.is_empty()),
        title: request.title,
        metadata: request
            .metadata
            .filter(|m| !m.is_null())
            .map(|m| m.to_string()),
        length: request.text.len(),
        model: embedder.model_id().to_string(),
        dimensions,
        chunks,
    })
}

/// A collection's row.
pub(crate) struct CollectionRow {
    pub id: i64,
    pub model: Option<String>,
    pub dimensions: Option<usize>,
    pub version: i64,
}

pub(crate) fn find_collection(
    connection: &Connection,
    name: &str,
) -> Result<Option<CollectionRow>, StoreError> {
    Ok(connection
        .prepare_cached("SELECT id, model, dimensions, version FROM collections WHERE name = ?1")?
        .query_row([name], |row| {
            Ok(CollectionRow {
                id: row.get(0)?,
                model: row.get(1)?,
                dimensions: row.get::<_, Option<i64>>(2)?.map(|d| d.max(0) as usize),
                version: row.get(3)?,
            })
        })
        .optional()?)
}

/// The 404 of a collection name.
pub(crate) fn no_collection(name: &str) -> StoreError {
    StoreError::NotFound(format!("no collection {name:?}"))
}

/// The 409 when `model` is not the collection's model; Ok for a new collection.
pub(crate) fn check_model(
    row: Option<&CollectionRow>,
    name: &str,
    model: &str,
    dimensions: usize,
) -> Result<(), StoreError> {
    let Some(row) = row else { return Ok(()) };
    match (&row.model, row.dimensions) {
        (Some(theirs), Some(dims)) if theirs != model || dims != dimensions => {
            Err(StoreError::Conflict(format!(
                "collection {name:?} holds {dims}-dimension vectors of model {theirs}; \
                 this request uses {model} ({dimensions}): use {theirs}, or clear the collection first"
            )))
        }
        _ => Ok(()),
    }
}

/// Stores a prepared document (replacing the one with its URL); returns the
/// reply and the change for the in-memory vectors.
pub(crate) fn insert(
    connection: &Connection,
    document: PreparedDocument,
    now_ms: i64,
) -> Result<(DocumentAdded, Change), StoreError> {
    connection
        .prepare_cached(
            "INSERT INTO collections (name, model, dimensions, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO NOTHING",
        )?
        .execute(params![
            document.collection,
            document.model,
            document.dimensions as i64,
            now_ms
        ])?;
    let collection = find_collection(connection, &document.collection)?
        .ok_or_else(|| StoreError::Sqlite("the collection vanished while being written".into()))?;
    check_model(
        Some(&collection),
        &document.collection,
        &document.model,
        document.dimensions,
    )?;
    let replaced: Option<i64> = match &document.url {
        Some(url) => connection
            .prepare_cached(
                "DELETE FROM documents WHERE collection_id = ?1 AND url = ?2 RETURNING id",
            )?
            .query_row(params![collection.id, url], |row| row.get(0))
            .optional()?,
        None => None,
    };
    let document_id: i64 = connection
        .prepare_cached(
            "INSERT INTO documents (collection_id, url, title, metadata, length, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        )?
        .query_row(
            params![
                collection.id,
                document.url,
                document.title,
                document.metadata,
                document.length as i64,
                now_ms
            ],
            |row| row.get(0),
        )?;
    let mut added = Vec::with_capacity(document.chunks.len());
    {
        let mut statement = connection.prepare_cached(
            "INSERT INTO chunks (document_id, collection_id, start, end, text, embedding)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        )?;
        for chunk in document.chunks {
            let chunk_id: i64 = statement.query_row(
                params![
                    document_id,
                    collection.id,
                    chunk.start as i64,
                    chunk.end as i64,
                    chunk.text,
                    to_blob(&chunk.vector)
                ],
                |row| row.get(0),
            )?;
            added.push((chunk_id, document_id, chunk.vector));
        }
    }
    let to_version = bump(connection, collection.id)?;
    let reply = DocumentAdded {
        collection: document.collection,
        document_id,
        chunks: added.len(),
        replaced: replaced.is_some(),
    };
    let change = Change::Edit {
        collection: collection.id,
        from_version: collection.version,
        to_version,
        removed_document: replaced,
        added,
    };
    Ok((reply, change))
}

fn bump(connection: &Connection, collection: i64) -> Result<i64, StoreError> {
    Ok(connection
        .prepare_cached(
            "UPDATE collections SET version = version + 1 WHERE id = ?1 RETURNING version",
        )?
        .query_row([collection], |row| row.get(0))?)
}

/// Deletes one document of a collection.
pub(crate) fn delete_document(
    connection: &Connection,
    name: &str,
    document_id: i64,
) -> Result<(DocumentRef, Change), StoreError> {
    check_name(name)?;
    let collection = find_collection(connection, name)?.ok_or_else(|| no_collection(name))?;
    let deleted = connection
        .prepare_cached("DELETE FROM documents WHERE id = ?1 AND collection_id = ?2")?
        .execute(params![document_id, collection.id])?;
    if deleted == 0 {
        return Err(StoreError::NotFound(format!(
            "no document {document_id} in collection {name:?}"
        )));
    }
    let to_version = bump(connection, collection.id)?;
    Ok((
        DocumentRef {
            collection: name.to_string(),
            document_id,
        },
        Change::Edit {
            collection: collection.id,
            from_version: collection.version,
            to_version,
            removed_document: Some(document_id),
            added: Vec::new(),
        },
    ))
}

/// Deletes a collection with its documents and chunks.
pub(crate) fn clear_collection(
    connection: &Connection,
    name: &str,
) -> Result<(CollectionCleared, Change), StoreError> {
    check_name(name)?;
    let collection = find_collection(connection, name)?.ok_or_else(|| no_collection(name))?;
    let documents: i64 = connection
        .prepare_cached("SELECT count(*) FROM documents WHERE collection_id = ?1")?
        .query_row([collection.id], |row| row.get(0))?;
    connection
        .prepare_cached("DELETE FROM collections WHERE id = ?1")?
        .execute([collection.id])?;
    Ok((
        CollectionCleared {
            collection: name.to_string(),
            documents_removed: documents.max(0) as u64,
        },
        Change::Dropped {
            collection: collection.id,
        },
    ))
}

/// Every collection, by name, with its counts.
pub(crate) fn list_collections(connection: &Connection) -> Result<CollectionList, StoreError> {
    let collections = connection
        .prepare_cached(
            "SELECT c.name, c.model,
                    (SELECT count(*) FROM documents d WHERE d.collection_id = c.id),
                    (SELECT count(*) FROM chunks k WHERE k.collection_id = c.id)
             FROM collections c ORDER BY c.name",
        )?
        .query_map([], |row| {
            Ok(CollectionInfo {
                name: row.get(0)?,
                model: row.get(1)?,
                documents: row.get::<_, i64>(2)?.max(0) as u64,
                chunks: row.get::<_, i64>(3)?.max(0) as u64,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CollectionList { collections })
}

/// Reads a collection's vectors into memory.
pub(crate) fn load_index(
    connection: &Connection,
    collection: &CollectionRow,
    dimensions: usize,
) -> Result<VectorIndex, StoreError> {
    let mut index = VectorIndex::new(dimensions, collection.version);
    let mut statement = connection.prepare_cached(
        "SELECT id, document_id, embedding FROM chunks WHERE collection_id = ?1 ORDER BY id",
    )?;
    let mut rows = statement.query([collection.id])?;
    let mut vector = Vec::with_capacity(dimensions);
    while let Some(row) = rows.next()? {
        vector.clear();
        let blob = row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
        if !extend_from_blob(blob, dimensions, &mut vector) {
            return Err(StoreError::Sqlite(format!(
                "chunk {} has a vector of {} bytes, not {dimensions} floats",
                row.get::<_, i64>(0)?,
                blob.len()
            )));
        }
        index.push(row.get(0)?, row.get(1)?, &vector);
    }
    Ok(index)
}
