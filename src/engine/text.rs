//! Text generation as the handler sees it, whatever the backend: the
//! [`TextModel`] trait, sampling settings resolved against the defaults, and
//! [`TextStream`], which turns token bytes into UTF-8 deltas and cuts the
//! output at a stop sequence without ever streaming part of one.

use std::sync::atomic::AtomicBool;

use crate::api::{ChatMessage, FinishReason, GenerationParams, Sampling};
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
}

impl SamplingConfig {
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
        };
        if config.stop.len() > 16 {
            return Err(ApiError::invalid("at most 16 stop sequences"));
        }
        Ok(config)
    }
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
    /// Of those, tokens whose KV cache was reused from the previous request.
    pub reused_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// A loaded chat model (GGUF through llama.cpp, or a fake in tests).
pub trait TextModel: Send + Sync {
    /// Context size in tokens of the loaded context.
    fn context_size(&self) -> u32;
    /// The chat template applied: `embedded` or a fallback's name.
    fn template_name(&self) -> &str;
    /// The conversation as a prompt, ready for the assistant's turn.
    fn apply_template(&self, messages: &[ChatMessage]) -> Result<String, ApiError>;
    /// Token ids of `text`.
    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<i32>, ApiError>;
    /// Text of token ids.
    fn detokenize(&self, tokens: &[i32]) -> Result<String, ApiError>;
    /// Generates from `prompt`, handing `on_text` the text each token makes
    /// visible: once per token, with "" for a token that shows nothing yet (a
    /// special token, half a character, a possible stop sequence held back),
    /// so the caller can check on its client. False stops the generation, as
    /// does `cancel`, within one token.
    fn generate(
        &self,
        prompt: &str,
        sampling: &SamplingConfig,
        cancel: &AtomicBool,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation, ApiError>;
}

/// Turns token bytes into text deltas: holds back an incomplete UTF-8
/// character and any tail that may be the start of a stop sequence.
#[derive(Debug, Default)]
pub struct TextStream {
    stop: Vec<String>,
    pending: Vec<u8>,
    text: String,
    sent: usize,
    stopped: bool,
}

impl TextStream {
    /// A stream that ends at the first of `stop`.
    pub fn new(stop: &[String]) -> TextStream {
        TextStream {
            stop: stop.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..TextStream::default()
        }
    }

    /// Adds one token's bytes; returns the text that may be shown now.
    pub fn push(&mut self, bytes: &[u8]) -> &str {
        if self.stopped {
            return "";
        }
        self.pending.extend_from_slice(bytes);
        self.decode_pending(false);
        let from = self.sent;
        let longest = self.stop.iter().map(String::len).max().unwrap_or(0);
        let mut search = from.saturating_sub(longest);
        while !self.text.is_char_boundary(search) {
            search -= 1;
        }
        let found = self
            .stop
            .iter()
            .filter_map(|s| self.text[search..].find(s.as_str()).map(|at| search + at))
            .min();
        if let Some(at) = found {
            self.text.truncate(at.max(from));
            self.stopped = true;
            self.pending.clear();
            self.sent = self.text.len();
            return &self.text[from.min(self.sent)..];
        }
        let hold = self.held_back();
        let until = (self.text.len() - hold).max(from);
        self.sent = until;
        &self.text[from..until]
    }

    /// Whether a stop sequence was seen.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The text still held back, at the end of the generation.
    pub fn finish(&mut self) -> &str {
        if !self.stopped {
            self.decode_pending(true);
        }
        let from = self.sent;
        self.sent = self.text.len();
        &self.text[from..]
    }

    /// Everything generated so far (up to a stop sequence).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The whole text, consuming the stream.
    pub fn into_text(self) -> String {
        self.text
    }

    fn decode_pending(&mut self, at_end: bool) {
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    self.text.push_str(text);
                    self.pending.clear();
                    return;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // valid_up_to is a char boundary by definition.
                    self.text
                        .push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or(""));
                    match e.error_len() {
                        Some(bad) => {
                            self.text.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                        None if at_end => {
                            self.text.push('\u{FFFD}');
                            self.pending.clear();
                            return;
                        }
                        None => {
                            self.pending.drain(..valid);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Bytes at the end of the text that begin some stop sequence.
    fn held_back(&self) -> usize {
        let text = self.text.as_bytes();
        self.stop
            .iter()
            .flat_map(|stop| {
                let stop = stop.as_bytes();
                (1..stop.len().min(text.len() + 1))
                    .rev()
                    .find(|&k| text.ends_with(&stop[..k]))
            })
            .max()
            .map(|k| {
                let mut at = self.text.len() - k;
                while !self.text.is_char_boundary(at) {
                    at -= 1;
                }
                self.text.len() - at
            })
            .unwrap_or(0)
            .min(self.text.len() - self.sent.min(self.text.len()))
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
        fn apply_template(&self, messages: &[ChatMessage]) -> Result<String, ApiError> {
            Ok(messages
                .iter()
                .map(|m| format!("{}: {}\n", m.role, m.content))
                .collect())
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
            on_text: &mut dyn FnMut(&str) -> bool,
        ) -> Result<Generation, ApiError> {
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

    fn run(stop: &[&str], pieces: &[&[u8]]) -> (Vec<String>, String, bool) {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let mut stream = TextStream::new(&stop);
        let mut deltas = Vec::new();
        for piece in pieces {
            deltas.push(stream.push(piece).to_string());
        }
        deltas.push(stream.finish().to_string());
        let stopped = stream.stopped();
        (deltas, stream.into_text(), stopped)
    }

    #[test]
    fn streams_whole_characters_only() {
        let euro = "€".as_bytes();
        let (deltas, text, _) = run(&[], &[b"a", &euro[..1], &euro[1..], b"b"]);
        assert_eq!(deltas, ["a", "", "€", "b", ""]);
        assert_eq!(text, "a€b");
        let (_, text, _) = run(&[], &[b"x\xff", &euro[..2]]);
        assert_eq!(text, "x\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn stops_without_showing_the_stop_sequence() {
        let (deltas, text, stopped) = run(&["END"], &[b"hello E", b"N", b"D more"]);
        assert_eq!(deltas.concat(), "hello ");
        assert_eq!(deltas[0], "hello ", "the E is held back");
        assert_eq!((text.as_str(), stopped), ("hello ", true));
        let (deltas, text, stopped) = run(&["END"], &[b"an E", b"xit"]);
        assert_eq!(deltas, ["an ", "Exit", ""]);
        assert_eq!((text.as_str(), stopped), ("an Exit", false));
        let (deltas, _, _) = run(&["\n\n"], &[b"a\n", b"\nb"]);
        assert_eq!(deltas.concat(), "a");
    }

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
