//! OpenAI's Responses API as protocol requests: CreateResponse (what
//! `POST /v1/responses` becomes), GetResponse and DeleteResponse, and the
//! OpenAI `Response` object they answer with.
//!
//! The request keeps OpenAI's own field names and shapes (input items,
//! flat function tools, `text.format`), so a native messaging or WebRTC
//! client sends the same body as an OpenAI client. Shapes that vary per item
//! (`input`, `tools`, `tool_choice`, `text`) arrive as JSON values and are
//! read by the handler, which can then name exactly what it does not
//! support; any field not listed here lands in `unsupported` and is refused
//! by name (never silently dropped).
//!
//! The reply object is OpenAI's `Response` as the official SDK parses it;
//! envelopes carry it under `response`, since the envelope's own `id` is the
//! request's.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// CreateResponse: OpenAI's `POST /v1/responses` body.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateResponseRequest {
    /// The model id; the selected chat model when left out.
    pub model: Option<String>,
    /// A string (one user message) or a list of input items.
    #[serde(default)]
    pub input: Option<Value>,
    /// A system message put first; not carried over to later responses.
    pub instructions: Option<String>,
    /// The stored response this one continues.
    pub previous_response_id: Option<String>,
    /// Store the response for `previous_response_id` and GetResponse (default true).
    pub store: Option<bool>,
    /// Stream events (default false, as OpenAI).
    pub stream: Option<bool>,
    /// Function tools, in the Responses API's flat shape.
    pub tools: Option<Vec<Value>>,
    /// `auto`, `none`, `required` or `{type: function, name}`.
    pub tool_choice: Option<Value>,
    /// Whether one turn may call several tools.
    pub parallel_tool_calls: Option<bool>,
    /// `{format: {type: text | json_object | json_schema, ...}}`.
    pub text: Option<Value>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// The most tokens to generate.
    pub max_output_tokens: Option<u32>,
    /// Up to 16 string pairs, stored and echoed.
    pub metadata: Option<Map<String, Value>>,
    /// The end user's id: echoed, otherwise unused.
    pub user: Option<String>,
    /// Only false: every response runs in the foreground.
    pub background: Option<bool>,
    /// Only empty: no extra output data is implemented.
    pub include: Option<Vec<Value>>,
    /// Only `disabled`: a conversation longer than the context is an error.
    pub truncation: Option<String>,
    /// Every other field of the body, each refused by name.
    #[serde(flatten)]
    pub unsupported: Map<String, Value>,
}

/// Names a stored response (GetResponse, DeleteResponse).
#[derive(Debug, Clone, Deserialize)]
pub struct ResponseRef {
    /// The response's id (`resp_...`).
    pub response_id: String,
    /// Every other field (OpenAI's `include`, `stream`, ...), refused by name.
    #[serde(flatten)]
    pub unsupported: Map<String, Value>,
}

/// An OpenAI `Response` object inside a reply envelope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponseReply {
    /// The whole object.
    pub response: ResponseObject,
}

/// DeleteResponse's reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponseDeleted {
    /// The deleted response's id.
    pub response_id: String,
    /// Always true.
    pub deleted: bool,
}

/// OpenAI's `Response` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseObject {
    /// `resp_` and 32 hex digits.
    pub id: String,
    /// Always `response`.
    pub object: String,
    /// Unix seconds when the request arrived.
    pub created_at: u64,
    /// Where it stands.
    pub status: ResponseStatus,
    /// Unix seconds when it completed (completed responses only).
    pub completed_at: Option<u64>,
    /// Why it failed (failed responses only).
    pub error: Option<ResponseError>,
    /// Why it is incomplete (`max_output_tokens`).
    pub incomplete_details: Option<IncompleteDetails>,
    /// The request's instructions.
    pub instructions: Option<String>,
    /// The request's max_output_tokens.
    pub max_output_tokens: Option<u32>,
    /// The request's metadata (`{}` when none).
    pub metadata: Map<String, Value>,
    /// The model that answered.
    pub model: String,
    /// Reasoning, message and function call items, in that order.
    pub output: Vec<OutputItem>,
    /// The request's parallel_tool_calls (default true).
    pub parallel_tool_calls: bool,
    /// The response this one continues.
    pub previous_response_id: Option<String>,
    /// Whether it is stored.
    pub store: bool,
    /// The request's temperature.
    pub temperature: Option<f64>,
    /// The request's top_p.
    pub top_p: Option<f64>,
    /// The request's text config (`{format: {type: text}}` by default).
    pub text: Value,
    /// The request's tool_choice (`auto` by default).
    pub tool_choice: Value,
    /// The request's tools, as sent.
    pub tools: Vec<Value>,
    /// Always `disabled`.
    pub truncation: String,
    /// Token counts (once generated).
    pub usage: Option<ResponseUsage>,
    /// The request's user.
    pub user: Option<String>,
    /// Always false.
    pub background: bool,
}

/// A response's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    /// Generating.
    InProgress,
    /// Ended by itself.
    Completed,
    /// Cut by `max_output_tokens` or the context.
    Incomplete,
    /// Ended by an error.
    Failed,
    /// Stopped (StopGeneration, or the client went away).
    Cancelled,
}

/// Why a response failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseError {
    /// `server_error` (OpenAI's code for failures on the server's side).
    pub code: String,
    /// What went wrong.
    pub message: String,
}

/// Why a response is incomplete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncompleteDetails {
    /// `max_output_tokens`.
    pub reason: String,
}

/// One output item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    /// The assistant's text.
    Message {
        /// `msg_...`.
        id: String,
        /// Always `assistant`.
        role: String,
        /// Completed, or incomplete when cut.
        status: ItemStatus,
        /// One `output_text` part.
        content: Vec<OutputContent>,
    },
    /// A call of a function tool.
    FunctionCall {
        /// `fc_...`.
        id: String,
        /// The call's id, which a `function_call_output` item echoes.
        call_id: String,
        /// The function's name.
        name: String,
        /// Its arguments: a JSON object, as a string.
        arguments: String,
        /// Completed, or incomplete when cut.
        status: ItemStatus,
    },
    /// The model's reasoning (a `<think>` block).
    Reasoning {
        /// `rs_...`.
        id: String,
        /// Always empty: no summaries are made.
        summary: Vec<Value>,
        /// One `reasoning_text` part.
        content: Vec<OutputContent>,
        /// Completed, or incomplete when cut.
        status: ItemStatus,
    },
}

/// A part of an output item's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputContent {
    /// A message's text.
    OutputText {
        /// The text.
        text: String,
        /// Always empty.
        annotations: Vec<Value>,
        /// Always empty (log probabilities are not offered here).
        logprobs: Vec<Value>,
    },
    /// Reasoning text.
    ReasoningText {
        /// The text.
        text: String,
    },
}

impl OutputContent {
    /// A message's text part.
    pub fn output_text(text: impl Into<String>) -> OutputContent {
        OutputContent::OutputText {
            text: text.into(),
            annotations: Vec::new(),
            logprobs: Vec::new(),
        }
    }

    /// The part's text.
    pub fn text(&self) -> &str {
        match self {
            OutputContent::OutputText { text, .. } | OutputContent::ReasoningText { text } => text,
        }
    }
}

/// An output item's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Being generated.
    InProgress,
    /// Done.
    Completed,
    /// Cut short.
    Incomplete,
}

/// Token counts, as the Responses API names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseUsage {
    /// Tokens of the prompt (the whole rebuilt conversation).
    pub input_tokens: u32,
    /// Of those, the ones reused from the KV cache.
    pub input_tokens_details: InputTokensDetails,
    /// Tokens generated.
    pub output_tokens: u32,
    /// Reasoning tokens are not counted apart (0).
    pub output_tokens_details: OutputTokensDetails,
    /// The sum.
    pub total_tokens: u32,
}

/// Prompt token details.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    /// Prompt tokens whose KV cache was reused (prefix reuse).
    pub cached_tokens: u32,
    /// Always 0: there is no paid cache to write to.
    #[serde(default)]
    pub cache_write_tokens: u32,
}

/// Output token details.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    /// Always 0: reasoning tokens are not counted apart.
    pub reasoning_tokens: u32,
}

/// The kinds of output item, for their ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// `msg_`.
    Message,
    /// `rs_`.
    Reasoning,
    /// `fc_`, numbered by the call's index in the turn.
    FunctionCall(u32),
}

/// An output item's id, made from its response's id: the handler that builds
/// the final object and the HTTP stream that announces items before it agree
/// on every id without passing them around.
pub fn item_id(response_id: &str, kind: ItemKind) -> String {
    let key = response_id.strip_prefix("resp_").unwrap_or(response_id);
    match kind {
        ItemKind::Message => format!("msg_{key}"),
        ItemKind::Reasoning => format!("rs_{key}"),
        ItemKind::FunctionCall(index) => format!("fc_{key}_{index}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Request, parse_request};

    #[test]
    fn unknown_fields_are_kept_to_be_refused() {
        let body =
            br#"{"request_type": "CreateResponse", "input": "hi", "reasoning": {"effort": "low"}}"#;
        let Ok((_, Request::CreateResponse(request))) = parse_request(body) else {
            panic!("parses")
        };
        assert_eq!(request.input, Some(Value::String("hi".into())));
        assert_eq!(
            request.unsupported.keys().collect::<Vec<_>>(),
            ["reasoning"]
        );
        let body = br#"{"request_type": "GetResponse", "response_id": "resp_1", "stream": true}"#;
        let Ok((_, Request::GetResponse(reference))) = parse_request(body) else {
            panic!("parses")
        };
        assert!(reference.unsupported.contains_key("stream"));
    }

    #[test]
    fn item_ids_follow_the_response_id() {
        let id = "resp_00ff";
        assert_eq!(item_id(id, ItemKind::Message), "msg_00ff");
        assert_eq!(item_id(id, ItemKind::FunctionCall(2)), "fc_00ff_2");
    }
}
