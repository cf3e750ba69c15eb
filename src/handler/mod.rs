//! The one synchronous handler every transport calls.
//!
//! [`Handler::serve`] takes a request and either answers it inline (cheap
//! requests: no disk, no model) or turns it into a [`Job`] on the pool whose
//! replies go to the caller's [`ReplySink`]. It never knows which transport
//! called it. Each area of the protocol has its own file.

mod backup;
mod chat;
mod chat_context;
mod chat_generate;
mod chat_output;
mod chat_relay;
mod downloads;
mod embeddings;
mod grounding;
mod history;
mod knowledge;
mod metrics;
mod models;
mod preload;
mod push;
mod responses;
mod responses_input;
mod retrieval;
mod system;
#[cfg(test)]
mod tests;
mod tokens;
mod upstream;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::api::{EventKind, Request, RequestId, Response, RtcCommand};
use crate::engine::loader::EngineLoader;
use crate::engine::manager::{Loader, ManagerConfig, ModelManager};
use crate::error::ApiError;
use crate::events::EventBus;
use crate::jobs::{ConnectionId, Job, JobLimits, Jobs, ReplySink};
use crate::params::Params;
use crate::ratelimit::{Limiter, RateSettings};
use crate::stats::Stats;
use crate::system::SystemProbe;

pub use push::LoopPort;

/// What handling a request produced. It lives only from `handle` to the
/// transport's dispatch, so a reply stays inline rather than boxed.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// The answer, ready now.
    Reply(Response),
    /// Work for the pool; its replies go to the caller's sink.
    Job(Job),
    /// Work only the event loop can do (WebRTC signaling: the peers live
    /// there); its reply goes to the caller's sink.
    Loop(RtcCommand),
    /// Server push: the caller's sink receives these events until it is gone.
    Subscribe(Vec<EventKind>),
    /// Work that completes on a thread of its own without holding a pool
    /// thread (SaveMessage's group commit): the closure gets the request's id
    /// and sink, and the final reply is delivered from that thread.
    Deferred(Box<dyn FnOnce(RequestId, Arc<dyn ReplySink>) + Send>),
}

/// Where the handler keeps its state.
pub struct HandlerConfig {
    /// The data dir (database, params.json).
    pub data_dir: PathBuf,
    /// The models dir.
    pub models_dir: PathBuf,
    /// Pool sizes and queue bounds.
    pub limits: JobLimits,
    /// Bytes loaded models may take in all (0: the memory available).
    pub memory_budget: u64,
    /// Idle time after which a model is unloaded (zero: never).
    pub keep_alive: std::time::Duration,
    /// Available bytes below which `LowMemory` is published (0: never).
    pub low_memory_bytes: u64,
    /// Generation slots of a chat model when a load does not say (0: the
    /// default from cores and memory).
    pub parallel: u32,
    /// A generation reaching the context's end shifts instead of stopping.
    pub context_shift: bool,
    /// What PullModel may fetch.
    pub pull: crate::fetch::PullPolicy,
}

/// The state every request may touch; shared by all transports.
pub struct Handler {
    stats: Arc<Stats>,
    params: Arc<Params>,
    system: Arc<SystemProbe>,
    jobs: Jobs,
    models_dir: PathBuf,
    pull_policy: crate::fetch::PullPolicy,
    /// Models in memory, loading, eviction and the default per task.
    models: Arc<ModelManager>,
    /// Server push subscribers.
    events: Arc<EventBus>,
    /// The event loop, once it serves WebRTC.
    loop_port: OnceLock<Arc<dyn LoopPort>>,
    /// The SQLite store: chat history and documents (or why it cannot open).
    store: Arc<crate::store::StoreSlot>,
    /// Every client's rate limits (none until [`Limiter::set`]).
    limiter: Arc<Limiter>,
    /// Files arriving in parts (knowledge base documents, backups to restore).
    uploads: Arc<crate::uploads::Uploads>,
    /// Preloads not finished yet (Health says `loading` meanwhile).
    preloading: Arc<std::sync::atomic::AtomicUsize>,
    /// OpenAI-compatible servers whose models are relayed.
    upstreams: OnceLock<Arc<crate::upstream::Upstreams>>,
}

impl Handler {
    /// Opens the state under the configured dirs.
    pub fn new(config: HandlerConfig, now: Instant) -> Result<Handler, String> {
        embeddings::find_runtime_in(&config.data_dir);
        Handler::with_loader(config, Box::new(EngineLoader), now)
    }

    /// [`Handler::new`] with another model loader (tests use a fake one).
    pub fn with_loader(
        config: HandlerConfig,
        loader: Box<dyn Loader>,
        now: Instant,
    ) -> Result<Handler, String> {
        let system: Arc<SystemProbe> = Arc::default();
        let events: Arc<EventBus> = Arc::default();
        let models = Arc::new(ModelManager::new(
            ManagerConfig {
                models_dir: config.models_dir.clone(),
                data_dir: config.data_dir.clone(),
                memory_budget: config.memory_budget,
                keep_alive: config.keep_alive,
                low_memory_bytes: config.low_memory_bytes,
                parallel: config.parallel,
                context_shift: config.context_shift,
            },
            loader,
            Arc::clone(&system),
            Arc::clone(&events),
        ));
        models.start_housekeeping();
        Ok(Handler {
            stats: Arc::new(Stats::new(now)),
            params: Arc::new(Params::load(config.data_dir.join("params.json"))),
            uploads: Arc::new(crate::uploads::Uploads::new(&config.data_dir)),
            models,
            system,
            jobs: Jobs::new(config.limits)?,
            models_dir: config.models_dir,
            pull_policy: config.pull,
            events,
            loop_port: OnceLock::new(),
            store: Arc::new(crate::store::StoreSlot::lazy(
                &config.data_dir,
                crate::store::StoreOptions::default(),
            )),
            limiter: Arc::new(Limiter::new(RateSettings {
                requests_per_second: 0,
                offers_per_minute: 0,
                generations_per_client: 0,
            })),
            preloading: Arc::default(),
            upstreams: OnceLock::new(),
        })
    }

    /// The rate limits every transport holds its clients to.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// Generations a chat model runs at once by default (the default cap
    /// per client is twice this).
    pub fn generation_slots(&self) -> usize {
        self.models.default_parallel() as usize
    }

    /// The counters transports record into.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Jobs accepted and not finished (for a bounded wait at shutdown).
    pub fn jobs_in_flight(&self) -> usize {
        self.jobs.in_flight() + self.store.pending_writes()
    }

    /// Handles request `id` of `connection`: returns the reply when it is
    /// ready now; otherwise the replies (chunks, then a final one) go to
    /// `sink` from the pool.
    pub fn serve(
        &self,
        connection: ConnectionId,
        id: RequestId,
        request: Request,
        sink: impl FnOnce() -> Arc<dyn ReplySink>,
        now: Instant,
    ) -> Option<Response> {
        match self.handle(connection, request, now) {
            Outcome::Reply(response) => Some(response),
            Outcome::Job(job) => {
                // The sink owns the transport's request (HTTP): a refusal
                // (full queue) must go through it, not be returned.
                let sink = sink();
                if let Err(error) = self
                    .jobs
                    .submit(connection, id.clone(), job, Arc::clone(&sink))
                {
                    sink.deliver(crate::api::Reply::new(id, Response::error(error)));
                }
                None
            }
            Outcome::Loop(command) => self.to_loop(id, command, sink()),
            Outcome::Subscribe(kinds) => self.subscribe(id, kinds, sink()),
            Outcome::Deferred(start) => {
                start(id, sink());
                None
            }
        }
    }

    /// Decides what a request of `connection` needs: an inline reply or a job.
    pub fn handle(&self, connection: ConnectionId, request: Request, now: Instant) -> Outcome {
        let reply = |result: Result<Response, ApiError>| {
            Outcome::Reply(result.unwrap_or_else(Response::error))
        };
        match request {
            Request::Health(_) => Outcome::Reply(self.health(now)),
            Request::SystemInfo(_) => self.system_info(),
            Request::GetStats(_) => Outcome::Reply(self.stats_reply(now)),
            Request::GetResources(_) => self.resources(),
            Request::GetParams(_) => Outcome::Reply(Response::Params(self.params.get())),
            Request::SetParams(patch) => reply(self.params.set(&patch).map(Response::Params)),
            // The native messaging port answers GetApiKey itself, before the
            // handler; anything that reaches here came another way.
            Request::GetApiKey(_) => reply(Err(crate::auth::native_only())),
            Request::StopGeneration(target) => reply(
                target_check(&target)
                    .map(|()| Response::Stopped(self.jobs.stop(connection, &target))),
            ),
            Request::GetHaltStatus(target) => reply(
                target_check(&target)
                    .map(|()| Response::HaltStatus(self.jobs.status(connection, &target))),
            ),
            Request::ListModels(_) => self.list_models(),
            Request::Chat(request) => self.chat(request),
            Request::Generate(request) => self.generate(request),
            Request::Tokenize(request) => self.tokenize(request),
            Request::Detokenize(request) => self.detokenize(request),
            Request::LoadModel(request) => self.load_model(request, now),
            Request::UnloadModel(request) => self.unload_model(request),
            Request::ListLoadedModels(_) => Outcome::Reply(self.list_loaded(now)),
            Request::SelectModel(request) => self.select_model(request),
            Request::ModelInfo(request) => self.model_info(request),
            Request::EstimateMemory(request) => self.estimate_memory(request),
            Request::CheckCompatibility(request) => self.check_compatibility(request),
            Request::CreateWebRtcOffer(r) => Outcome::Loop(RtcCommand::CreateOffer(r)),
            Request::SubmitWebRtcAnswer(r) => Outcome::Loop(RtcCommand::SubmitAnswer(r)),
            Request::AddIceCandidate(r) => Outcome::Loop(RtcCommand::AddIce(r)),
            Request::GetWebRtcSession(r) => Outcome::Loop(RtcCommand::Get(r)),
            Request::ListWebRtcSessions(_) => Outcome::Loop(RtcCommand::List),
            Request::CloseWebRtcSession(r) => Outcome::Loop(RtcCommand::Close(r)),
            Request::Subscribe(r) => push::subscribe_outcome(&r),
            Request::Embeddings(request) => self.embeddings(request, now),
            Request::Rerank(request) => self.rerank(request, now),
            Request::PullModel(request) => self.pull_model(request),
            Request::DeleteModel(request) => self.delete_model(request),
            Request::GetRegisteredModels(_) => self.registered_models(),
            Request::GetRecipes(request) => self.recipes(request),
            Request::SaveMessage(request) => self.save_message(request),
            Request::Responses(request) => self.responses(request),
            Request::CreateResponse(request) => self.create_response(request),
            Request::GetResponse(request) => self.get_response(request),
            Request::DeleteResponse(request) => self.delete_response(request),
            Request::ChatHistory(request) => self.chat_history(request),
            Request::ListSessions(request) => self.list_sessions(request),
            Request::DeleteSession(request) => self.delete_session(request),
            Request::SearchHistory(request) => self.search_history(request),
            Request::TruncateSession(request) => self.truncate_session(request),
            Request::SetSessionSettings(request) => self.set_session_settings(request),
            Request::AddDocument(request) => self.add_document(request, now),
            Request::DeleteDocument(request) => self.delete_document(request),
            Request::RagQuery(request) => self.rag_query(request, now),
            Request::ListCollections(_) => self.list_collections(),
            Request::ClearCollection(request) => self.clear_collection(request),
            Request::UploadStart(request) => self.upload_start(request, now),
            Request::UploadChunk(request) => self.upload_chunk(request, now),
            Request::UploadFinish(request) => self.upload_finish(request, now),
            Request::UploadCancel(request) => self.upload_cancel(request),
            Request::ListDocuments(request) => self.list_documents(request),
            Request::ExportSession(request) => self.export_session(request),
            Request::Backup(_) => self.backup(),
            Request::Restore(request) => self.restore(request),
        }
    }
}

/// A StopGeneration/GetHaltStatus must name its target one way or the other.
fn target_check(target: &crate::api::TargetRequest) -> Result<(), ApiError> {
    match (&target.job_id, target.target_id.is_none()) {
        (Some(job), _) if crate::api::JobId::parse(job).is_none() => Err(ApiError::bad_request(
            format!("job_id {job:?} is not a job id (16 hex digits)"),
        )),
        (None, true) => Err(ApiError::bad_request(
            "name the request with `job_id` (from its first reply) or `target_id`",
        )),
        _ => Ok(()),
    }
}
