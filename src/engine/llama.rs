//! GGUF chat and generation through llama.cpp (llama-cpp-2).
//!
//! A loaded model owns one llama.cpp context (its KV cache) for its whole
//! life, so a request pays nothing to start: it tokenizes, finds how much of
//! its prompt the cache already holds from the previous request (a follow-up
//! turn of a conversation shares everything but the new messages), decodes
//! only the rest and samples token by token, checking the cancel flag before
//! every token. Requests to the same model take turns at the context
//! ([`Gate`]); a waiting request can still be cancelled.
//!
//! The context borrows the model; `self_cell` keeps the two together without
//! unsafe code in this crate.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

mod prompt;
mod sampling;

use super::manager::Progress;
use super::text::{Generation, Piece, SamplingConfig, TemplateInput, TextModel, TextStream};
use crate::api::FinishReason;
use crate::error::ApiError;
use crate::jobs::lock;
use prompt::PromptTemplate;
use sampling::TokenSampler;

/// How to load a GGUF model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlamaOptions {
    /// Context size in tokens.
    pub context_size: u32,
    /// Threads for prompt and generation.
    pub threads: u32,
    /// Tokens per batch when reading a prompt.
    pub batch_size: u32,
    /// Layers offloaded to a GPU (none in a CPU build).
    pub gpu_layers: u32,
}

/// The llama.cpp backend, started once per process.
pub fn backend() -> Result<&'static LlamaBackend, ApiError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            // llama.cpp logs every tensor at load; keep stderr readable unless asked.
            if !log::log_enabled!(target: "llama.cpp", log::Level::Debug) {
                backend.void_logs();
            }
            Ok(backend)
        })
        .as_ref()
        .map_err(|e| ApiError::internal(format!("cannot start llama.cpp: {e}")))
}

/// The context settings tabagent uses; the bench drives llama.cpp directly
/// with these same settings.
pub fn context_params(context_size: u32, threads: u32) -> LlamaContextParams {
    let threads = i32::try_from(threads.max(1)).unwrap_or(1);
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(context_size.max(64)))
        .with_n_batch(context_size.clamp(64, 2048))
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        // Keep every position of sliding-window layers, so that a cached
        // prefix stays usable whatever its length (prefix reuse).
        .with_swa_full(true)
}

self_cell::self_cell!(
    /// The model and its context, kept together.
    struct Loaded {
        owner: Arc<LlamaModel>,
        #[covariant]
        dependent: Session,
    }
);

/// A context and what its KV cache (sequence 0) holds.
struct Session<'model> {
    context: LlamaContext<'model>,
    cached: Vec<LlamaToken>,
}

/// A GGUF model ready to generate.
pub struct LlamaTextModel {
    model: Arc<LlamaModel>,
    /// The file's name, for errors.
    name: String,
    template: PromptTemplate,
    context_size: u32,
    /// The vocabulary's end-of-generation tokens (for `min_tokens`, `ignore_eos`).
    eog: Vec<LlamaToken>,
    gate: Gate,
    loaded: Mutex<Loaded>,
}

impl LlamaTextModel {
    /// Loads `path` (already checked to be a whole GGUF file).
    pub fn load(
        path: &Path,
        architecture: &str,
        options: LlamaOptions,
        progress: Progress,
    ) -> Result<LlamaTextModel, ApiError> {
        let backend = backend()?;
        let params = LlamaModelParams::default()
            .with_n_gpu_layers(options.gpu_layers)
            .with_progress_callback(move |fraction| {
                progress(fraction);
                true // never abort: a load is cancelled by not asking for it
            });
        let model = LlamaModel::load_from_file(backend, path, &params).map_err(|e| {
            ApiError::invalid(format!(
                "llama.cpp cannot load {}: {e} (an unsupported architecture or a damaged file)",
                path.display()
            ))
        })?;
        let model = Arc::new(model);
        let template = PromptTemplate::choose(&model, architecture);
        if let PromptTemplate::Jinja(compiled) = &template
            && let Err(e) = compiled.as_ref()
        {
            log::warn!(
                "the chat template of {} does not compile: {e}",
                path.display()
            );
        }
        let template_name = template.name().to_string();
        let loaded = Loaded::try_new(Arc::clone(&model), |model| {
            let context = model
                .new_context(
                    backend,
                    context_params(options.context_size, options.threads)
                        .with_n_batch(options.batch_size.max(1)),
                )
                .map_err(|e| {
                    ApiError::insufficient_memory(format!(
                        "cannot create a {}-token context: {e}",
                        options.context_size
                    ))
                })?;
            Ok::<_, ApiError>(Session {
                context,
                cached: Vec::new(),
            })
        })?;
        let context_size = loaded.borrow_dependent().context.n_ctx();
        log::info!(
            "loaded {} ({} tokens of context, template {template_name})",
            path.display(),
            context_size
        );
        let vocab = model.vocab();
        let eog = (0..vocab.n_tokens())
            .map(LlamaToken)
            .filter(|t| vocab.is_eog(*t))
            .collect();
        Ok(LlamaTextModel {
            model,
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            template,
            context_size,
            eog,
            gate: Gate::default(),
            loaded: Mutex::new(loaded),
        })
    }

    fn tokens(&self, text: &str, add_special: bool) -> Vec<LlamaToken> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), add_special, true)
    }
}

impl TextModel for LlamaTextModel {
    fn context_size(&self) -> u32 {
        self.context_size
    }

    fn template_name(&self) -> &str {
        self.template.name()
    }

    fn template_source(&self) -> Option<&str> {
        self.template.source()
    }

    fn apply_template(&self, input: &TemplateInput<'_>) -> Result<String, ApiError> {
        self.template.render(&self.model, input, &self.name)
    }

    fn schema_grammar(&self, schema: &serde_json::Value) -> Result<String, ApiError> {
        llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|e| {
            ApiError::invalid(format!(
                "llama.cpp cannot make a grammar of the schema: {e}"
            ))
        })
    }

    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<i32>, ApiError> {
        Ok(self.tokens(text, add_special).iter().map(|t| t.0).collect())
    }

    fn detokenize(&self, tokens: &[i32]) -> Result<String, ApiError> {
        let vocab = self.model.vocab();
        let n_vocab = vocab.n_tokens();
        if let Some(bad) = tokens.iter().find(|t| !(0..n_vocab).contains(*t)) {
            return Err(ApiError::invalid(format!(
                "token {bad} is not in the vocabulary (0..{n_vocab})"
            )));
        }
        let tokens: Vec<LlamaToken> = tokens.iter().map(|t| LlamaToken(*t)).collect();
        let bytes = vocab.detokenize(&tokens, false, false);
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn generate(
        &self,
        prompt: &str,
        sampling: &SamplingConfig,
        cancel: &AtomicBool,
        on_token: &mut dyn FnMut(Piece<'_>) -> bool,
    ) -> Result<Generation, ApiError> {
        let tokens = self.tokens(prompt, true);
        let n_ctx = self.context_size as usize;
        if tokens.is_empty() {
            return Err(ApiError::invalid("the prompt is empty"));
        }
        if tokens.len() >= n_ctx {
            return Err(ApiError::bad_request(format!(
                "the prompt is {} tokens; the context holds {n_ctx}",
                tokens.len()
            )));
        }
        let Some(_turn) = self.gate.enter(cancel) else {
            return Ok(Generation {
                text: String::new(),
                prompt_tokens: tokens.len() as u32,
                reused_tokens: 0,
                completion_tokens: 0,
                finish_reason: FinishReason::Cancelled,
            });
        };
        let mut sampler = TokenSampler::new(&self.model, sampling, &self.eog)?;
        let mut loaded = lock(&self.loaded);
        loaded.with_dependent_mut(|model, session| {
            let mut generating = Generating {
                sampler: &mut sampler,
                sampling,
                cancel,
                on_token,
            };
            run(model, session, &tokens, &mut generating)
        })
    }
}

/// What one generation brings to the context: its sampler and settings,
/// its cancel flag and where its tokens go.
struct Generating<'a> {
    sampler: &'a mut TokenSampler,
    sampling: &'a SamplingConfig,
    cancel: &'a AtomicBool,
    on_token: &'a mut dyn FnMut(Piece<'_>) -> bool,
}

/// One generation on the session's context.
fn run(
    model: &LlamaModel,
    session: &mut Session<'_>,
    tokens: &[LlamaToken],
    turn: &mut Generating<'_>,
) -> Result<Generation, ApiError> {
    let (sampling, cancel) = (turn.sampling, turn.cancel);
    let n_ctx = session.context.n_ctx() as usize;
    let decode_error = |e: llama_cpp_2::DecodeError| {
        ApiError::internal(format!("llama.cpp could not evaluate the batch: {e}"))
    };
    // Reuse the cached prefix; at least the last prompt token is decoded again
    // for its logits.
    let mut reused = session
        .cached
        .iter()
        .zip(tokens)
        .take_while(|(a, b)| a == b)
        .count()
        .min(tokens.len() - 1);
    if reused < session.cached.len() {
        let removed = session
            .context
            .kv_cache_seq_rm(0, Some(reused as u32), None)
            .is_ok();
        if !removed {
            session.context.clear_kv_cache();
            reused = 0;
        }
        session.cached.truncate(reused);
    }

    let n_batch = (session.context.n_batch() as usize).max(1);
    let mut batch = LlamaBatch::new(n_batch, 1);
    for (chunk_index, chunk) in tokens[reused..].chunks(n_batch).enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Ok(cancelled(tokens.len(), reused, String::new(), 0));
        }
        batch.clear();
        let start = reused + chunk_index * n_batch;
        let last = start + chunk.len() == tokens.len();
        for (i, token) in chunk.iter().enumerate() {
            let logits = last && i + 1 == chunk.len();
            // The batch holds n_batch tokens and a chunk is at most that long.
            batch
                .add(*token, (start + i) as i32, &[0], logits)
                .expect("batch has room");
        }
        if let Err(e) = session.context.decode(&mut batch) {
            session.context.clear_kv_cache();
            session.cached.clear();
            return Err(decode_error(e));
        }
        session.cached.extend_from_slice(chunk);
    }

    let vocab = model.vocab();
    let mut stream = TextStream::new(&sampling.stop);
    let mut piece = Vec::with_capacity(32);
    let mut completion = 0u32;
    let finish = loop {
        if cancel.load(Ordering::Relaxed) {
            break FinishReason::Cancelled;
        }
        if completion >= sampling.max_tokens {
            break FinishReason::Length;
        }
        let sampled = turn
            .sampler
            .sample(&session.context, model, -1, completion)?;
        let token = sampled.token;
        if vocab.is_eog(token) && !sampling.ignore_eos {
            break FinishReason::Stop;
        }
        completion += 1;
        piece.clear();
        vocab.token_to_piece_into(token, &mut piece, false, None);
        let delta = stream.push(&piece);
        let shown = Piece {
            text: delta,
            logprob: sampled.logprob.as_ref(),
        };
        if !(turn.on_token)(shown) {
            break FinishReason::Cancelled;
        }
        if stream.stopped() {
            break FinishReason::Stop;
        }
        let position = session.cached.len();
        if position + 1 >= n_ctx {
            break FinishReason::Length;
        }
        batch.clear();
        // A batch of n_batch >= 1 has room for one token.
        batch
            .add(token, position as i32, &[0], true)
            .expect("batch has room");
        if let Err(e) = session.context.decode(&mut batch) {
            session.context.clear_kv_cache();
            session.cached.clear();
            return Err(decode_error(e));
        }
        session.cached.push(token);
    };
    if finish != FinishReason::Cancelled {
        let rest = stream.finish();
        if !rest.is_empty() {
            (turn.on_token)(Piece {
                text: rest,
                logprob: None,
            });
        }
    }
    Ok(Generation {
        text: stream.into_text(),
        prompt_tokens: tokens.len() as u32,
        reused_tokens: reused as u32,
        completion_tokens: completion,
        finish_reason: finish,
    })
}

fn cancelled(prompt: usize, reused: usize, text: String, completion: u32) -> Generation {
    Generation {
        text,
        prompt_tokens: prompt as u32,
        reused_tokens: reused as u32,
        completion_tokens: completion,
        finish_reason: FinishReason::Cancelled,
    }
}

/// llama.cpp's usual order: penalties, top-k, top-p, min-p, temperature, draw.
pub fn sampler_chain(model: &LlamaModel, sampling: &SamplingConfig) -> LlamaSampler {
    let mut chain = Vec::with_capacity(6);
    if sampling.repeat_penalty != 1.0
        || sampling.frequency_penalty != 0.0
        || sampling.presence_penalty != 0.0
    {
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            64,
            sampling.repeat_penalty,
            sampling.frequency_penalty,
            sampling.presence_penalty,
        ));
    }
    if sampling.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
        return LlamaSampler::chain(chain, true);
    }
    if sampling.top_k > 0 {
        chain.push(LlamaSampler::top_k(
            i32::try_from(sampling.top_k).unwrap_or(i32::MAX),
        ));
    }
    if sampling.top_p < 1.0 {
        chain.push(LlamaSampler::top_p(sampling.top_p, 1));
    }
    if sampling.min_p > 0.0 {
        chain.push(LlamaSampler::min_p(sampling.min_p, 1));
    }
    chain.push(LlamaSampler::temp(sampling.temperature));
    chain.push(LlamaSampler::dist(sampling.seed));
    LlamaSampler::chain(chain, true)
}

/// Turns at a model's context: one request at a time, the others wait
/// (cancellable) in arrival order of the OS's wake-ups.
#[derive(Default)]
struct Gate {
    busy: Mutex<bool>,
    freed: Condvar,
}

struct Turn<'a>(&'a Gate);

impl Gate {
    /// Waits for the context; None when cancelled while waiting.
    fn enter(&self, cancel: &AtomicBool) -> Option<Turn<'_>> {
        let mut busy = lock(&self.busy);
        while *busy {
            if cancel.load(Ordering::Relaxed) {
                return None;
            }
            busy = self
                .freed
                .wait_timeout(busy, Duration::from_millis(20))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *busy = true;
        Some(Turn(self))
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *lock(&self.0.busy) = false;
        self.0.freed.notify_one();
    }
}
