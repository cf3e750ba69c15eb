//! Chat and Generate: find the chat model (loading it on first use), fit
//! the conversation to its context, then generate on the generation lane
//! (`chat_generate`), or relay to the upstream that serves the model.
//!
//! [`ChatRunner`] is the seam other request types use to run a chat inside
//! their own job (session chat in the store): clone it into the job.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::chat_context::fit_conversation;
use super::chat_generate::{choice_count, generate_choices};
use super::chat_output::OutputPlan;
use super::{Handler, Outcome};
use crate::api::{
    ChatComplete, ChatMessage, ChatRequest, GenerateRequest, GenerationParams, ModelKind, Response,
    Sampling, Structure,
};
use crate::engine::limits::usable_cpus;
use crate::engine::manager::{LoadOptions, ModelManager, Resident};
use crate::engine::text::{SamplingConfig, TemplateInput};
use crate::error::ApiError;
use crate::jobs::{Job, JobContext, Lane};
use crate::upstream::Route;
use crate::upstream::relay::{self, Generation};

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
    pub(super) defaults: GenerationParams,
    pub(super) upstreams: Arc<crate::upstream::Upstreams>,
}

impl ChatRunner {
    /// Where a request for `model` is relayed, when an upstream serves it.
    pub fn route(&self, model: Option<&str>) -> Result<Option<Route>, ApiError> {
        self.upstreams
            .route(model, |id| self.models.find(id).is_ok())
            .transpose()
    }

    /// The id of the model that answers `model` (the selected one when
    /// `None`); loads a local model, not an upstream one.
    pub fn model_id(&self, model: Option<&str>) -> Result<String, ApiError> {
        match self.route(model)? {
            Some(route) => Ok(route.requested),
            None => Ok(self.model(model)?.file.id.clone()),
        }
    }

    /// [`ChatRunner::run_chat`], with the OpenAI body an HTTP client sent
    /// (relayed as is to an upstream model).
    #[allow(clippy::too_many_arguments)] // run_chat's, and the body
    pub fn run_chat_body(
        &self,
        ctx: &JobContext,
        model: Option<&str>,
        messages: &[ChatMessage],
        sampling: &Sampling,
        structure: &Structure,
        stream: bool,
        body: Option<serde_json::Value>,
    ) -> Result<ChatComplete, ApiError> {
        if let Some(route) = self.route(model)? {
            return self.relay_chat(ctx, &route, messages, sampling, structure, stream, body);
        }
        self.run_chat(ctx, model, messages, sampling, structure, stream)
    }

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
        if let Some(route) = self.route(model)? {
            return self.relay_chat(ctx, &route, messages, sampling, structure, stream, None);
        }
        let choices = choice_count(sampling)?;
        let mut sampling = SamplingConfig::resolve(sampling, &self.defaults)?;
        let resident = self.model(model)?;
        let text = resident.text()?;
        let plan = OutputPlan::new(text.as_ref(), structure)?;
        let render = |messages: &[ChatMessage]| {
            text.apply_template(&TemplateInput {
                messages: &plan.conversation(messages),
                tools: plan.template_tools(),
                kwargs: &plan.kwargs,
            })
        };
        let fitted = fit_conversation(
            messages,
            sampling.max_tokens,
            structure.truncate != Some(false),
            |messages| {
                let tokens = text.tokenize(&render(messages)?, true)?.len();
                Ok((tokens as u32, text.context_size()))
            },
        )?;
        let prompt = render(&fitted.messages)?;
        sampling.grammar = plan.grammar.clone();
        sampling.job = Some(ctx.job_id());
        let mut complete = generate_choices(
            ctx,
            &resident,
            text.as_ref(),
            &prompt,
            &sampling,
            choices,
            &plan,
            stream,
        )?;
        complete.trimmed_messages = fitted.dropped;
        Ok(complete)
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
        self.run_generate_body(ctx, model, prompt, sampling, structure, stream, None)
    }

    /// [`ChatRunner::run_generate`], with the OpenAI body an HTTP client
    /// sent (relayed as is to an upstream model).
    #[allow(clippy::too_many_arguments)] // run_generate's, and the body
    pub fn run_generate_body(
        &self,
        ctx: &JobContext,
        model: Option<&str>,
        prompt: &str,
        sampling: &Sampling,
        structure: &Structure,
        stream: bool,
        body: Option<serde_json::Value>,
    ) -> Result<ChatComplete, ApiError> {
        if let Some(route) = self.route(model)? {
            let generation = Generation {
                body: body.unwrap_or_else(|| {
                    relay::completion_body(
                        prompt,
                        sampling,
                        structure.json_schema.as_ref(),
                        structure.grammar.as_deref(),
                    )
                }),
                chat: false,
                stream,
            };
            return self.relay(ctx, &route, generation, |local| {
                self.run_generate(ctx, Some(local), prompt, sampling, structure, stream)
            });
        }
        let choices = choice_count(sampling)?;
        let mut sampling = SamplingConfig::resolve(sampling, &self.defaults)?;
        let resident = self.model(model)?;
        let text = resident.text()?;
        let plan = OutputPlan::new(text.as_ref(), structure)?;
        sampling.grammar = plan.grammar.clone();
        sampling.job = Some(ctx.job_id());
        generate_choices(
            ctx,
            &resident,
            text.as_ref(),
            prompt,
            &sampling,
            choices,
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
        if let Some(route) = self.route(model)? {
            return Ok(super::upstream::count_tokens(&route, messages));
        }
        let resident = self.model(model)?;
        let text = resident.text()?;
        let prompt = text.apply_template(&TemplateInput::plain(messages))?;
        Ok(TokenBudget {
            prompt_tokens: text.tokenize(&prompt, true)?.len() as u32,
            context_size: text.context_size(),
        })
    }
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
        // The manager's `parallel` setting (or its default) fills it in.
        parallel: 0,
        // The manager's `context_shift` setting fills it in.
        context_shift: false,
    }
}

impl Handler {
    /// What a job needs to run a chat; clone it into the job.
    pub fn chat_runner(&self) -> ChatRunner {
        ChatRunner {
            models: Arc::clone(&self.models),
            defaults: self.params.get(),
            upstreams: self.upstreams(),
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
        let lane = self.chat_lane(request.model.as_deref());
        if let (Lane::Generate, Some(why)) = (lane, &request.unsupported) {
            return Outcome::Reply(Response::error(ApiError::bad_request(why.clone())));
        }
        let runner = self.chat_runner();
        let grounding = (!request.collections.is_empty()).then(|| {
            (
                Arc::clone(&self.store),
                self.embedder_source(Instant::now()),
            )
        });
        Outcome::Job(Job::new(lane, move |ctx| {
            let (messages, mut citations) = match &grounding {
                Some((slot, source)) => super::grounding::ground(
                    &*slot.get()?,
                    source,
                    &request.collections,
                    &request.messages,
                )?,
                None => (request.messages.clone(), Vec::new()),
            };
            // A grounded chat's messages are not the body the client sent.
            let body = request
                .collections
                .is_empty()
                .then_some(request.openai_body)
                .flatten();
            let mut complete = runner.run_chat_body(
                ctx,
                request.model.as_deref(),
                &messages,
                &request.sampling,
                &request.structure,
                request.stream,
                body,
            )?;
            super::grounding::mark_cited(&complete.text, &mut citations);
            complete.citations = citations;
            Ok(Response::ChatComplete(complete))
        }))
    }

    pub(super) fn generate(&self, request: GenerateRequest) -> Outcome {
        let lane = self.chat_lane(request.model.as_deref());
        if let (Lane::Generate, Some(why)) = (lane, &request.unsupported) {
            return Outcome::Reply(Response::error(ApiError::bad_request(why.clone())));
        }
        let runner = self.chat_runner();
        Outcome::Job(Job::new(lane, move |ctx| {
            runner
                .run_generate_body(
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
                    request.openai_body,
                )
                .map(Response::ChatComplete)
        }))
    }
}
