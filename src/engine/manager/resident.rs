//! What a loaded model is: its engine, how it got there (the [`Loader`]),
//! and the [`Resident`] entry the manager keeps for it while it is in memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::super::Embedder;
use super::super::text::TextModel;
use super::LoadOptions;
use crate::api::{LoadedModel, ModelKind};
use crate::error::ApiError;
use crate::jobs::lock;
use crate::models::ModelFile;

/// A loaded model's engine.
#[derive(Clone)]
pub enum Engine {
    /// A chat model.
    Text(Arc<dyn TextModel>),
    /// An ONNX embedding model.
    #[cfg(feature = "onnx")]
    Onnx(Arc<super::super::onnx::OnnxModel>),
    /// Any other embedder (tests).
    Embed(Arc<dyn Embedder>),
}

/// Told a load's progress, from 0.0 to 1.0.
pub type Progress = Arc<dyn Fn(f32) + Send + Sync>;

/// Loads model files; the real one ([`crate::engine::loader::EngineLoader`]) calls
/// llama.cpp and ONNX Runtime, tests use a fake.
pub trait Loader: Send + Sync {
    /// Loads `file` with `options` (context size already clamped), telling
    /// `progress` how far it got when the backend can say.
    fn load(
        &self,
        file: &ModelFile,
        options: &LoadOptions,
        progress: Progress,
    ) -> Result<Engine, ApiError>;
}

/// Why a model left memory (the `reason` of a `ModelUnloaded` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnloadReason {
    /// A client asked (UnloadModel, or DeleteModel with force).
    Requested,
    /// Unused for the keep-alive.
    Idle,
    /// Evicted to make room for another model.
    Memory,
    /// A pull replaced its file.
    Replaced,
}

impl UnloadReason {
    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            UnloadReason::Requested => "requested",
            UnloadReason::Idle => "idle",
            UnloadReason::Memory => "memory",
            UnloadReason::Replaced => "replaced",
        }
    }
}

/// A model in memory.
pub struct Resident {
    /// The model's file.
    pub file: ModelFile,
    /// Its engine.
    pub engine: Engine,
    /// The options it was loaded with.
    pub options: LoadOptions,
    /// Estimated bytes it holds.
    pub memory_bytes: u64,
    pub(super) last_used: Mutex<Instant>,
    /// Never unloaded for idleness (LoadModel's `keep_loaded`); an unload
    /// ends it, and an eviction for memory still applies.
    pub(super) keep_loaded: AtomicBool,
}

impl Resident {
    /// The chat engine, or a 400 naming what the model is instead.
    pub fn text(&self) -> Result<Arc<dyn TextModel>, ApiError> {
        match &self.engine {
            Engine::Text(model) => Ok(Arc::clone(model)),
            _ => Err(wrong_kind(&self.file, ModelKind::Chat)),
        }
    }

    /// The embedding engine, or a 400.
    pub fn embedder(&self) -> Result<Arc<dyn Embedder>, ApiError> {
        match &self.engine {
            #[cfg(feature = "onnx")]
            Engine::Onnx(model) => Ok(Arc::clone(model) as Arc<dyn Embedder>),
            Engine::Embed(model) => Ok(Arc::clone(model)),
            Engine::Text(_) => Err(wrong_kind(&self.file, ModelKind::Embedding)),
        }
    }

    /// Marks the model used at `now` (requests that use it, never polling).
    pub fn touch(&self, now: Instant) {
        let mut last = lock(&self.last_used);
        *last = (*last).max(now);
    }

    pub(super) fn idle(&self, now: Instant) -> Duration {
        now.saturating_duration_since(*lock(&self.last_used))
    }

    /// Whether it stays loaded however long it is idle.
    pub fn keeps_loaded(&self) -> bool {
        self.keep_loaded.load(Ordering::Relaxed)
    }

    /// Keeps it loaded however long it is idle (or not).
    pub fn set_keep_loaded(&self, on: bool) {
        self.keep_loaded.store(on, Ordering::Relaxed);
    }

    /// How ListLoadedModels shows it.
    pub fn describe(&self, now: Instant) -> LoadedModel {
        LoadedModel {
            model: self.file.id.clone(),
            format: self.file.format,
            kind: self.file.kind,
            context_size: matches!(self.engine, Engine::Text(_))
                .then(|| self.text().map(|t| t.context_size()).unwrap_or(0)),
            memory_bytes: self.memory_bytes,
            idle_seconds: self.idle(now).as_secs(),
            parallel: self.text().ok().map(|t| t.parallel()),
            slots: self.text().map(|t| t.slots()).unwrap_or_default(),
            keep_loaded: self.keeps_loaded(),
        }
    }
}

pub(super) fn wrong_kind(file: &ModelFile, wanted: ModelKind) -> ApiError {
    let what = match file.kind {
        ModelKind::Chat => "a chat model",
        ModelKind::Embedding => "an embedding model",
        ModelKind::Rerank => "a rerank model",
    };
    let need = match wanted {
        ModelKind::Chat => "a GGUF chat model",
        _ => "an ONNX embedding model",
    };
    ApiError::invalid(format!("{} is {what}; this request needs {need}", file.id))
}
