//! GGUF chat and generation through llama.cpp (llama-cpp-2).
//!
//! A loaded model owns one llama.cpp context for its whole life, on a thread
//! of its own that serves `parallel` requests at once ([`slots`]: a
//! continuous-batching loop over one KV cache the slots share). A request
//! tokenizes on its caller's thread, hands its tokens to the model's thread
//! and gets its tokens back one by one, so that the caller's callback (the
//! client's stream) runs where it did; it stops within a step of its cancel
//! flag, waiting or running.
//!
//! The context borrows the model; `self_cell` keeps the two together without
//! unsafe code in this crate.

use std::num::NonZeroU32;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

mod prompt;
mod sampling;
pub mod slots;

use super::manager::Progress;
use super::text::{Generation, Piece, SamplingConfig, TemplateInput, TextModel};
use crate::api::{FinishReason, SlotStatus};
use crate::error::ApiError;
use crate::jobs::lock;
use prompt::PromptTemplate;
use slots::{Batcher, Board, Event, Submission};

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
    /// Generations that run at once (slots).
    pub parallel: u32,
    /// A generation at the context's end shifts (else it stops, `length`).
    pub context_shift: bool,
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

/// The context of a model with `parallel` slots reading prompts `batch`
/// tokens a step: what tabagent loads, and what the bench's direct batched
/// loop uses.
pub fn slots_context_params(
    context_size: u32,
    threads: u32,
    batch: u32,
    parallel: u32,
) -> LlamaContextParams {
    context_params(context_size, threads)
        // A step holds a prompt chunk and a token per slot.
        .with_n_batch(batch.max(1) + parallel)
        .with_n_seq_max(parallel)
        // One KV cache for all slots: one long conversation may still use
        // the whole context.
        .with_kv_unified(true)
}

self_cell::self_cell!(
    /// The model and its context, kept together.
    struct Loaded {
        owner: Arc<LlamaModel>,
        #[covariant]
        dependent: Session,
    }
);

/// A context (its KV cache holds every slot's sequence).
struct Session<'model> {
    context: LlamaContext<'model>,
}

/// A GGUF model ready to generate.
pub struct LlamaTextModel {
    model: Arc<LlamaModel>,
    /// The file's name, for errors.
    name: String,
    template: PromptTemplate,
    context_size: u32,
    parallel: u32,
    /// Requests to the model's thread; None only while dropping.
    inbox: Option<Sender<Submission>>,
    board: Board,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LlamaTextModel {
    /// Loads `path` (already checked to be a whole GGUF file) and starts the
    /// thread that owns its context.
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
        let parallel = options.parallel.max(1);
        let loaded = Loaded::try_new(Arc::clone(&model), |model| {
            let context = model
                .new_context(
                    backend,
                    slots_context_params(
                        options.context_size,
                        options.threads,
                        options.batch_size,
                        parallel,
                    ),
                )
                .map_err(|e| {
                    ApiError::insufficient_memory(format!(
                        "cannot create a {}-token context: {e}",
                        options.context_size
                    ))
                })?;
            Ok::<_, ApiError>(Session { context })
        })?;
        let context_size = loaded.borrow_dependent().context.n_ctx();
        log::info!(
            "loaded {} ({} tokens of context, {parallel} slots, template {template_name})",
            path.display(),
            context_size
        );
        let vocab = model.vocab();
        let eog: Vec<LlamaToken> = (0..vocab.n_tokens())
            .map(LlamaToken)
            .filter(|t| vocab.is_eog(*t))
            .collect();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let board: Board = Arc::new(Mutex::new(slots::idle_board(parallel as usize)));
        let (inbox, requests) = mpsc::channel();
        let thread_board = Arc::clone(&board);
        let budget = options.batch_size.max(1) as usize;
        let thread = std::thread::Builder::new()
            .name(format!("llama-{name}"))
            .spawn(move || {
                let mut loaded = loaded;
                let served = catch_unwind(AssertUnwindSafe(|| {
                    loaded.with_dependent_mut(|model, session| {
                        Batcher::new(
                            model,
                            &mut session.context,
                            &eog,
                            parallel as usize,
                            budget,
                            options.context_shift,
                            thread_board,
                        )
                        .serve(requests);
                    });
                }));
                if let Err(panic) = served {
                    log::error!(
                        "the model's thread panicked: {}",
                        crate::jobs::panic_message(&panic)
                    );
                }
            })
            .map_err(|e| ApiError::internal(format!("cannot start the model's thread: {e}")))?;
        Ok(LlamaTextModel {
            model,
            name,
            template,
            context_size,
            parallel,
            inbox: Some(inbox),
            board,
            thread: Some(thread),
        })
    }

    fn tokens(&self, text: &str, add_special: bool) -> Vec<LlamaToken> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), add_special, true)
    }
}

impl Drop for LlamaTextModel {
    /// Ends the model's thread and waits for it, so that the memory is free
    /// when an unload returns.
    fn drop(&mut self) {
        self.inbox.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
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
        let mut one = self.generate_choices(
            prompt,
            std::slice::from_ref(sampling),
            cancel,
            &mut |_, piece| on_token(piece),
        )?;
        // One choice asked, one answered.
        Ok(one.pop().expect("one generation"))
    }

    fn generate_choices(
        &self,
        prompt: &str,
        choices: &[SamplingConfig],
        cancel: &AtomicBool,
        on_token: &mut dyn FnMut(usize, Piece<'_>) -> bool,
    ) -> Result<Vec<Generation>, ApiError> {
        if choices.is_empty() || choices.len() > self.parallel as usize {
            return Err(ApiError::bad_request(format!(
                "n = {}: {} generates 1 to {} choices at once (its parallel slots)",
                choices.len(),
                self.name,
                self.parallel
            )));
        }
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
        let stop = Arc::new(AtomicBool::new(cancel.load(Ordering::Relaxed)));
        let (events, replies) = mpsc::channel();
        let gone = || ApiError::internal(format!("the thread of {} has stopped", self.name));
        self.inbox
            .as_ref()
            .ok_or_else(gone)?
            .send(Submission {
                tokens,
                choices: choices.to_vec(),
                stop: Arc::clone(&stop),
                events,
            })
            .map_err(|_| gone())?;
        let mut done: Vec<Option<Generation>> = vec![None; choices.len()];
        loop {
            match replies.recv_timeout(CANCEL_POLL) {
                Ok(Event::Token {
                    choice,
                    text,
                    logprob,
                }) => {
                    let piece = Piece {
                        text: &text,
                        logprob: logprob.as_ref(),
                    };
                    if !stop.load(Ordering::Relaxed) && !on_token(choice, piece) {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                Ok(Event::Done { choice, result }) => match result {
                    Ok(mut generation) => {
                        // Stopped by its caller: cancelled, even if the
                        // model had finished meanwhile.
                        if stop.load(Ordering::Relaxed) {
                            generation.finish_reason = FinishReason::Cancelled;
                        }
                        if let Some(place) = done.get_mut(choice) {
                            *place = Some(generation);
                        }
                        if done.iter().all(Option::is_some) {
                            return Ok(done.into_iter().flatten().collect());
                        }
                    }
                    Err(error) => {
                        // The other choices end at the loop's next step.
                        stop.store(true, Ordering::Relaxed);
                        return Err(error);
                    }
                },
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(gone()),
            }
            if cancel.load(Ordering::Relaxed) {
                stop.store(true, Ordering::Relaxed);
            }
        }
    }

    fn parallel(&self) -> u32 {
        self.parallel
    }

    fn slots(&self) -> Vec<SlotStatus> {
        lock(&self.board).clone()
    }
}

/// How often a caller waiting for tokens looks at its cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(20);

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
