//! Collections and documents: checking and chunking a document off the
//! writer, taking its vectors (made by the caller: the store runs no model),
//! and the SQL that stores, replaces and deletes it.
//!
//! A collection is bound to the embedding model (and vector length) of its
//! first document: vectors of two models are not comparable, so adding or
//! querying with another model is a 409 that says which model to use. A
//! document with a URL replaces the collection's document with that URL, in
//! the same transaction: a reader sees the old chunks or the new ones, never
//! both or neither. Every change bumps the collection's `version`, which
//! keeps the in-memory vectors honest (see [`super::vectors`]).

use std::ops::Range;

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use super::chunking::{ChunkConfig, chunk_text};
use super::vectors::{Change, VectorIndex, extend_from_blob, normalise, to_blob};
use crate::api::{
    AddDocumentRequest, CollectionCleared, CollectionInfo, CollectionList, DocumentAdded,
    DocumentInfo, DocumentList, DocumentRef,
};

/// The largest document accepted, in bytes of text.
pub const MAX_DOCUMENT_BYTES: usize = 32 << 20;
/// The longest collection name, in characters.
pub const MAX_NAME: usize = 256;
/// A document checked and cut into chunks, waiting for one vector per chunk
/// ([`super::Store::chunk_document`], then [`super::Store::add_document`]).
pub struct ChunkedDocument {
    collection: String,
    url: Option<String>,
    title: Option<String>,
    metadata: Option<String>,
    length: usize,
    model: String,
    dimensions: usize,
    ranges: Vec<Range<usize>>,
    texts: Vec<String>,
}

impl ChunkedDocument {
    /// The chunks' texts, in order: what to embed.
    pub fn texts(&self) -> &[String] {
        &self.texts
    }
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

/// Checks and chunks a document whose vectors will come from `model`
/// (`dimensions` floats each); nothing is written.
pub(crate) fn chunk(
    request: AddDocumentRequest,
    config: &ChunkConfig,
    model: &str,
    dimensions: usize,
) -> Result<ChunkedDocument, StoreError> {
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
    let texts = ranges
        .iter()
        .map(|r| request.text[r.clone()].to_string())
        .collect();
    Ok(ChunkedDocument {
        collection: request.collection,
        url: request.url.filter(|u| !u.is_empty()),
        title: request.title,
        metadata: request
            .metadata
            .filter(|m| !m.is_null())
            .map(|m| m.to_string()),
        length: request.text.len(),
        model: model.to_string(),
        dimensions,
        ranges,
        texts,
    })
}

/// A chunked document with its vectors, checked and normalised: what the
/// writer stores.
pub(crate) struct PreparedDocument {
    document: ChunkedDocument,
    vectors: Vec<Vec<f32>>,
}

/// Pairs a document with its vectors: one per chunk, in order, of the
/// document's length; scaled to unit length so a dot product is the cosine.
pub(crate) fn with_vectors(
    document: ChunkedDocument,
    mut vectors: Vec<Vec<f32>>,
) -> Result<PreparedDocument, StoreError> {
    let dimensions = document.dimensions;
    if vectors.len() != document.texts.len() || vectors.iter().any(|v| v.len() != dimensions) {
        return Err(StoreError::Invalid(format!(
            "{} vectors for {} chunks, or not {dimensions} floats each",
            vectors.len(),
            document.texts.len()
        )));
    }
    vectors.iter_mut().for_each(|v| normalise(v));
    Ok(PreparedDocument { document, vectors })
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
    prepared: PreparedDocument,
    now_ms: i64,
) -> Result<(DocumentAdded, Change), StoreError> {
    let PreparedDocument { document, vectors } = prepared;
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
    let mut collection = find_collection(connection, &document.collection)?
        .ok_or_else(|| StoreError::Sqlite("the collection vanished while being written".into()))?;
    if collection.model.is_none() {
        // Made empty (restored from a backup whose copy of it had no
        // documents): its first document binds it to a model.
        connection
            .prepare_cached("UPDATE collections SET model = ?1, dimensions = ?2 WHERE id = ?3")?
            .execute(params![
                document.model,
                document.dimensions as i64,
                collection.id
            ])?;
        collection.model = Some(document.model.clone());
        collection.dimensions = Some(document.dimensions);
    }
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
    let mut added = Vec::with_capacity(vectors.len());
    {
        let mut statement = connection.prepare_cached(
            "INSERT INTO chunks (document_id, collection_id, start, end, text, embedding)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        )?;
        let chunks = document.ranges.iter().zip(&document.texts);
        for ((range, text), vector) in chunks.zip(vectors) {
            let chunk_id: i64 = statement.query_row(
                params![
                    document_id,
                    collection.id,
                    range.start as i64,
                    range.end as i64,
                    text,
                    to_blob(&vector)
                ],
                |row| row.get(0),
            )?;
            added.push((chunk_id, document_id, vector));
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

pub(crate) fn bump(connection: &Connection, collection: i64) -> Result<i64, StoreError> {
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

/// A collection's documents, newest first.
pub(crate) fn list_documents(
    connection: &Connection,
    name: &str,
) -> Result<DocumentList, StoreError> {
    check_name(name)?;
    let collection = find_collection(connection, name)?.ok_or_else(|| no_collection(name))?;
    let documents = connection
        .prepare_cached(
            "SELECT d.id, d.title, d.url, d.metadata, d.length, d.created_at,
                    (SELECT count(*) FROM chunks k WHERE k.document_id = d.id)
             FROM documents d WHERE d.collection_id = ?1 ORDER BY d.id DESC",
        )?
        .query_map([collection.id], |row| {
            Ok(DocumentInfo {
                document_id: row.get(0)?,
                title: row.get(1)?,
                url: row.get(2)?,
                metadata: super::history::parse_metadata(row.get(3)?),
                length: row.get::<_, i64>(4)?.max(0) as u64,
                created_at: row.get(5)?,
                chunks: row.get::<_, i64>(6)?.max(0) as u64,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DocumentList {
        collection: name.to_string(),
        documents,
    })
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
