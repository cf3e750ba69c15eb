//! Chat, generation and token requests and their replies.

use serde::{Deserialize, Serialize};

use super::{JobId, RequestId};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text of the turn.
    pub content: String,
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
    /// Sampling settings.
    #[serde(flatten)]
    pub sampling: Sampling,
}

fn yes() -> bool {
    true
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
#[derive(Debug, Clone, Serialize)]
pub struct ChatChunk {
    /// The text generated since the previous chunk.
    pub delta: String,
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
}

/// The final message of a chat or generation.
#[derive(Debug, Clone, Serialize)]
pub struct ChatComplete {
    /// The model that answered.
    pub model: String,
    /// The whole generated text.
    pub text: String,
    /// Token counts.
    pub usage: Usage,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// The session the turn was stored in (Responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
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
