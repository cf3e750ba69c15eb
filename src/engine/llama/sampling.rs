//! Picking each token: the request's sampler chain, its grammar, its logit
//! biases and end-of-sequence rules, and the log probabilities it asked for.
//!
//! A plain request samples inside llama.cpp (`llama_sampler_sample`), as
//! before. A request with a grammar, biases, a `min_tokens`, `ignore_eos` or
//! logprobs gets the candidates as an array here: the biases are written into
//! the logits, the chain picks a token, and only when the grammar refuses that
//! one token is the grammar applied to the whole vocabulary and the chain run
//! again — llama.cpp's own order in `common_sampler_sample`, which keeps a
//! grammar from costing a pass over the vocabulary for every token.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;

use crate::api::{TokenLogprob, TopLogprob};
use crate::engine::text::SamplingConfig;
use crate::error::ApiError;

/// How the tokens of one generation are chosen.
pub struct TokenSampler {
    chain: LlamaSampler,
    grammar: Option<LlamaSampler>,
    /// Additive biases on logits (OpenAI's `logit_bias`).
    biases: Vec<(usize, f32)>,
    /// End-of-generation tokens, blocked while `min_tokens` is not reached.
    eog: Vec<LlamaToken>,
    ignore_eos: bool,
    min_tokens: u32,
    /// Alternatives to report per token; None: no logprobs.
    top_logprobs: Option<u32>,
    /// Where the output's UTF-8 stands (checked only under a grammar).
    utf8: Utf8Tail,
}

/// A sampled token and, when asked, its log probability.
pub struct Sampled {
    /// The token.
    pub token: LlamaToken,
    /// Its log probability and the likeliest alternatives.
    pub logprob: Option<TokenLogprob>,
}

impl TokenSampler {
    /// The sampler of one request; `eog` lists the model's end tokens.
    pub fn new(
        model: &LlamaModel,
        sampling: &SamplingConfig,
        eog: &[LlamaToken],
    ) -> Result<TokenSampler, ApiError> {
        let grammar = match &sampling.grammar {
            None => None,
            Some(grammar) => Some(grammar_sampler(model, grammar)?),
        };
        let n_vocab = usize::try_from(model.n_vocab()).unwrap_or(0);
        let biases = sampling
            .logit_bias
            .iter()
            .map(|&(token, bias)| {
                usize::try_from(token)
                    .ok()
                    .filter(|t| *t < n_vocab)
                    .map(|t| (t, bias))
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "logit_bias names token {token}, not in the vocabulary (0..{n_vocab})"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(TokenSampler {
            chain: super::sampler_chain(model, sampling),
            grammar,
            biases,
            eog: eog.to_vec(),
            ignore_eos: sampling.ignore_eos,
            min_tokens: sampling.min_tokens,
            top_logprobs: sampling.logprobs,
            utf8: Utf8Tail::default(),
        })
    }

    /// Picks the next token from the logits of batch entry `idx`, given how
    /// many tokens were generated before it; the chain and the grammar
    /// accept it. Errs when the grammar has no way to go on.
    pub fn sample(
        &mut self,
        context: &LlamaContext<'_>,
        model: &LlamaModel,
        idx: i32,
        generated: u32,
    ) -> Result<Sampled, ApiError> {
        let block_eog = self.ignore_eos || generated < self.min_tokens;
        let plain = self.grammar.is_none() && self.biases.is_empty() && !block_eog;
        if plain && self.top_logprobs.is_none() {
            // The fast path: llama.cpp samples and accepts in one call.
            let token = self.chain.sample(context, idx);
            return Ok(Sampled {
                token,
                logprob: None,
            });
        }
        let eog: &[LlamaToken] = if block_eog { &self.eog } else { &[] };
        let mut candidates = biased_candidates(context, idx, &self.biases, eog);
        let logprob = self
            .top_logprobs
            .map(|top| (log_softmax(&candidates.data), top));
        self.chain.apply(&mut candidates);
        let mut token = selected(&candidates)?;
        if self.grammar.is_some() {
            token = self.grammar_choice(context, model, idx, block_eog, token)?;
        }
        self.chain.accept(token);
        let logprob = logprob.map(|(logprobs, top)| describe(model, &logprobs, token, top));
        Ok(Sampled { token, logprob })
    }
}

impl TokenSampler {
    /// The chain's `first` pick when the grammar takes it, else the chain's
    /// pick among the tokens the grammar allows; the grammar accepts it.
    /// Never a token whose bytes would break the text's UTF-8: llama.cpp's
    /// grammar lets an invalid byte sequence through as if it were empty,
    /// so a byte-fallback token could slip garbage past a `maxLength`.
    fn grammar_choice(
        &mut self,
        context: &LlamaContext<'_>,
        model: &LlamaModel,
        idx: i32,
        block_eog: bool,
        first: LlamaToken,
    ) -> Result<LlamaToken, ApiError> {
        let grammar = self
            .grammar
            .as_mut()
            .ok_or_else(|| ApiError::internal("no grammar"))?;
        let accepted = |token: LlamaToken, grammar: &mut LlamaSampler| {
            grammar
                .try_accept(token)
                .map_err(|e| ApiError::invalid(format!("the grammar allows no next token: {e}")))
        };
        // The usual case: the chain's pick keeps the UTF-8 whole and the
        // grammar takes it.
        if let Some(tail) = self.utf8.after(&piece(model, first)) {
            let mut single =
                LlamaTokenDataArray::new(vec![LlamaTokenData::new(first, 1.0, 0.0)], false);
            grammar.apply(&mut single);
            if single.data[0].logit() != f32::NEG_INFINITY {
                accepted(first, grammar)?;
                self.utf8.pending = tail;
                return Ok(first);
            }
        }
        // Else the chain picks among what the grammar allows.
        let blocked = if block_eog { &self.eog[..] } else { &[] };
        let mut candidates = biased_candidates(context, idx, &self.biases, blocked);
        grammar.apply(&mut candidates);
        let mut picked = candidates.clone();
        self.chain.apply(&mut picked);
        let mut token = selected(&picked)?;
        if self.utf8.after(&piece(model, token)).is_none() {
            // Rare: the pick breaks the UTF-8, which the grammar lets through
            // as if empty. Drop every such token, then pick again.
            for entry in &mut candidates.data {
                if entry.logit() != f32::NEG_INFINITY
                    && self.utf8.after(&piece(model, entry.id())).is_none()
                {
                    entry.set_logit(f32::NEG_INFINITY);
                }
            }
            if candidates
                .data
                .iter()
                .all(|entry| entry.logit() == f32::NEG_INFINITY)
            {
                return Err(ApiError::invalid(
                    "the grammar allows no next token that keeps the text valid UTF-8",
                ));
            }
            self.chain.apply(&mut candidates);
            token = selected(&candidates)?;
        }
        let tail = self.utf8.after(&piece(model, token)).ok_or_else(|| {
            ApiError::internal("the sampler chose a token that breaks the text's UTF-8")
        })?;
        accepted(token, grammar)?;
        self.utf8.pending = tail;
        Ok(token)
    }
}

/// The bytes of the text's last, unfinished character.
#[derive(Default)]
struct Utf8Tail {
    pending: Vec<u8>,
}

impl Utf8Tail {
    /// The unfinished bytes after `bytes` are appended, or None when they
    /// would make invalid UTF-8.
    fn after(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut joined = self.pending.clone();
        joined.extend_from_slice(bytes);
        match std::str::from_utf8(&joined) {
            Ok(_) => Some(Vec::new()),
            Err(e) if e.error_len().is_none() => Some(joined[e.valid_up_to()..].to_vec()),
            Err(_) => None,
        }
    }
}

/// A token's bytes as the output shows them (special tokens: none).
fn piece(model: &LlamaModel, token: LlamaToken) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16);
    model
        .vocab()
        .token_to_piece_into(token, &mut bytes, false, None);
    bytes
}

/// The logits of entry `idx` with `biases` added and the `blocked` tokens
/// made impossible.
fn biased_candidates(
    context: &LlamaContext<'_>,
    idx: i32,
    biases: &[(usize, f32)],
    blocked: &[LlamaToken],
) -> LlamaTokenDataArray {
    // candidates_ith yields token i at index i, and biases hold ids < n_vocab.
    let mut candidates = LlamaTokenDataArray::from_iter(context.candidates_ith(idx), false);
    for &(token, bias) in biases {
        let entry = &mut candidates.data[token];
        entry.set_logit(entry.logit() + bias);
    }
    for token in blocked {
        if let Some(entry) = usize::try_from(token.0)
            .ok()
            .and_then(|t| candidates.data.get_mut(t))
        {
            entry.set_logit(f32::NEG_INFINITY);
        }
    }
    candidates
}

fn selected(candidates: &LlamaTokenDataArray) -> Result<LlamaToken, ApiError> {
    candidates
        .selected_token()
        .ok_or_else(|| ApiError::internal("the sampler chose no token"))
}

/// A grammar sampler: lazy (waiting for a trigger word) when triggers are given.
fn grammar_sampler(
    model: &LlamaModel,
    grammar: &crate::engine::text::Grammar,
) -> Result<LlamaSampler, ApiError> {
    let made = if grammar.triggers.is_empty() {
        LlamaSampler::grammar(model, &grammar.gbnf, "root")
    } else {
        LlamaSampler::grammar_lazy(model, &grammar.gbnf, "root", &grammar.triggers, &[])
    };
    made.map_err(|e| ApiError::invalid(format!("the grammar does not parse: {e}")))
}

/// Natural log probabilities of every candidate, in token order.
fn log_softmax(data: &[LlamaTokenData]) -> Vec<f32> {
    let max = data
        .iter()
        .map(LlamaTokenData::logit)
        .fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = data.iter().map(|d| (d.logit() - max).exp()).sum();
    let log_sum = max + sum.ln();
    data.iter().map(|d| d.logit() - log_sum).collect()
}

/// The chosen token's logprob and the `top` likeliest tokens, as OpenAI
/// reports them.
fn describe(model: &LlamaModel, logprobs: &[f32], token: LlamaToken, top: u32) -> TokenLogprob {
    let entry = |token: LlamaToken| {
        let bytes = piece(model, token);
        let logprob = usize::try_from(token.0)
            .ok()
            .and_then(|t| logprobs.get(t))
            .copied()
            .unwrap_or(f32::NEG_INFINITY);
        (String::from_utf8_lossy(&bytes).into_owned(), logprob, bytes)
    };
    let mut ranked: Vec<usize> = (0..logprobs.len()).collect();
    let top = (top as usize).min(ranked.len());
    if top > 0 {
        ranked.select_nth_unstable_by(top - 1, |a, b| logprobs[*b].total_cmp(&logprobs[*a]));
        ranked.truncate(top);
        ranked.sort_by(|a, b| logprobs[*b].total_cmp(&logprobs[*a]));
    } else {
        ranked.clear();
    }
    let (text, logprob, bytes) = entry(token);
    TokenLogprob {
        token: text,
        logprob,
        bytes,
        top_logprobs: ranked
            .into_iter()
            .map(|t| {
                let (token, logprob, bytes) = entry(LlamaToken(t as i32));
                TopLogprob {
                    token,
                    logprob,
                    bytes,
                }
            })
            .collect(),
    }
}
