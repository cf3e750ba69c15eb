//! Chat, generation and token requests and their replies.

use serde::{Deserialize, Serialize};

use super::{JobId, RequestId, Tool, ToolCall, ToolCallDelta, ToolChoice};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text of the turn (may be empty on an assistant turn that only
    /// calls tools).
    #[serde(default)]
    pub content: String,
    /// The tools an assistant turn called.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// On a `tool` turn: the call this is the result of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// On a `tool` turn: the function's name (some templates show it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// On an assistant turn: its reasoning, shown to templates that keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

impl ChatMessage {
    /// A plain text turn.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            reasoning_content: None,
        }
    }
}

/// What a chat may call and what shape its output must take. Everything
/// here is empty by default: free text, no tools.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Structure {
    /// Tools the model may call.
    #[serde(default)]
    pub tools: Vec<Tool>,
    /// Whether a conversation too long for the context loses its oldest
    /// turns (absent: yes); false makes it a 400 saying by how much.
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Whether and which tool it must call (`auto` when tools are given).
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    /// Whether one turn may call several tools (default true).
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// A JSON schema the output must validate against.
    #[serde(default)]
    pub json_schema: Option<serde_json::Value>,
    /// A raw GBNF grammar (llama.cpp's) the output must match.
    #[serde(default)]
    pub grammar: Option<String>,
    /// False turns a reasoning model's thinking off, where its template
    /// supports that; true or absent leaves the template's default.
    #[serde(default)]
    pub think: Option<bool>,
    /// Extra variables for the chat template (`enable_thinking`, ...).
    #[serde(default)]
    pub chat_template_kwargs: serde_json::Map<String, serde_json::Value>,
}

/// Per-request sampling settings; anything left out comes from GetParams.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the names are llama.cpp's and OpenAI's, documented in openapi.yaml
pub struct Sampling {
    // f64, as JSON's numbers are: an f32 would round a value just outside a
    // bound onto it (and 5e-324 to 0) before the bound is checked.
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub min_p: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub seed: Option<u32>,
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub stop: Vec<String>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// Token id (as a string, OpenAI's shape) to a bias in -100..=100.
    pub logit_bias: Option<std::collections::BTreeMap<String, f64>>,
    /// Report each generated token's log probability.
    #[serde(default)]
    pub logprobs: bool,
    /// And this many most likely alternatives per token (0..=20).
    pub top_logprobs: Option<u32>,
    /// Keep generating past end-of-sequence (benchmarks), up to max_tokens.
    #[serde(default)]
    pub ignore_eos: bool,
    /// End-of-sequence is not taken before this many tokens.
    pub min_tokens: Option<u32>,
    /// Choices to generate from the prompt (1 when left out), at most the
    /// model's parallel slots; each has its own seed (the seed, plus its index).
    pub n: Option<u32>,
}

/// Chat: the model's chat template is applied to `messages`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The model id; the selected chat model when left out.
    pub model: Option<String>,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Stream token chunks (the default) or answer once.
    #[serde(default = "yes")]
    pub stream: bool,
    /// Sampling settings.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// Tools and output constraints.
    #[serde(flatten)]
    pub structure: Structure,
    /// The OpenAI body as an HTTP client sent it (set by the HTTP layer):
    /// relayed as is to an upstream model, which judges its fields.
    #[serde(default)]
    pub openai_body: Option<serde_json::Value>,
    /// Why a local model cannot take that body (a field tabagent does not
    /// implement): the 400 a local model answers; an upstream never sees it.
    #[serde(default)]
    pub unsupported: Option<String>,
    /// Knowledge-base collections to search for the last user message; the
    /// best passages go into the system prompt and the reply's `citations`.
    #[serde(default)]
    pub collections: Vec<String>,
}

/// Generate: a raw prompt, no template.
#[derive(Debug, Clone, Deserialize)]
pub struct GenerateRequest {
    /// The model id; the selected chat model when left out.
    pub model: Option<String>,
    /// The prompt, as is.
    pub prompt: String,
    /// Stream token chunks (the default) or answer once.
    #[serde(default = "yes")]
    pub stream: bool,
    /// Sampling settings.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// A JSON schema the output must validate against.
    #[serde(default)]
    pub json_schema: Option<serde_json::Value>,
    /// A raw GBNF grammar (llama.cpp's) the output must match.
    #[serde(default)]
    pub grammar: Option<String>,
    /// The OpenAI body as an HTTP client sent it (set by the HTTP layer):
    /// relayed as is to an upstream model, which judges its fields.
    #[serde(default)]
    pub openai_body: Option<serde_json::Value>,
    /// Why a local model cannot take that body (a field tabagent does not
    /// implement): the 400 a local model answers; an upstream never sees it.
    #[serde(default)]
    pub unsupported: Option<String>,
}

/// Responses: chat that persists to a session kept by the server.
#[derive(Debug, Clone, Deserialize)]
pub struct ResponsesRequest {
    /// The session the turn belongs to (created on first use).
    pub session_id: String,
    /// The user's new message.
    pub input: String,
    /// A system prompt kept at the head of the conversation.
    pub system: Option<String>,
    /// The model id; the selected chat model when left out.
    pub model: Option<String>,
    /// Stream token chunks (the default) or answer once.
    #[serde(default = "yes")]
    pub stream: bool,
    /// Knowledge-base collections to ground the answer in (as Chat's).
    #[serde(default)]
    pub collections: Vec<String>,
    /// Sampling settings.
    #[serde(flatten)]
    pub sampling: Sampling,
}

fn yes() -> bool {
    true
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Names another request (StopGeneration, GetHaltStatus): by the server's
/// `job_id` (from any connection), or by the client's own `target_id`, which
/// reaches only requests sent on the same connection.
#[derive(Debug, Clone, Deserialize)]
pub struct TargetRequest {
    /// The client id of the request to act on (same connection only).
    #[serde(default)]
    pub target_id: RequestId,
    /// The job id the request's first reply carried.
    #[serde(default)]
    pub job_id: Option<String>,
}

impl TargetRequest {
    /// Names a request by the client's own id.
    pub fn client(target_id: RequestId) -> TargetRequest {
        TargetRequest {
            target_id,
            job_id: None,
        }
    }

    /// Names a job by its server id.
    pub fn job(job_id: JobId) -> TargetRequest {
        TargetRequest {
            target_id: RequestId::NONE,
            job_id: Some(job_id.to_string()),
        }
    }
}

/// Text to split into a model's tokens.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenizeRequest {
    /// The model id; the selected chat model when left out.
    pub model: Option<String>,
    /// The text.
    pub content: String,
    /// Add the model's special tokens (BOS) as a prompt would.
    #[serde(default)]
    pub add_special: bool,
}

/// Tokens to turn back into text.
#[derive(Debug, Clone, Deserialize)]
pub struct DetokenizeRequest {
    /// The model id; the selected chat model when left out.
    pub model: Option<String>,
    /// The token ids.
    pub tokens: Vec<i32>,
}

/// A piece of streamed output.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChatChunk {
    /// The text generated since the previous chunk.
    pub delta: String,
    /// Reasoning (a `<think>` block) generated since the previous chunk.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reasoning: String,
    /// Pieces of tool calls, OpenAI's deltas: the first piece of a call has
    /// its id and name, later ones add to its arguments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta>,
    /// Log probabilities of the tokens behind this chunk (when asked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<TokenLogprob>,
    /// The choice it belongs to (`n` > 1; absent: the first).
    #[serde(skip_serializing_if = "is_zero")]
    pub index: u32,
}

impl ChatChunk {
    /// A chunk of plain text.
    pub fn text(delta: impl Into<String>) -> ChatChunk {
        ChatChunk {
            delta: delta.into(),
            ..ChatChunk::default()
        }
    }
}

/// One generated token's log probability, and the likeliest alternatives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its natural log probability.
    pub logprob: f32,
    /// The token's UTF-8 bytes (a piece may be part of a character).
    pub bytes: Vec<u8>,
    /// The most likely tokens at this position (`top_logprobs` of them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_logprobs: Vec<TopLogprob>,
}

/// An alternative token at one position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Its natural log probability.
    pub logprob: f32,
    /// The token's UTF-8 bytes.
    pub bytes: Vec<u8>,
}

/// Token counts of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Tokens of the prompt (including a reused prefix).
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// The sum of both.
    pub total_tokens: u32,
    /// Of the prompt tokens, those whose KV cache was reused from the
    /// previous request (prefix reuse), so not evaluated again.
    pub cached_tokens: u32,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End of sequence or a stop sequence.
    Stop,
    /// `max_tokens` or the context was reached.
    Length,
    /// StopGeneration or the client went away.
    Cancelled,
    /// The model called tools; their results are awaited.
    ToolCalls,
}

/// One further choice of a request with `n` > 1.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    /// Its index (1 and up; the reply itself is choice 0).
    pub index: u32,
    /// Its text.
    pub text: String,
    /// Its reasoning, when any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// The tools it called.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Its tokens' log probabilities (when asked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<TokenLogprob>,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// The final message of a chat or generation.
#[derive(Debug, Clone, Serialize)]
pub struct ChatComplete {
    /// The model that answered.
    pub model: String,
    /// The whole generated text (without reasoning or tool calls).
    pub text: String,
    /// The reasoning the model produced (a `<think>` block), when any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// The tools the model called.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Log probabilities of every generated token (when asked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<TokenLogprob>,
    /// Messages dropped from the middle of an over-long conversation.
    #[serde(skip_serializing_if = "is_zero")]
    pub trimmed_messages: u32,
    /// The further choices of a request with `n` > 1 (the reply itself is
    /// the first); usage counts all of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// The session the turn was stored in (Responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The upstream that generated it, when the model is relayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The upstream model asked for, when no upstream could answer and the
    /// local `upstream_fallback` model did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_from: Option<String>,
    /// The excerpts a chat with `collections` was given, numbered as cited.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub citations: Vec<super::Citation>,
}

/// Where a request stands (GetHaltStatus, StopGeneration).
#[derive(Debug, Clone, Serialize)]
pub struct HaltStatus {
    /// The request asked about (`null` when it was named by job id).
    pub target_id: RequestId,
    /// The job found, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// `running`, `stopping`, or `unknown` (finished, never seen, or
    /// another connection's).
    pub state: String,
}

impl HaltStatus {
    /// A status naming no job.
    pub fn new(target_id: RequestId, state: &str) -> HaltStatus {
        HaltStatus {
            target_id,
            job_id: None,
            state: state.into(),
        }
    }
}

/// Token ids of a text.
#[derive(Debug, Clone, Serialize)]
pub struct Tokens {
    /// The ids, in order.
    pub tokens: Vec<i32>,
}

/// Text of token ids.
#[derive(Debug, Clone, Serialize)]
pub struct DetokenizedText {
    /// The text.
    pub content: String,
}
