//! Text generation as the handler sees it, whatever the backend: the
//! [`TextModel`] trait and sampling settings resolved against the defaults.
//! [`TextStream`] (in `stream.rs`) turns token bytes into UTF-8 deltas and
//! cuts the output at a stop sequence without ever streaming part of one.

use std::sync::atomic::AtomicBool;

mod stream;
pub use stream::TextStream;

use crate::api::{
    ChatMessage, FinishReason, GenerationParams, Sampling, SlotStatus, TokenLogprob, Tool,
};
use crate::error::ApiError;

/// Sampling settings of one request, every field decided.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Nucleus sampling; 1 turns it off.
    pub top_p: f32,
    /// 0 turns it off.
    pub top_k: u32,
    /// 0 turns it off.
    pub min_p: f32,
    /// 1 turns it off.
    pub repeat_penalty: f32,
    /// The random seed.
    pub seed: u32,
    /// Tokens to generate at most.
    pub max_tokens: u32,
    /// Texts that end the generation (not included in the output).
    pub stop: Vec<String>,
    /// OpenAI's penalties on tokens already generated; 0 turns them off.
    pub presence_penalty: f32,
    /// See `presence_penalty`.
    pub frequency_penalty: f32,
    /// Token id and the bias added to its logit.
    pub logit_bias: Vec<(i32, f32)>,
    /// Report logprobs with this many alternatives; None: no logprobs.
    pub logprobs: Option<u32>,
    /// Generate past end-of-sequence, up to `max_tokens`.
    pub ignore_eos: bool,
    /// End-of-sequence is blocked before this many tokens.
    pub min_tokens: u32,
    /// A grammar the output must match.
    pub grammar: Option<Grammar>,
    /// The job this generation serves, shown in the model's slot states.
    pub job: Option<crate::api::JobId>,
}

/// A GBNF grammar (llama.cpp's) with its start rule named `root`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grammar {
    /// The rules.
    pub gbnf: String,
    /// Words that switch the grammar on (a lazy grammar, for tool calls in
    /// free text); empty: it holds from the first token.
    pub triggers: Vec<String>,
}

impl SamplingConfig {
    /// Greedy decoding of at most `max_tokens`, nothing else switched on
    /// (benchmarks and tests).
    pub fn greedy(max_tokens: u32) -> SamplingConfig {
        SamplingConfig {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            seed: 1,
            max_tokens,
            stop: Vec::new(),
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            logprobs: None,
            ignore_eos: false,
            min_tokens: 0,
            grammar: None,
            job: None,
        }
    }

    /// The request's settings over the defaults, validated like SetParams.
    pub fn resolve(
        request: &Sampling,
        defaults: &GenerationParams,
    ) -> Result<SamplingConfig, ApiError> {
        let params = GenerationParams {
            temperature: request.temperature.unwrap_or(defaults.temperature),
            top_p: request.top_p.unwrap_or(defaults.top_p),
            top_k: request.top_k.unwrap_or(defaults.top_k),
            min_p: request.min_p.unwrap_or(defaults.min_p),
            max_tokens: request.max_tokens.unwrap_or(defaults.max_tokens),
            repeat_penalty: request.repeat_penalty.unwrap_or(defaults.repeat_penalty),
            ..defaults.clone()
        };
        // The same limits SetParams enforces, checked by the same function,
        // on the values as sent (before they are rounded to f32).
        crate::params::validate(&params)?;
        let config = SamplingConfig {
            temperature: params.temperature as f32,
            top_p: params.top_p as f32,
            top_k: params.top_k,
            min_p: params.min_p as f32,
            repeat_penalty: params.repeat_penalty as f32,
            seed: request.seed.or(defaults.seed).unwrap_or_else(random_seed),
            max_tokens: params.max_tokens,
            stop: request
                .stop
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            presence_penalty: penalty("presence_penalty", request.presence_penalty)?,
            frequency_penalty: penalty("frequency_penalty", request.frequency_penalty)?,
            logit_bias: logit_bias(request.logit_bias.as_ref())?,
            logprobs: match (request.logprobs, request.top_logprobs) {
                (_, Some(top)) if top > 20 => {
                    return Err(ApiError::out_of_range("top_logprobs", top, "0..=20"));
                }
                (false, Some(_)) => {
                    return Err(ApiError::invalid("top_logprobs needs logprobs: true"));
                }
                (true, top) => Some(top.unwrap_or(0)),
                (false, None) => None,
            },
            ignore_eos: request.ignore_eos,
            min_tokens: request.min_tokens.unwrap_or(0),
            grammar: None,
            job: None,
        };
        if config.stop.len() > 16 {
            return Err(ApiError::invalid("at most 16 stop sequences"));
        }
        Ok(config)
    }
}

/// OpenAI's presence and frequency penalties: -2..=2, 0 when absent.
fn penalty(name: &str, value: Option<f64>) -> Result<f32, ApiError> {
    match value {
        None => Ok(0.0),
        Some(v) if (-2.0..=2.0).contains(&v) => Ok(v as f32),
        Some(v) => Err(ApiError::out_of_range(name, v, "-2..=2")),
    }
}

/// OpenAI's `logit_bias`: token ids (as strings) to biases in -100..=100.
fn logit_bias(
    biases: Option<&std::collections::BTreeMap<String, f64>>,
) -> Result<Vec<(i32, f32)>, ApiError> {
    let Some(biases) = biases else {
        return Ok(Vec::new());
    };
    if biases.len() > 1024 {
        return Err(ApiError::invalid("logit_bias holds at most 1024 tokens"));
    }
    biases
        .iter()
        .map(|(token, bias)| {
            let id = token
                .parse::<i32>()
                .ok()
                .filter(|id| *id >= 0)
                .ok_or_else(|| {
                    ApiError::invalid(format!("logit_bias key {token:?} is not a token id"))
                })?;
            if !(-100.0..=100.0).contains(bias) {
                return Err(ApiError::out_of_range("logit_bias", bias, "-100..=100"));
            }
            Ok((id, *bias as f32))
        })
        .collect()
}

/// A fresh seed from the process's random hasher keys and the clock.
fn random_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish() as u32
}

/// What one generation did.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The text generated (without a stop sequence).
    pub text: String,
    /// Tokens of the prompt.
    pub prompt_tokens: u32,
    /// Of those, tokens whose KV cache was reused from an earlier request.
    pub reused_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// What a chat template renders: the conversation, the tools offered and
/// the template's extra variables.
#[derive(Debug, Clone, Copy)]
pub struct TemplateInput<'a> {
    /// The conversation so far.
    pub messages: &'a [ChatMessage],
    /// Tools the model may call.
    pub tools: &'a [Tool],
    /// Extra template variables (`enable_thinking`, ...).
    pub kwargs: &'a serde_json::Map<String, serde_json::Value>,
}

impl<'a> TemplateInput<'a> {
    /// A plain conversation: no tools, no extra variables.
    pub fn plain(messages: &'a [ChatMessage]) -> TemplateInput<'a> {
        static NO_KWARGS: std::sync::OnceLock<serde_json::Map<String, serde_json::Value>> =
            std::sync::OnceLock::new();
        TemplateInput {
            messages,
            tools: &[],
            kwargs: NO_KWARGS.get_or_init(serde_json::Map::new),
        }
    }
}

/// One generated token as the caller sees it.
#[derive(Debug, Clone, Copy)]
pub struct Piece<'a> {
    /// The text it makes visible ("" when it shows nothing yet).
    pub text: &'a str,
    /// Its log probability, when the request asked.
    pub logprob: Option<&'a TokenLogprob>,
}

/// A loaded chat model (GGUF through llama.cpp, or a fake in tests).
pub trait TextModel: Send + Sync {
    /// Context size in tokens of the loaded context.
    fn context_size(&self) -> u32;
    /// The chat template applied: `embedded` or a fallback's name.
    fn template_name(&self) -> &str;
    /// The source of the model's own Jinja template, when that is the one
    /// applied (tool-call and reasoning formats are read from it).
    fn template_source(&self) -> Option<&str>;
    /// The conversation as a prompt, ready for the assistant's turn.
    fn apply_template(&self, input: &TemplateInput<'_>) -> Result<String, ApiError>;
    /// llama.cpp's GBNF for a JSON schema (already checked by
    /// `structured::check_schema`).
    fn schema_grammar(&self, schema: &serde_json::Value) -> Result<String, ApiError>;
    /// Token ids of `text`.
    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<i32>, ApiError>;
    /// Text of token ids.
    fn detokenize(&self, tokens: &[i32]) -> Result<String, ApiError>;
    /// Generates from `prompt`, handing `on_token` the text each token makes
    /// visible: once per token, with "" for a token that shows nothing yet (a
    /// special token, half a character, a possible stop sequence held back),
    /// so the caller can check on its client. False stops the generation, as
    /// does `cancel`, within one token.
    fn generate(
        &self,
        prompt: &str,
        sampling: &SamplingConfig,
        cancel: &AtomicBool,
        on_token: &mut dyn FnMut(Piece<'_>) -> bool,
    ) -> Result<Generation, ApiError>;
    /// Generates one choice per entry of `choices` from one prompt (the
    /// prompt read once where the backend can), telling `on_token` each
    /// token's choice. An error of any choice ends them all.
    fn generate_choices(
        &self,
        prompt: &str,
        choices: &[SamplingConfig],
        cancel: &AtomicBool,
        on_token: &mut dyn FnMut(usize, Piece<'_>) -> bool,
    ) -> Result<Vec<Generation>, ApiError> {
        choices
            .iter()
            .enumerate()
            .map(|(i, sampling)| self.generate(prompt, sampling, cancel, &mut |p| on_token(i, p)))
            .collect()
    }
    /// Generations that run at once; more wait (cancellably) for a slot.
    fn parallel(&self) -> u32 {
        1
    }
    /// What each generation slot is doing (empty: the model has none to show).
    fn slots(&self) -> Vec<SlotStatus> {
        Vec::new()
    }
}

#[cfg(test)]
pub mod fake {
    //! A [`TextModel`] without a model: words from a fixed list, one per
    //! token, for handler and manager tests.

    use super::*;
    use std::sync::atomic::Ordering;

    /// Echoes a fixed reply word by word.
    pub struct FakeTextModel {
        /// The reply, one token per word.
        pub reply: Vec<String>,
        /// Pause per token, to let tests cancel mid-way.
        pub token_delay: std::time::Duration,
    }

    impl TextModel for FakeTextModel {
        fn context_size(&self) -> u32 {
            256
        }
        fn template_name(&self) -> &str {
            "fake"
        }
        fn template_source(&self) -> Option<&str> {
            None
        }
        fn apply_template(&self, input: &TemplateInput<'_>) -> Result<String, ApiError> {
            Ok(input
                .messages
                .iter()
                .map(|m| format!("{}: {}\n", m.role, m.content))
                .collect())
        }
        fn schema_grammar(&self, _schema: &serde_json::Value) -> Result<String, ApiError> {
            Ok("root ::= [^\\x00]*".into())
        }
        fn tokenize(&self, text: &str, _add_special: bool) -> Result<Vec<i32>, ApiError> {
            Ok(text.split_whitespace().map(|w| w.len() as i32).collect())
        }
        fn detokenize(&self, tokens: &[i32]) -> Result<String, ApiError> {
            Ok(tokens.iter().map(|t| "x".repeat(*t as usize)).collect())
        }
        fn generate(
            &self,
            prompt: &str,
            sampling: &SamplingConfig,
            cancel: &AtomicBool,
            on_token: &mut dyn FnMut(Piece<'_>) -> bool,
        ) -> Result<Generation, ApiError> {
            let mut on_text = |text: &str| {
                on_token(Piece {
                    text,
                    logprob: None,
                })
            };
            let mut stream = TextStream::new(&sampling.stop);
            let mut finish = FinishReason::Length;
            let mut completion = 0;
            for word in self.reply.iter().take(sampling.max_tokens as usize) {
                if cancel.load(Ordering::Relaxed) {
                    finish = FinishReason::Cancelled;
                    break;
                }
                std::thread::sleep(self.token_delay);
                completion += 1;
                let delta = stream.push(word.as_bytes()).to_string();
                if !on_text(&delta) {
                    finish = FinishReason::Cancelled;
                    break;
                }
                if stream.stopped() {
                    finish = FinishReason::Stop;
                    break;
                }
            }
            if completion == self.reply.len() as u32 && finish == FinishReason::Length {
                finish = FinishReason::Stop;
            }
            if finish != FinishReason::Cancelled {
                let rest = stream.finish().to_string();
                if !rest.is_empty() {
                    on_text(&rest);
                }
            }
            Ok(Generation {
                text: stream.into_text(),
                prompt_tokens: self.tokenize(prompt, true)?.len() as u32,
                reused_tokens: 0,
                completion_tokens: completion,
                finish_reason: finish,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_settings_override_defaults_and_are_checked() {
        let defaults = GenerationParams::default();
        let request = Sampling {
            temperature: Some(0.0),
            seed: Some(7),
            ..Default::default()
        };
        let config = SamplingConfig::resolve(&request, &defaults).unwrap();
        assert_eq!((config.temperature, config.seed), (0.0, 7));
        assert_eq!(config.max_tokens, defaults.max_tokens);
        let bad = Sampling {
            top_p: Some(0.0),
            ..Default::default()
        };
        assert_eq!(
            SamplingConfig::resolve(&bad, &defaults).unwrap_err().status,
            422
        );
    }
}
