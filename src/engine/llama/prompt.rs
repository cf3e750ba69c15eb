//! A chat's prompt: the GGUF's own Jinja template, rendered by minijinja as
//! transformers renders it (tools, tool results, template kwargs), or — only
//! for a GGUF without a template — llama.cpp's built-in template chosen by
//! architecture, which knows roles and text and nothing else.
//!
//! A template that does not compile or render is an error naming the model,
//! never a silent fallback to another template.

use std::time::SystemTime;

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;

use crate::engine::gguf::fallback_template;
use crate::engine::template::{ChatTemplate, RenderRequest, SpecialTokens};
use crate::engine::text::TemplateInput;
use crate::error::ApiError;

/// How a model's chats become prompts.
pub enum PromptTemplate {
    /// The GGUF's own template (or why it cannot be used); one per loaded
    /// model, so the box costs nothing that matters.
    Jinja(Box<Result<ChatTemplate, String>>),
    /// llama.cpp's built-in template of this name.
    Builtin(LlamaChatTemplate, String),
}

impl PromptTemplate {
    /// The model's own template, else the built-in one for `architecture`.
    pub fn choose(model: &LlamaModel, architecture: &str) -> PromptTemplate {
        if let Ok(template) = model.chat_template(None) {
            let special = SpecialTokens {
                bos: token_text(model, model.vocab().bos()),
                eos: token_text(model, model.vocab().eos()),
            };
            let compiled = template
                .to_string()
                .map_err(|_| "the template is not UTF-8".to_string())
                .and_then(|source| ChatTemplate::new(&source, special).map_err(|e| e.to_string()));
            return PromptTemplate::Jinja(Box::new(compiled));
        }
        let name = fallback_template(architecture);
        // Names of llama.cpp's built-in templates have no NUL byte.
        let template = LlamaChatTemplate::new(name).expect("template name has no NUL");
        PromptTemplate::Builtin(template, name.to_string())
    }

    /// `embedded` for the model's own template, else the built-in's name.
    pub fn name(&self) -> &str {
        match self {
            PromptTemplate::Jinja(_) => "embedded",
            PromptTemplate::Builtin(_, name) => name,
        }
    }

    /// The Jinja source, when the model's own template is used.
    pub fn source(&self) -> Option<&str> {
        match self {
            PromptTemplate::Jinja(compiled) => compiled.as_ref().as_ref().ok().map(|t| t.source()),
            PromptTemplate::Builtin(..) => None,
        }
    }

    /// The prompt for `input`, ready for the assistant's turn; `model_name`
    /// names the model in errors.
    pub fn render(
        &self,
        model: &LlamaModel,
        input: &TemplateInput<'_>,
        model_name: &str,
    ) -> Result<String, ApiError> {
        match self {
            PromptTemplate::Jinja(compiled) => {
                let template = compiled.as_ref().as_ref().map_err(|e| {
                    ApiError::internal(format!(
                        "the chat template of {model_name} does not compile: {e}"
                    ))
                })?;
                let prompt = template
                    .render(&RenderRequest {
                        messages: input.messages,
                        tools: input.tools,
                        add_generation_prompt: true,
                        kwargs: input.kwargs,
                        now: SystemTime::now(),
                    })
                    .map_err(|e| {
                        ApiError::bad_request(format!(
                            "the chat template of {model_name} refused the conversation: {e}"
                        ))
                    })?;
                Ok(without_leading_bos(model, prompt))
            }
            PromptTemplate::Builtin(template, name) => {
                builtin(model, template, name, input, model_name)
            }
        }
    }
}

/// llama.cpp's built-in formatting: roles and text only, so tools cannot be
/// shown to the model.
fn builtin(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    name: &str,
    input: &TemplateInput<'_>,
    model_name: &str,
) -> Result<String, ApiError> {
    let tool_turn = input
        .messages
        .iter()
        .any(|m| m.role == "tool" || !m.tool_calls.is_empty());
    if !input.tools.is_empty() || tool_turn {
        return Err(ApiError::bad_request(format!(
            "{model_name} has no chat template of its own (llama.cpp's {name} template is \
             applied), and that one cannot show tools or tool results"
        )));
    }
    let chat = input
        .messages
        .iter()
        .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ApiError::invalid("a message contains a NUL character"))?;
    model
        .apply_chat_template(template, &chat, true)
        .map_err(|e| ApiError::invalid(format!("cannot apply the {name} chat template: {e}")))
}

/// The text of a special token, "" when the vocabulary has none.
fn token_text(model: &LlamaModel, token: LlamaToken) -> String {
    let vocab = model.vocab();
    // llama.cpp throws (and aborts across the FFI) on an id out of range.
    if !(0..vocab.n_tokens()).contains(&token.0) {
        return String::new();
    }
    vocab
        .text(token)
        .map(|text| text.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Templates write `bos_token` themselves, and tokenizing adds one when the
/// model asks for it: drop the template's, as llama.cpp's server does, so
/// the prompt does not start with two.
fn without_leading_bos(model: &LlamaModel, prompt: String) -> String {
    if !model.vocab().should_add_bos() {
        return prompt;
    }
    let bos = token_text(model, model.vocab().bos());
    match prompt.strip_prefix(bos.as_str()) {
        Some(rest) if !bos.is_empty() => rest.to_string(),
        _ => prompt,
    }
}
