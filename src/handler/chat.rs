//! Chat, Generate, Tokenize and Detokenize: find the chat model (loading it
//! on first use), then run on the model lane, streaming each piece of text
//! as a `ChatChunk` through the job's context.
//!
//! [`ChatRunner`] is the seam other request types use to run a chat inside
//! their own job (session chat in the store): clone it into the job.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::chat_output::{OutputPlan, OutputShaper};
use super::{Handler, Outcome};
use crate::api::{
    ChatChunk, ChatComplete, ChatMessage, ChatRequest, DetokenizeRequest, DetokenizedText,
    FinishReason, GenerateRequest, GenerationParams, ModelKind, Response, Sampling, Structure,
    TokenizeRequest, Tokens, Usage,
};
use crate::engine::limits::usable_cpus;
use crate::engine::manager::{LoadOptions, ModelManager, Resident};
use crate::engine::text::{Piece, SamplingConfig, TemplateInput, TextModel};
use crate::error::ApiError;
use crate::jobs::{Job, JobContext, Lane};

/// The roles a Chat request's messages may have (openapi.yaml's ChatMessage).
const CHAT_ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// Prompt size against the context, for trimming a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBudget {
    /// Tokens the templated conversation takes.
    pub prompt_tokens: u32,
    /// Tokens the loaded context holds (prompt + reply).
    pub context_size: u32,
}

/// Runs chats and generations inside a job; cheap to clone.
#[derive(Clone)]
pub struct ChatRunner {
    models: Arc<ModelManager>,
    defaults: GenerationParams,
}

impl ChatRunner {
    /// The loaded chat model named (or the selected one), loading it if needed.
    pub fn model(&self, model: Option<&str>) -> Result<Arc<Resident>, ApiError> {
        let file = self.models.resolve(ModelKind::Chat, model)?;
        let options = load_options(&self.defaults);
        self.models.acquire(&file, options, false, Instant::now())
    }

    /// Applies the chat template and generates, streaming `ChatChunk`s
    /// through `ctx` when `stream` is set.
    pub fn run_chat(
        &self,
        ctx: &JobContext,
        model: Option<&str>,
        messages: &[ChatMessage],
        sampling: &Sampling,
        structure: &Structure,
        stream: bool,
    ) -> Result<ChatComplete, ApiError> {
        if messages.is_empty() {
            return Err(ApiError::invalid("messages is empty"));
        }
        let mut sampling = SamplingConfig::resolve(sampling, &self.defaults)?;
        let resident = self.model(model)?;
        let text = resident.text()?;
        let plan = OutputPlan::new(text.as_ref(), structure)?;
        let conversation = plan.conversation(messages);
        let prompt = text.apply_template(&TemplateInput {
            messages: &conversation,
            tools: plan.template_tools(),
            kwargs: &plan.kwargs,
        })?;
        sampling.grammar = plan.grammar.clone();
        run(
            ctx,
            &resident,
            text.as_ref(),
            &prompt,
            &sampling,
            &plan,
            stream,
        )
    }

    /// Generates from a raw prompt (no template).
    pub fn run_generate(
        &self,
        ctx: &JobContext,
        model: Option<&str>,
        prompt: &str,
        sampling: &Sampling,
        structure: &Structure,
        stream: bool,
    ) -> Result<ChatComplete, ApiError> {
        let mut sampling = SamplingConfig::resolve(sampling, &self.defaults)?;
        let resident = self.model(model)?;
        let text = resident.text()?;
        let plan = OutputPlan::new(text.as_ref(), structure)?;
        sampling.grammar = plan.grammar.clone();
        run(
            ctx,
            &resident,
            text.as_ref(),
            prompt,
            &sampling,
            &plan,
            stream,
        )
    }

    /// How many tokens `messages` take with the model's template, and its
    /// context size (loads the model).
    pub fn count_tokens(
        &self,
        model: Option<&str>,
        messages: &[ChatMessage],
    ) -> Result<TokenBudget, ApiError> {
        let resident = self.model(model)?;
        let text = resident.text()?;
        let prompt = text.apply_template(&TemplateInput::plain(messages))?;
        Ok(TokenBudget {
            prompt_tokens: text.tokenize(&prompt, true)?.len() as u32,
            context_size: text.context_size(),
        })
    }
}

fn run(
    ctx: &JobContext,
    resident: &Resident,
    text: &dyn TextModel,
    prompt: &str,
    sampling: &SamplingConfig,
    plan: &OutputPlan,
    stream: bool,
) -> Result<ChatComplete, ApiError> {
    let cancel = ctx.cancel_flag();
    let mut chunks = 0usize;
    let mut shaper = OutputShaper::new(plan, prompt, sampling.logprobs.is_some());
    let mut emit = |chunk: Option<ChatChunk>| match chunk {
        Some(chunk) if stream => {
            chunks += 1;
            ctx.emit(Response::ChatChunk(chunk))
        }
        _ => ctx.client_present(),
    };
    let started = Instant::now();
    let mut first_token = None;
    let mut on_token = |piece: Piece<'_>| {
        first_token.get_or_insert_with(Instant::now);
        emit(shaper.push(piece))
    };
    let generation = text.generate(prompt, sampling, &cancel, &mut on_token);
    let ended = Instant::now();
    resident.touch(ended);
    let generation = generation?;
    crate::metrics::GENERATION.record(
        generation.prompt_tokens,
        generation.completion_tokens,
        first_token.map(|first| first.saturating_duration_since(started)),
        first_token.map_or(Duration::ZERO, |first| {
            ended.saturating_duration_since(first)
        }),
    );
    if generation.finish_reason != FinishReason::Cancelled {
        emit(shaper.finish());
    }
    let (reply, reasoning, tool_calls, logprobs) = shaper.into_parts();
    if stream && chunks == 0 {
        // A streaming client always gets its stream, even for an empty reply.
        ctx.emit(Response::ChatChunk(ChatChunk::text(String::new())));
    }
    log::debug!(
        "{}: {} prompt tokens ({} reused), {} generated, {:?}",
        resident.file.id,
        generation.prompt_tokens,
        generation.reused_tokens,
        generation.completion_tokens,
        generation.finish_reason
    );
    let finish_reason = match generation.finish_reason {
        FinishReason::Stop if !tool_calls.is_empty() => FinishReason::ToolCalls,
        other => other,
    };
    Ok(ChatComplete {
        model: resident.file.id.clone(),
        text: reply,
        usage: Usage {
            prompt_tokens: generation.prompt_tokens,
            completion_tokens: generation.completion_tokens,
            total_tokens: generation.prompt_tokens + generation.completion_tokens,
            cached_tokens: generation.reused_tokens,
        },
        finish_reason,
        session_id: None,
        citations: Vec::new(),
        reasoning,
        tool_calls,
        logprobs,
        trimmed_messages: 0,
    })
}

/// Load settings from the generation defaults (threads 0: one per core).
pub fn load_options(defaults: &GenerationParams) -> LoadOptions {
    // sysinfo reads /proc and /sys for the core count: once per process.
    static CORES: OnceLock<u32> = OnceLock::new();
    let threads = match defaults.threads {
        // Physical cores, but never more than the CPUs this process may run
        // on (a taskset or a cgroup quota), the bound LoadModel checks.
        0 => *CORES.get_or_init(|| {
            let cpus = usable_cpus();
            sysinfo::System::physical_core_count()
                .map_or(cpus, |n| u32::try_from(n).unwrap_or(cpus).clamp(1, cpus))
        }),
        n => n,
    };
    LoadOptions {
        context_size: defaults.context_size,
        threads,
        batch_size: None,
        gpu_layers: 0,
    }
}

impl Handler {
    /// What a job needs to run a chat; clone it into the job.
    pub fn chat_runner(&self) -> ChatRunner {
        ChatRunner {
            models: Arc::clone(&self.models),
            defaults: self.params.get(),
        }
    }

    pub(super) fn chat(&self, request: ChatRequest) -> Outcome {
        // Templates render any role, so a typo would reach the model unnoticed.
        if let Some(message) = request
            .messages
            .iter()
            .find(|m| !CHAT_ROLES.contains(&m.role.as_str()))
        {
            return Outcome::Reply(Response::error(ApiError::invalid(format!(
                "role {:?} is not one of {}",
                message.role,
                CHAT_ROLES.join(", ")
            ))));
        }
        if let Some(call) = request
            .messages
            .iter()
            .flat_map(|m| &m.tool_calls)
            .find(|c| c.kind != "function")
        {
            return Outcome::Reply(Response::error(ApiError::bad_request(format!(
                "tool call {:?} has type {:?}: only function calls are supported",
                call.id, call.kind
            ))));
        }
        if let Err(error) = super::grounding::check(&request.collections) {
            return Outcome::Reply(Response::error(error));
        }
        let runner = self.chat_runner();
        let grounding = (!request.collections.is_empty()).then(|| {
            (
                Arc::clone(&self.store),
                self.embedder_source(Instant::now()),
            )
        });
        Outcome::Job(Job::new(Lane::Model, move |ctx| {
            let (messages, mut citations) = match &grounding {
                Some((slot, source)) => super::grounding::ground(
                    &*slot.get()?,
                    source,
                    &request.collections,
                    &request.messages,
                )?,
                None => (request.messages.clone(), Vec::new()),
            };
            let mut complete = runner.run_chat(
                ctx,
                request.model.as_deref(),
                &messages,
                &request.sampling,
                &request.structure,
                request.stream,
            )?;
            super::grounding::mark_cited(&complete.text, &mut citations);
            complete.citations = citations;
            Ok(Response::ChatComplete(complete))
        }))
    }

    pub(super) fn generate(&self, request: GenerateRequest) -> Outcome {
        let runner = self.chat_runner();
        Outcome::Job(Job::new(Lane::Model, move |ctx| {
            runner
                .run_generate(
                    ctx,
                    request.model.as_deref(),
                    &request.prompt,
                    &request.sampling,
                    &Structure {
                        json_schema: request.json_schema.clone(),
                        grammar: request.grammar.clone(),
                        ..Structure::default()
                    },
                    request.stream,
                )
                .map(Response::ChatComplete)
        }))
    }

    pub(super) fn tokenize(&self, request: TokenizeRequest) -> Outcome {
        self.token_job(request.model.clone(), move |text| {
            Ok(Response::Tokens(Tokens {
                tokens: text.tokenize(&request.content, request.add_special)?,
            }))
        })
    }

    pub(super) fn detokenize(&self, request: DetokenizeRequest) -> Outcome {
        self.token_job(request.model.clone(), move |text| {
            Ok(Response::Text(DetokenizedText {
                content: text.detokenize(&request.tokens)?,
            }))
        })
    }

    /// Tokens need only the vocabulary: with the model loaded this runs on
    /// the I/O lane, not behind a generation on the model lane.
    fn token_job(
        &self,
        model: Option<String>,
        work: impl FnOnce(&dyn TextModel) -> Result<Response, ApiError> + Send + 'static,
    ) -> Outcome {
        let runner = self.chat_runner();
        let loaded = self
            .models
            .resolve(ModelKind::Chat, model.as_deref())
            .map(|file| self.models.is_loaded(&file.id))
            .unwrap_or(false);
        let lane = if loaded { Lane::Io } else { Lane::Model };
        Outcome::Job(Job::new(lane, move |_| {
            let resident = runner.model(model.as_deref())?;
            let text = resident.text()?;
            work(text.as_ref())
        }))
    }
}
