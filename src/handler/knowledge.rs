//! The knowledge base: uploads in parts (UploadStart, UploadChunk,
//! UploadFinish, UploadCancel) and the background indexing of a finished
//! document upload, plus ListDocuments.
//!
//! UploadFinish answers at once (`IndexingStarted`, with the indexing job's
//! id); the file is then read, its text extracted, chunked, embedded and
//! stored by a model-lane job that belongs to no client: it goes on when
//! the uploader leaves, and tells everyone subscribed to `IndexProgress`
//! where it stands ("chunk N of M"), how it ended (`done` with the document
//! id, or `failed` with the error). StopGeneration with its job id stops it,
//! storing nothing. The document goes through the same path as AddDocument
//! (`retrieval::add_document_with_progress`): same chunking, same model
//! binding of the collection, same hybrid search afterwards.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;

use super::retrieval::{EmbedderSource, add_document_with_progress};
use super::{Handler, Outcome};
use crate::api::{
    AddDocumentRequest, CollectionRef, IndexProgress, IndexState, IndexingStarted, Reply,
    RequestId, Response, ServerEvent, UploadChunkRequest, UploadChunkStored, UploadRef,
    UploadStartRequest, UploadStarted,
};
use crate::error::ApiError;
use crate::events::EventBus;
use crate::extract::{Kind, extract};
use crate::jobs::{ConnectionId, Job, Lane, ReplySink};
use crate::store::StoreSlot;
use crate::uploads::{Announced, Finished, Purpose, Uploads};

/// Standard base64, padded; bits past the last byte are ignored, as most
/// decoders (the browser's `atob` among them) ignore them.
const CHUNK_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

impl Handler {
    pub(super) fn upload_start(&self, request: UploadStartRequest, now: Instant) -> Outcome {
        let announced = match Announced::check(request) {
            Ok(announced) => announced,
            Err(error) => return Outcome::Reply(Response::error(error)),
        };
        if let Purpose::Document { .. } = announced.purpose
            && let Err(error) = Kind::detect(&announced.filename, announced.content_type.as_deref())
        {
            return Outcome::Reply(Response::error(error));
        }
        let uploads = Arc::clone(&self.uploads);
        Outcome::Job(Job::new(Lane::Io, move |_| {
            let (chunk_size, chunks) = (announced.chunk_size, announced.chunks());
            let upload_id = uploads.start(announced, now)?;
            Ok(Response::UploadStarted(UploadStarted {
                upload_id,
                chunk_size,
                chunks,
            }))
        }))
    }

    pub(super) fn upload_chunk(&self, request: UploadChunkRequest, now: Instant) -> Outcome {
        let uploads = Arc::clone(&self.uploads);
        Outcome::Job(Job::new(Lane::Io, move |_| {
            let data = CHUNK_BASE64
                .decode(request.data.as_bytes())
                .map_err(|e| ApiError::invalid(format!("data is not base64: {e}")))?;
            let (received, chunks) =
                uploads.write_chunk(&request.upload_id, request.index, &data, now)?;
            Ok(Response::UploadChunkStored(UploadChunkStored {
                upload_id: request.upload_id,
                index: request.index,
                received,
                chunks,
            }))
        }))
    }

    pub(super) fn upload_cancel(&self, request: UploadRef) -> Outcome {
        let uploads = Arc::clone(&self.uploads);
        Outcome::Job(Job::new(Lane::Io, move |_| {
            uploads.cancel(&request.upload_id)?;
            Ok(Response::UploadCancelled(request))
        }))
    }

    /// Starts indexing a complete document upload in the background.
    pub(super) fn upload_finish(&self, request: UploadRef, now: Instant) -> Outcome {
        let announced = match self.uploads.check_complete(&request.upload_id) {
            Ok(announced) => announced,
            Err(error) => return Outcome::Reply(Response::error(error)),
        };
        let Purpose::Document { collection } = announced.purpose.clone() else {
            return Outcome::Reply(Response::error(ApiError::invalid(
                "this upload is a backup: send Restore with its upload_id",
            )));
        };
        let progress = Progress {
            events: Arc::clone(&self.events),
            upload_id: request.upload_id.clone(),
            collection: collection.clone(),
            filename: announced.filename.clone(),
        };
        let work = IndexWork {
            uploads: Arc::clone(&self.uploads),
            store: Arc::clone(&self.store),
            source: self.embedder_source(now),
            upload_id: request.upload_id.clone(),
            progress: progress.clone(),
        };
        let job = Job::new(Lane::Model, move |ctx| work.run(&|| ctx.is_cancelled()));
        let label = RequestId::text(format!("index-{}", request.upload_id));
        match self
            .jobs
            .submit(ConnectionId::next(), label, job, Arc::new(progress))
        {
            Ok(job_id) => Outcome::Reply(Response::IndexingStarted(IndexingStarted {
                upload_id: request.upload_id,
                job_id: job_id.to_string(),
                collection,
                filename: announced.filename,
            })),
            Err(error) => Outcome::Reply(Response::error(error)),
        }
    }

    pub(super) fn list_documents(&self, request: CollectionRef) -> Outcome {
        self.store_job(move |store| {
            Ok(Response::Documents(
                store.list_documents(&request.collection)?,
            ))
        })
    }
}

/// What an indexing job needs.
struct IndexWork {
    uploads: Arc<Uploads>,
    store: Arc<StoreSlot>,
    source: EmbedderSource,
    upload_id: String,
    progress: Progress,
}

impl IndexWork {
    fn run(self, cancelled: &dyn Fn() -> bool) -> Result<Response, ApiError> {
        let finished = self.uploads.finish(&self.upload_id)?;
        self.progress.publish(IndexState::Extracting, 0, 0);
        let request = document_request(&finished, &self.progress.collection)?;
        drop(finished);
        let store = self.store.get()?;
        let embedder = self.source.for_collection(&store, &request.collection)?;
        let tell = |done: usize, total: usize| {
            self.progress
                .publish(IndexState::Embedding, done as u64, total as u64)
        };
        let added =
            add_document_with_progress(&store, request, embedder.as_ref(), cancelled, &tell)?;
        Ok(Response::DocumentAdded(added))
    }
}

/// The AddDocument an uploaded file makes: its text, `upload:<filename>` as
/// its URL (uploading a file of the same name again replaces it), its name
/// as title, and in metadata its name, type, size and (PDF) page starts.
fn document_request(finished: &Finished, collection: &str) -> Result<AddDocumentRequest, ApiError> {
    let announced = &finished.announced;
    let kind = Kind::detect(&announced.filename, announced.content_type.as_deref())?;
    let extracted = extract(kind, &finished.read()?)?;
    let mut metadata = serde_json::json!({
        "filename": announced.filename,
        "content_type": kind.media_type(),
        "bytes": announced.size,
    });
    if !extracted.page_starts.is_empty() {
        metadata["pages"] = extracted.page_starts.len().into();
        metadata["page_starts"] = extracted.page_starts.into();
    }
    Ok(AddDocumentRequest {
        collection: collection.to_string(),
        text: extracted.text,
        url: Some(format!("upload:{}", announced.filename)),
        title: Some(announced.filename.clone()),
        metadata: Some(metadata),
    })
}

/// Publishes an upload's `IndexProgress` events; as the indexing job's
/// sink, turns its final reply into the `done` or `failed` event.
#[derive(Clone)]
struct Progress {
    events: Arc<EventBus>,
    upload_id: String,
    collection: String,
    filename: String,
}

impl Progress {
    fn event(&self, state: IndexState, chunk: u64, chunks: u64) -> IndexProgress {
        IndexProgress {
            upload_id: self.upload_id.clone(),
            collection: self.collection.clone(),
            filename: self.filename.clone(),
            state,
            chunk,
            chunks,
            document_id: None,
            error: None,
        }
    }

    fn publish(&self, state: IndexState, chunk: u64, chunks: u64) {
        self.events.publish(&ServerEvent::IndexProgress(
            self.event(state, chunk, chunks),
        ));
    }
}

impl ReplySink for Progress {
    fn deliver(&self, reply: Reply) -> bool {
        let event = match reply.response {
            Response::DocumentAdded(added) => {
                let chunks = added.chunks as u64;
                IndexProgress {
                    document_id: Some(added.document_id),
                    ..self.event(IndexState::Done, chunks, chunks)
                }
            }
            Response::Error { error } => {
                log::warn!("indexing {:?} failed: {}", self.filename, error.detail);
                IndexProgress {
                    error: Some(error),
                    ..self.event(IndexState::Failed, 0, 0)
                }
            }
            _ => return true,
        };
        self.events.publish(&ServerEvent::IndexProgress(event));
        true
    }
}
