//! Retrieval: AddDocument, DeleteDocument, RagQuery, ListCollections and
//! ClearCollection over the document store.
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
    AddDocumentRequest, CollectionRef, DeleteDocumentRequest, ModelKind, RagQueryRequest, Response,
};
use crate::engine::Embedder;
use crate::engine::manager::{LoadOptions, ModelManager};
use crate::engine::rerank::Scorer;
use crate::error::ApiError;
use crate::jobs::{Job, Lane};
use crate::store::Store;

/// What a job needs to get an embedder once it runs.
struct EmbedderSource {
    models: Arc<ModelManager>,
    options: LoadOptions,
    now: Instant,
}

impl EmbedderSource {
    /// The model `collection` was embedded with, else the selected one.
    fn for_collection(
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
    fn embedder_source(&self, now: Instant) -> EmbedderSource {
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
            let added = store.add_document(request, embedder.as_ref(), &|| ctx.is_cancelled())?;
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
            let results = store.rag_query(&request, embedder.as_ref(), reranker.as_ref())?;
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
