//! Model management requests and their replies.

use serde::{Deserialize, Serialize};

/// Names a model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelRef {
    /// The model id (file stem of a `.gguf`, folder name of an ONNX model).
    pub model: String,
}

/// Load a model, with optional settings (GGUF; each checked against what
/// the machine and the model allow, see `engine::limits`).
#[derive(Debug, Clone, Deserialize)]
pub struct LoadModelRequest {
    /// The model id.
    pub model: String,
    /// Context size in tokens, at most the model's trained context.
    pub context_size: Option<u32>,
    /// Threads for inference; 0 or absent: the default.
    pub threads: Option<u32>,
    /// Tokens per batch when reading a prompt, at most the context size.
    pub batch_size: Option<u32>,
    /// Layers to offload to a GPU, at most the model's layers + 1.
    pub gpu_layers: Option<u32>,
    /// Generations that run at once (slots); absent: the `parallel` setting.
    pub parallel: Option<u32>,
    /// true: never unload it for idleness (the `keep_alive` setting) until
    /// UnloadModel or a load with false; absent: as it was.
    pub keep_loaded: Option<bool>,
}

/// Download a model.
#[derive(Debug, Clone, Deserialize)]
pub struct PullModelRequest {
    /// `https://...` or `hf://owner/repo/file` (`http://` only from loopback,
    /// with `allow_loopback_pulls`).
    pub url: String,
    /// The id to store it under; derived from the URL when left out.
    pub model: Option<String>,
    /// Expected sha256 (hex); the file is discarded when it differs.
    pub sha256: Option<String>,
    /// Pull without a sha256 (needed for files the catalog does not list).
    #[serde(default)]
    pub allow_unverified: bool,
}

/// Delete a model file.
#[derive(Debug, Clone, Deserialize)]
pub struct DeleteModelRequest {
    /// The model id.
    pub model: String,
    /// Unload it first if it is loaded.
    #[serde(default)]
    pub force: bool,
}

/// Size a model for a context (EstimateMemory, CheckCompatibility).
#[derive(Debug, Clone, Deserialize)]
pub struct ModelSizingRequest {
    /// The model id.
    pub model: String,
    /// Context size in tokens; the configured default when left out.
    pub context_size: Option<u32>,
}

/// Which recipes to list.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RecipesRequest {
    /// `chat`, `embedding` or `rerank`; all when left out.
    pub task: Option<ModelKind>,
}

/// Choose the default model of a task.
#[derive(Debug, Clone, Deserialize)]
pub struct SelectModelRequest {
    /// The task.
    pub task: ModelKind,
    /// The model id.
    pub model: String,
}

/// A model file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// llama.cpp's GGUF.
    Gguf,
    /// An ONNX graph with its tokenizer.json.
    Onnx,
    /// Served by an OpenAI-compatible upstream (`[[upstreams]]`), relayed.
    Upstream,
}

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Chat and generation.
    Chat,
    /// Sentence embeddings.
    Embedding,
    /// Query-document relevance.
    Rerank,
}

/// One model found in the models dir.
#[derive(Debug, Clone, Serialize)]
pub struct ModelEntry {
    /// The model id.
    pub id: String,
    /// Its format.
    pub format: ModelFormat,
    /// What it is for.
    pub kind: ModelKind,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Whether it is in memory now (an upstream's: whether it is healthy).
    pub loaded: bool,
    /// The upstream that serves it, when it is not on this machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

/// ListModels' reply.
#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    /// The models, by id.
    pub models: Vec<ModelEntry>,
}

/// ModelInfo's reply. The id is `model`: a top-level `id` would clash with
/// the reply envelope's request id.
#[derive(Debug, Clone, Serialize)]
pub struct ModelDetails {
    /// The model id.
    pub model: String,
    /// Its format.
    pub format: ModelFormat,
    /// What it is for.
    pub kind: ModelKind,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Whether it is in memory now.
    pub loaded: bool,
    /// The file or folder it lives in.
    pub path: String,
    /// GGUF `general.architecture`.
    pub architecture: Option<String>,
    /// Training context length; for an upstream model, the context it
    /// serves (what `context_source` names).
    pub context_length: Option<u64>,
    /// Where an upstream model's `context_length` comes from: `setting`
    /// (its upstream's `context`), `models` (its `/v1/models` entry, e.g.
    /// vLLM's `max_model_len`), `props` (llama-server's `/props`),
    /// `model_info` (a tabagent upstream's ModelInfo), `n_ctx_train` (the
    /// training context its list gives) or `default` (4096: none said).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_source: Option<crate::upstream::ContextSource>,
    /// Number of parameters.
    pub parameter_count: Option<u64>,
    /// Quantization (file type) name.
    pub quantization: Option<String>,
    /// Whether the GGUF carries its own chat template.
    pub has_chat_template: Option<bool>,
    /// The template tabagent applies: `embedded` (the GGUF's own Jinja
    /// template, rendered by minijinja) or the name of llama.cpp's built-in
    /// template used as a fallback for a GGUF without one.
    pub chat_template: Option<String>,
    /// GGUF `general.finetune` (`Instruct`, ...), absent on a base model.
    pub finetune: Option<String>,
    /// Whether it is tuned to chat (a fine-tune or its own chat template)
    /// rather than a base model that only continues text.
    pub instruct: Option<bool>,
    /// Embedding dimension (ONNX).
    pub embedding_dimensions: Option<u64>,
    /// The upstream that serves it (the first tried), when it is relayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Every upstream that serves it, in the order they are tried.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<String>,
    /// Generations it runs at once, when loaded (GGUF).
    pub parallel: Option<u32>,
}

/// A model now in memory.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedModel {
    /// The model id.
    pub model: String,
    /// Its format.
    pub format: ModelFormat,
    /// What it is for.
    pub kind: ModelKind,
    /// Context size in tokens (GGUF).
    pub context_size: Option<u32>,
    /// Estimated bytes it holds.
    pub memory_bytes: u64,
    /// Seconds since it was last used.
    pub idle_seconds: u64,
    /// Generations it runs at once (GGUF).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel: Option<u32>,
    /// Each slot's state (GGUF).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<SlotStatus>,
    /// Kept loaded however long it is idle (LoadModel's `keep_loaded`).
    pub keep_loaded: bool,
}

/// What a generation slot of a loaded chat model is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotState {
    /// Free; its cache still holds the last conversation's tokens.
    Idle,
    /// Reading a request's prompt.
    Prefill,
    /// Generating a request's reply.
    Generating,
}

/// One generation slot: its state, the job it serves and its tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotStatus {
    /// The slot's number (its llama.cpp sequence).
    pub slot: u32,
    /// What it is doing.
    pub state: SlotState,
    /// The job it serves (absent when idle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<crate::api::JobId>,
    /// Tokens of the prompt it reads or read last.
    pub prompt_tokens: u32,
    /// Tokens generated so far (or by the last request).
    pub generated_tokens: u32,
    /// Tokens its KV cache holds (a later prompt that starts with them skips them).
    pub cached_tokens: u32,
}

/// A loaded chat model's slots, in GetStats.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSlots {
    /// The model id.
    pub model: String,
    /// Its slots.
    pub slots: Vec<SlotStatus>,
}

/// ListLoadedModels' reply.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedModels {
    /// Models in memory.
    pub models: Vec<LoadedModel>,
}

/// Download progress (a chunk; `done: false`).
#[derive(Debug, Clone, Serialize)]
pub struct PullProgress {
    /// The model id being written.
    pub model: String,
    /// Bytes on disk so far (including a resumed part).
    pub downloaded_bytes: u64,
    /// The full size, when the server said it.
    pub total_bytes: Option<u64>,
}

/// A finished download.
#[derive(Debug, Clone, Serialize)]
pub struct PullComplete {
    /// The model id.
    pub model: String,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// sha256 of the file (hex).
    pub sha256: String,
}

/// SelectModel's reply: the default model per task.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Selection {
    /// Default chat model.
    pub chat: Option<String>,
    /// Default embedding model.
    pub embedding: Option<String>,
    /// Default rerank model.
    pub rerank: Option<String>,
}

/// EstimateMemory's reply.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryEstimate {
    /// The model id.
    pub model: String,
    /// Context size the estimate is for.
    pub context_size: u32,
    /// Bytes of weights.
    pub weights_bytes: u64,
    /// Bytes of KV cache for that context.
    pub kv_cache_bytes: u64,
    /// Compute buffers and overhead.
    pub overhead_bytes: u64,
    /// The sum.
    pub total_bytes: u64,
}

/// CheckCompatibility's reply.
#[derive(Debug, Clone, Serialize)]
pub struct Compatibility {
    /// The model id.
    pub model: String,
    /// Whether it will load and run here now.
    pub compatible: bool,
    /// Memory it needs.
    pub required_bytes: u64,
    /// Memory available to it.
    pub available_bytes: u64,
    /// Why not, or warnings.
    pub reasons: Vec<String>,
}

/// A known good setup for a task.
#[derive(Debug, Clone, Serialize)]
pub struct Recipe {
    /// The task.
    pub task: ModelKind,
    /// The model id.
    pub model: String,
    /// What it is good for.
    pub description: String,
    /// Settings that suit it.
    pub settings: serde_json::Value,
}

/// GetRecipes' reply.
#[derive(Debug, Clone, Serialize)]
pub struct Recipes {
    /// The recipes.
    pub recipes: Vec<Recipe>,
}

/// A model tabagent knows how to fetch.
#[derive(Debug, Clone, Serialize)]
pub struct RegisteredModel {
    /// The id it is stored under.
    pub id: String,
    /// Its format.
    pub format: ModelFormat,
    /// What it is for.
    pub kind: ModelKind,
    /// Where it comes from.
    pub source: String,
    /// Bytes.
    pub size_bytes: u64,
    /// sha256 (hex).
    pub sha256: String,
    /// Its license.
    pub license: String,
    /// The files it is made of (an ONNX model is a folder of several), with
    /// their sizes and sha256s; `size_bytes` and `sha256` above are those of
    /// the main file.
    pub files: Vec<RegisteredFile>,
    /// Whether it is in the models dir now.
    pub installed: bool,
}

/// One file of a registered model.
#[derive(Debug, Clone, Serialize)]
pub struct RegisteredFile {
    /// Its path inside the models dir.
    pub path: String,
    /// Bytes.
    pub size_bytes: u64,
    /// sha256 (hex).
    pub sha256: String,
}

/// GetRegisteredModels' reply.
#[derive(Debug, Clone, Serialize)]
pub struct RegisteredModels {
    /// The catalog.
    pub models: Vec<RegisteredModel>,
}
