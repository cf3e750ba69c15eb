//! Model lifecycle requests: LoadModel, UnloadModel, ListLoadedModels,
//! SelectModel, ModelInfo, EstimateMemory and CheckCompatibility. The
//! [`crate::engine::manager::ModelManager`] holds the state; these build the
//! replies. Anything that reads the disk runs on the I/O lane, loading on the
//! model lane; ListLoadedModels is answered inline (it is polling).

use std::sync::Arc;
use std::time::Instant;

use super::chat::load_options;
use super::{Handler, Outcome};
use crate::api::{
    Compatibility, LoadModelRequest, LoadedModels, ModelDetails, ModelFormat, ModelKind, ModelRef,
    ModelSizingRequest, Response, SelectModelRequest,
};
use crate::engine::Embedder;
use crate::engine::gguf::fallback_template;
use crate::engine::limits::{LoadBounds, LoadSettings};
use crate::engine::manager::{ModelManager, UnloadReason, gguf_facts};
use crate::error::ApiError;
use crate::jobs::{Job, Lane};

impl Handler {
    /// The model manager (shared with jobs).
    pub fn models(&self) -> &Arc<ModelManager> {
        &self.models
    }

    /// The embedding model named (or the selected one), loaded; call it
    /// inside a job, as loading takes time.
    pub fn embedder(&self, model: Option<&str>) -> Result<Arc<dyn Embedder>, ApiError> {
        let file = self.models.resolve(ModelKind::Embedding, model)?;
        let options = load_options(&self.params.get());
        self.models
            .acquire(&file, options, false, Instant::now())?
            .embedder()
    }

    /// Settings out of what the machine allows are a 422 before any job;
    /// those out of what the model allows, once its header is read in the
    /// job, still before llama.cpp sees them.
    pub(super) fn load_model(&self, request: LoadModelRequest, now: Instant) -> Outcome {
        let asked = LoadSettings {
            context_size: request.context_size,
            threads: request.threads,
            batch_size: request.batch_size,
            gpu_layers: request.gpu_layers,
            parallel: request.parallel,
        };
        if let Err(error) = asked.check(&LoadBounds::machine()) {
            return Outcome::Reply(Response::error(error));
        }
        let models = Arc::clone(&self.models);
        let defaults = load_options(&self.params.get());
        Outcome::Job(Job::new(Lane::Model, move |_| {
            let file = models.find(&request.model)?;
            let options = models.fit(&file, defaults, &asked)?;
            let resident = models.acquire(&file, options, true, now)?;
            if let Some(on) = request.keep_loaded {
                resident.set_keep_loaded(on);
            }
            Ok(Response::ModelLoaded(resident.describe(now)))
        }))
    }

    pub(super) fn unload_model(&self, request: ModelRef) -> Outcome {
        let models = Arc::clone(&self.models);
        Outcome::Job(Job::new(Lane::Io, move |_| {
            if !models.unload(&request.model, UnloadReason::Requested) {
                models.find(&request.model)?;
            }
            Ok(Response::ModelUnloaded(request))
        }))
    }

    pub(super) fn list_loaded(&self, now: Instant) -> Response {
        Response::LoadedModels(LoadedModels {
            models: self
                .models
                .loaded()
                .iter()
                .map(|r| r.describe(now))
                .collect(),
        })
    }

    pub(super) fn select_model(&self, request: SelectModelRequest) -> Outcome {
        let models = Arc::clone(&self.models);
        Outcome::Job(Job::new(Lane::Io, move |_| {
            models
                .select(request.task, &request.model)
                .map(Response::ModelSelected)
        }))
    }

    pub(super) fn model_info(&self, request: ModelRef) -> Outcome {
        if let Some(relayed) = self.upstream_model_info(&request.model) {
            return relayed;
        }
        let models = Arc::clone(&self.models);
        Outcome::Job(Job::new(Lane::Io, move |_| {
            let file = models.find(&request.model)?;
            let resident = models.resident(&file.id);
            let mut details = ModelDetails {
                model: file.id.clone(),
                format: file.format,
                kind: file.kind,
                size_bytes: file.size_bytes,
                loaded: resident.is_some(),
                path: file.path.display().to_string(),
                architecture: None,
                context_length: None,
                context_source: None,
                parameter_count: None,
                quantization: None,
                has_chat_template: None,
                chat_template: None,
                finetune: None,
                instruct: None,
                embedding_dimensions: None,
                upstream: None,
                upstreams: Vec::new(),
                parallel: resident
                    .as_ref()
                    .and_then(|r| r.text().ok())
                    .map(|t| t.parallel()),
            };
            match file.format {
                ModelFormat::Gguf => {
                    let facts = gguf_facts(&file)?;
                    let loaded_template = resident
                        .as_ref()
                        .and_then(|r| r.text().ok())
                        .map(|t| t.template_name().to_string());
                    details.chat_template = Some(loaded_template.unwrap_or_else(|| {
                        match (&facts.chat_template, &facts.architecture) {
                            (Some(_), _) => "embedded".into(),
                            (None, arch) => fallback_template(arch.as_deref().unwrap_or("")).into(),
                        }
                    }));
                    details.has_chat_template = Some(facts.chat_template.is_some());
                    details.instruct =
                        Some(facts.chat_template.is_some() || facts.finetune.is_some());
                    details.finetune = facts.finetune;
                    details.context_length = facts.context_length;
                    details.parameter_count = Some(facts.parameter_count);
                    details.quantization = facts.quantization;
                    details.architecture = facts.architecture;
                }
                ModelFormat::Onnx => {
                    details.embedding_dimensions = resident
                        .and_then(|r| r.embedder().ok())
                        .map(|e| e.dimensions() as u64)
                        .or_else(|| declared_dimensions(&file.path));
                }
                ModelFormat::Upstream => {}
            }
            Ok(Response::ModelDetails(Box::new(details)))
        }))
    }

    pub(super) fn estimate_memory(&self, request: ModelSizingRequest) -> Outcome {
        let models = Arc::clone(&self.models);
        let context = request
            .context_size
            .unwrap_or(self.params.get().context_size);
        Outcome::Job(Job::new(Lane::Io, move |_| {
            let file = models.find(&request.model)?;
            models
                .estimate(&file, context)
                .map(Response::MemoryEstimate)
        }))
    }

    pub(super) fn check_compatibility(&self, request: ModelSizingRequest) -> Outcome {
        let models = Arc::clone(&self.models);
        let context = request
            .context_size
            .unwrap_or(self.params.get().context_size);
        Outcome::Job(Job::new(Lane::Io, move |_| {
            let file = models.find(&request.model)?;
            let estimate = models.estimate(&file, context)?;
            let budget = models.budget()?;
            let available = budget.saturating_sub(models.held_bytes(&file.id));
            let mut reasons = Vec::new();
            let mut compatible = true;
            let mib = |b: u64| b.div_ceil(1 << 20);
            if estimate.total_bytes > budget {
                compatible = false;
                reasons.push(format!(
                    "needs about {} MiB; the memory budget is {} MiB",
                    mib(estimate.total_bytes),
                    mib(budget)
                ));
            } else if estimate.total_bytes > available {
                reasons.push(format!(
                    "needs about {} MiB with {} MiB free: idle models will be unloaded to make room",
                    mib(estimate.total_bytes),
                    mib(available)
                ));
            }
            let enabled = match file.format {
                ModelFormat::Gguf => cfg!(feature = "llama"),
                ModelFormat::Onnx => cfg!(feature = "onnx"),
                ModelFormat::Upstream => true,
            };
            if !enabled {
                compatible = false;
                reasons.push(format!(
                    "{:?} models are not enabled in this build",
                    file.format
                ));
            }
            let features = crate::system::cpu_features();
            if cfg!(target_arch = "x86_64") && !features.iter().any(|f| f == "avx2") {
                reasons.push("the CPU has no AVX2: inference will be slow".into());
            }
            Ok(Response::Compatibility(Compatibility {
                model: file.id,
                compatible,
                required_bytes: estimate.total_bytes,
                available_bytes: available,
                reasons,
            }))
        }))
    }
}

/// `dimensions` declared in an ONNX model's `tabagent.json`.
fn declared_dimensions(folder: &std::path::Path) -> Option<u64> {
    let bytes = std::fs::read(folder.join("tabagent.json")).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value
        .get("dimensions")
        .or_else(|| value.get("dimension"))
        .and_then(|v| v.as_u64())
}
