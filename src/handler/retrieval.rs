//! Retrieval: AddDocument, DeleteDocument, RagQuery, ListCollections and
//! ClearCollection over the document store. The store keeps text and
//! vectors and runs no model; here the engine and the store are composed:
//! AddDocument has the store chunk the text, embeds the chunks and hands the
//! vectors back to be stored; RagQuery embeds the query, has the store
//! search, and reranks the candidates it returns.
//!
//! A collection is embedded with one model for its whole life: AddDocument
//! and RagQuery use the collection's own model when it has one, and the
//! selected embedding model for a new collection. AddDocument is a model-lane
//! job (embedding a long page is inference work) and stops between embedding
//! batches when cancelled, storing nothing. RagQuery is an I/O-lane job — one
//! short embedding and a scan — so searching stays quick while a chat runs.

use std::sync::Arc;
use std::time::Instant;

use super::chat::load_options;
use super::embeddings::check_embedding_model;
use super::{Handler, Outcome};
use crate::api::{
    AddDocumentRequest, CollectionRef, DeleteDocumentRequest, DocumentAdded, ModelKind,
    RagQueryRequest, RagResults, Response,
};
use crate::engine::Embedder;
use crate::engine::manager::{LoadOptions, ModelManager};
use crate::engine::rerank::Scorer;
use crate::error::ApiError;
use crate::jobs::{Job, Lane};
use crate::store::Store;

/// Chunks embedded per call to the embedder (and between cancel checks).
const EMBED_BATCH: usize = 32;
/// Candidates reranked per hit asked for.
const RERANK_POOL: usize = 3;

/// What a job needs to get an embedder once it runs.
pub(super) struct EmbedderSource {
    models: Arc<ModelManager>,
    options: LoadOptions,
    now: Instant,
}

impl EmbedderSource {
    /// The model `collection` was embedded with, else the selected one.
    pub(super) fn for_collection(
        &self,
        store: &Store,
        collection: &str,
    ) -> Result<Arc<dyn Embedder>, ApiError> {
        if !cfg!(feature = "onnx") {
            return Err(ApiError::not_implemented(
                "retrieval embeds text with the ONNX Runtime engine (feature `onnx`), which is \
                 not enabled in this build",
            ));
        }
        let own = store.collection_model(collection)?;
        let file = self
            .models
            .resolve(ModelKind::Embedding, own.as_deref())
            .map_err(|e| match &own {
                Some(model) => ApiError::conflict(format!(
                    "collection {collection:?} was embedded with {model}, which is not available: \
                     {}; restore that model, or clear the collection and add its documents again",
                    e.detail
                )),
                None => e,
            })?;
        check_embedding_model(&file)?;
        self.models
            .acquire(&file, self.options, false, self.now)?
            .embedder()
    }
}

impl Handler {
    pub(super) fn embedder_source(&self, now: Instant) -> EmbedderSource {
        EmbedderSource {
            models: Arc::clone(&self.models),
            options: load_options(&self.params.get()),
            now,
        }
    }

    pub(super) fn add_document(&self, request: AddDocumentRequest, now: Instant) -> Outcome {
        let (slot, source) = (Arc::clone(&self.store), self.embedder_source(now));
        Outcome::Job(Job::new(Lane::Model, move |ctx| {
            let store = slot.get()?;
            let embedder = source.for_collection(&store, &request.collection)?;
            let added = add_document(&store, request, embedder.as_ref(), &|| ctx.is_cancelled())?;
            Ok(Response::DocumentAdded(added))
        }))
    }

    pub(super) fn rag_query(&self, request: RagQueryRequest, now: Instant) -> Outcome {
        let (slot, source) = (Arc::clone(&self.store), self.embedder_source(now));
        Outcome::Job(Job::new(Lane::Io, move |_| {
            let store = slot.get()?;
            let embedder = source.for_collection(&store, &request.collection)?;
            let reranker = request
                .rerank
                .then(|| Scorer::EmbeddingSimilarity(Arc::clone(&embedder)));
            let results = rag_query(&store, &request, embedder.as_ref(), reranker.as_ref())?;
            Ok(Response::RagResults(results))
        }))
    }

    pub(super) fn delete_document(&self, request: DeleteDocumentRequest) -> Outcome {
        self.store_job(move |store| {
            let deleted = store.delete_document(&request.collection, request.document_id)?;
            Ok(Response::DocumentDeleted(deleted))
        })
    }

    pub(super) fn list_collections(&self) -> Outcome {
        self.store_job(|store| Ok(Response::Collections(store.list_collections()?)))
    }

    pub(super) fn clear_collection(&self, request: CollectionRef) -> Outcome {
        self.store_job(move |store| {
            Ok(Response::CollectionCleared(
                store.clear_collection(&request.collection)?,
            ))
        })
    }
}

/// Chunks a document, embeds the chunks in batches and stores them.
/// `cancelled` is asked before each batch; a cancelled request stores nothing.
pub(super) fn add_document(
    store: &Store,
    request: AddDocumentRequest,
    embedder: &dyn Embedder,
    cancelled: &dyn Fn() -> bool,
) -> Result<DocumentAdded, ApiError> {
    add_document_with_progress(store, request, embedder, cancelled, &|_, _| {})
}

/// [`add_document`], telling `progress` (chunks embedded, chunks in all)
/// before the first batch and after each one.
pub(super) fn add_document_with_progress(
    store: &Store,
    request: AddDocumentRequest,
    embedder: &dyn Embedder,
    cancelled: &dyn Fn() -> bool,
    progress: &dyn Fn(usize, usize),
) -> Result<DocumentAdded, ApiError> {
    let document = store.chunk_document(request, embedder.model_id(), embedder.dimensions())?;
    let total = document.texts().len();
    let mut vectors = Vec::with_capacity(total);
    progress(0, total);
    for batch in document.texts().chunks(EMBED_BATCH) {
        if cancelled() {
            return Err(ApiError::new(
                499,
                "cancelled",
                "Cancelled",
                "cancelled before anything was stored",
            ));
        }
        vectors.extend(embed_exactly(embedder, batch)?);
        progress(vectors.len(), total);
    }
    Ok(store.add_document(document, vectors)?)
}

/// Embeds the query, searches the store, and reranks its candidates with
/// `reranker` (three per hit asked for), whose score then replaces the
/// fused one.
pub(super) fn rag_query(
    store: &Store,
    request: &RagQueryRequest,
    embedder: &dyn Embedder,
    reranker: Option<&Scorer>,
) -> Result<RagResults, ApiError> {
    let query = store.check_query(request, embedder.model_id(), embedder.dimensions())?;
    let vector = embed_exactly(embedder, &[query.text().to_string()])?
        .pop()
        .ok_or_else(|| ApiError::internal("the embedder returned no query vector"))?;
    let Some(scorer) = reranker else {
        return Ok(store.search(&query, vector, query.top_k())?);
    };
    let mut results = store.search(&query, vector, query.top_k() * RERANK_POOL)?;
    let texts: Vec<String> = results.hits.iter().map(|h| h.text.clone()).collect();
    let scores = scorer.score(query.text(), &texts)?;
    for (hit, score) in results.hits.iter_mut().zip(scores) {
        hit.score = score;
    }
    results.hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    results.hits.truncate(query.top_k());
    Ok(results)
}

/// One vector of the embedder's length per text, or a 500: an embedder that
/// answers otherwise is a bug, and its vectors must not be stored.
fn embed_exactly(embedder: &dyn Embedder, texts: &[String]) -> Result<Vec<Vec<f32>>, ApiError> {
    let vectors = embedder.embed(texts)?;
    let dimensions = embedder.dimensions();
    if vectors.len() != texts.len() || vectors.iter().any(|v| v.len() != dimensions) {
        return Err(ApiError::internal(format!(
            "the embedder returned {} vectors for {} texts, or not {dimensions} floats each",
            vectors.len(),
            texts.len()
        )));
    }
    Ok(vectors)
}
