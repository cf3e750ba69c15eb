//! The knowledge base in a backup: each collection with its documents, their
//! chunks and the chunks' vectors (base64 of the stored little-endian f32),
//! so a restore brings search back without running an embedding model.
//!
//! Restoring into a store: a missing collection is created, bound to the
//! backup's model; an existing one keeps its documents and must hold the
//! same model's vectors (else 409, and the whole restore is rolled back). A
//! document with a URL replaces the collection's document of that URL; one
//! without a URL is added unless the same document (title, length and time)
//! is already there, so restoring a file twice does not double it. Each
//! collection that gains documents has its `version` bumped: cached vectors
//! reload on the next query (see [`super::vectors`]).

use std::collections::HashSet;

use base64::Engine as _;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreError;
use super::documents::{
    CollectionRow, MAX_DOCUMENT_BYTES, bump, check_model, check_name, find_collection,
};
use super::history::parse_metadata;
use super::vectors::extend_from_blob;

/// The longest vector a backup may carry, in floats.
const MAX_DIMENSIONS: u32 = 65_536;

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
    /// Its documents, oldest first.
    #[serde(default)]
    pub documents: Vec<DocumentDump>,
}

/// A document in a backup: what AddDocument stored, with its chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentDump {
    /// Its URL (the key a new upload of it replaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Its title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Its metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Bytes of its text.
    pub length: u64,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Its chunks, in order.
    pub chunks: Vec<ChunkDump>,
}

/// A chunk of a document in a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkDump {
    /// Byte offset of its start in the document's text.
    pub start: u64,
    /// Byte offset of its end.
    pub end: u64,
    /// Its text.
    pub text: String,
    /// Its vector: base64 of `dimensions` little-endian f32.
    pub embedding: String,
}

/// Checks every collection of a backup: names (once each), and for one with
/// documents its model, each document's chunks and each vector's length.
pub(crate) fn check_collections(collections: &[CollectionDump]) -> Result<(), StoreError> {
    let mut names = HashSet::new();
    for collection in collections {
        check_name(&collection.name)?;
        if !names.insert(collection.name.as_str()) {
            return Err(StoreError::Invalid(format!(
                "collection {:?} is in the backup twice",
                collection.name
            )));
        }
        if !collection.documents.is_empty() {
            check_documents(collection)?;
        }
    }
    Ok(())
}

fn check_documents(collection: &CollectionDump) -> Result<(), StoreError> {
    let name = &collection.name;
    let invalid = |what: String| StoreError::Invalid(format!("collection {name:?}: {what}"));
    if collection.model.as_deref().is_none_or(str::is_empty) {
        return Err(invalid("it has documents but no model".into()));
    }
    let dimensions = match collection.dimensions {
        Some(d @ 1..=MAX_DIMENSIONS) => d as usize,
        other => {
            return Err(invalid(format!(
                "dimensions {other:?} is not 1 to {MAX_DIMENSIONS}"
            )));
        }
    };
    let mut urls = HashSet::new();
    for (index, document) in collection.documents.iter().enumerate() {
        let invalid = |what: String| invalid(format!("document {index}: {what}"));
        if let Some(url) = &document.url
            && !urls.insert(url.as_str())
        {
            return Err(invalid(format!("URL {url:?} is in the collection twice")));
        }
        if document.length > MAX_DOCUMENT_BYTES as u64 {
            return Err(invalid(format!(
                "length {} is over {MAX_DOCUMENT_BYTES}",
                document.length
            )));
        }
        if document.chunks.is_empty() {
            return Err(invalid("it has no chunks".into()));
        }
        for (at, chunk) in document.chunks.iter().enumerate() {
            if chunk.start > chunk.end || chunk.end > document.length {
                return Err(invalid(format!(
                    "chunk {at} spans {}..{}, outside its {} bytes",
                    chunk.start, chunk.end, document.length
                )));
            }
            decode_vector(&chunk.embedding, dimensions)
                .map_err(|why| invalid(format!("chunk {at}: {why}")))?;
        }
    }
    Ok(())
}

/// A chunk's vector as stored (little-endian f32 bytes), checked: `dimensions`
/// finite floats.
fn decode_vector(embedding: &str, dimensions: usize) -> Result<Vec<u8>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(embedding)
        .map_err(|e| format!("the embedding is not base64: {e}"))?;
    let mut floats = Vec::with_capacity(dimensions);
    if !extend_from_blob(&bytes, dimensions, &mut floats) {
        return Err(format!(
            "the embedding has {} bytes, not {dimensions} floats",
            bytes.len()
        ));
    }
    if !floats.iter().all(|f| f.is_finite()) {
        return Err("the embedding is not all finite numbers".into());
    }
    Ok(bytes)
}

/// Every collection with its documents, chunks and vectors.
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
        collection.documents = dump_documents(connection, *id)?;
    }
    Ok(collections.into_iter().map(|(_, c)| c).collect())
}

fn dump_documents(
    connection: &Connection,
    collection: i64,
) -> Result<Vec<DocumentDump>, StoreError> {
    let mut documents: Vec<(i64, DocumentDump)> = connection
        .prepare_cached(
            "SELECT id, url, title, metadata, length, created_at FROM documents
             WHERE collection_id = ?1 ORDER BY id",
        )?
        .query_map([collection], |row| {
            Ok((
                row.get(0)?,
                DocumentDump {
                    url: row.get(1)?,
                    title: row.get(2)?,
                    metadata: parse_metadata(row.get(3)?),
                    length: row.get::<_, i64>(4)?.max(0) as u64,
                    created_at: row.get(5)?,
                    chunks: Vec::new(),
                },
            ))
        })?
        .collect::<Result<_, _>>()?;
    let encoder = base64::engine::general_purpose::STANDARD;
    for (id, document) in &mut documents {
        document.chunks = connection
            .prepare_cached(
                "SELECT start, end, text, embedding FROM chunks WHERE document_id = ?1 ORDER BY id",
            )?
            .query_map([*id], |row| {
                Ok(ChunkDump {
                    start: row.get::<_, i64>(0)?.max(0) as u64,
                    end: row.get::<_, i64>(1)?.max(0) as u64,
                    text: row.get(2)?,
                    embedding: encoder
                        .encode(row.get_ref(3)?.as_blob().map_err(rusqlite::Error::from)?),
                })
            })?
            .collect::<Result<_, _>>()?;
    }
    Ok(documents.into_iter().map(|(_, d)| d).collect())
}

/// What a restore did to the knowledge base.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RestoredCollections {
    /// Collections created.
    pub created: u64,
    /// Documents written (each with its chunks and vectors).
    pub documents: u64,
}

/// Writes checked collections (in the caller's transaction).
pub(crate) fn restore_collections(
    connection: &Connection,
    collections: &[CollectionDump],
    now_ms: i64,
) -> Result<RestoredCollections, StoreError> {
    let mut restored = RestoredCollections::default();
    for collection in collections {
        let row = match find_collection(connection, &collection.name)? {
            Some(row) => row,
            None => {
                restored.created += 1;
                create(connection, &collection.name, now_ms)?
            }
        };
        if collection.documents.is_empty() {
            continue;
        }
        bind_model(connection, &row, collection)?;
        let dimensions = collection.dimensions.unwrap_or_default() as usize;
        for document in &collection.documents {
            if restore_document(connection, row.id, dimensions, document)? {
                restored.documents += 1;
            }
        }
        bump(connection, row.id)?;
    }
    Ok(restored)
}

fn create(connection: &Connection, name: &str, now_ms: i64) -> Result<CollectionRow, StoreError> {
    connection
        .prepare_cached("INSERT INTO collections (name, created_at) VALUES (?1, ?2)")?
        .execute(params![name, now_ms])?;
    find_collection(connection, name)?
        .ok_or_else(|| StoreError::Sqlite("the collection vanished while being written".into()))
}

/// Binds an unbound collection to the backup's model, or checks that a bound
/// one holds the same model's vectors (409).
fn bind_model(
    connection: &Connection,
    row: &CollectionRow,
    collection: &CollectionDump,
) -> Result<(), StoreError> {
    // check_documents made sure a collection with documents has both.
    let model = collection.model.as_deref().unwrap_or_default();
    let dimensions = collection.dimensions.unwrap_or_default() as usize;
    if row.model.is_some() {
        return check_model(Some(row), &collection.name, model, dimensions);
    }
    connection
        .prepare_cached("UPDATE collections SET model = ?1, dimensions = ?2 WHERE id = ?3")?
        .execute(params![model, dimensions as i64, row.id])?;
    Ok(())
}

/// Writes one document with its chunks; false when it was already there.
fn restore_document(
    connection: &Connection,
    collection: i64,
    dimensions: usize,
    document: &DocumentDump,
) -> Result<bool, StoreError> {
    match &document.url {
        Some(url) => {
            connection
                .prepare_cached("DELETE FROM documents WHERE collection_id = ?1 AND url = ?2")?
                .execute(params![collection, url])?;
        }
        None => {
            let present = connection
                .prepare_cached(
                    "SELECT 1 FROM documents WHERE collection_id = ?1 AND url IS NULL
                     AND title IS ?2 AND length = ?3 AND created_at = ?4",
                )?
                .query_row(
                    params![
                        collection,
                        document.title,
                        document.length as i64,
                        document.created_at
                    ],
                    |_| Ok(()),
                )
                .optional()?;
            if present.is_some() {
                return Ok(false);
            }
        }
    }
    let metadata = document
        .metadata
        .as_ref()
        .filter(|m| !m.is_null())
        .map(Value::to_string);
    let id: i64 = connection
        .prepare_cached(
            "INSERT INTO documents (collection_id, url, title, metadata, length, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        )?
        .query_row(
            params![
                collection,
                document.url,
                document.title,
                metadata,
                document.length as i64,
                document.created_at
            ],
            |row| row.get(0),
        )?;
    let mut insert = connection.prepare_cached(
        "INSERT INTO chunks (document_id, collection_id, start, end, text, embedding)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for chunk in &document.chunks {
        // Checked before the write began (check_collections): this cannot fail.
        let embedding = decode_vector(&chunk.embedding, dimensions).map_err(StoreError::Invalid)?;
        insert.execute(params![
            id,
            collection,
            chunk.start as i64,
            chunk.end as i64,
            chunk.text,
            embedding
        ])?;
    }
    Ok(true)
}
