//! The variables a template sees, in the shape transformers and llama-server
//! hand them over: OpenAI-style message and tool objects, keys in a fixed
//! order (they reach the prompt through `tojson` and `.items()`).

use serde_json::{Map, Value};

use crate::api::{ChatMessage, Tool, ToolCall};

/// One message as a template sees it. Keys that do not apply are left out
/// rather than set to null: templates test `'tool_calls' in message` and
/// `message.tool_calls is defined`.
///
/// An assistant turn that only calls tools keeps `content: ""`, as
/// llama-server passes it. transformers would take whatever the caller gave;
/// `None` (OpenAI's wire form) breaks real templates in jinja2 itself
/// (Qwen3's `'</think>' in message.content`, gpt-oss, SmolLM2's `+ content`),
/// while `""` renders the same as `None` wherever `None` works.
pub(super) fn message(m: &ChatMessage) -> Value {
    let mut out = Map::new();
    out.insert("role".into(), Value::String(m.role.clone()));
    out.insert("content".into(), Value::String(m.content.clone()));
    if !m.tool_calls.is_empty() {
        let calls = m.tool_calls.iter().map(tool_call).collect();
        out.insert("tool_calls".into(), Value::Array(calls));
    }
    if let Some(id) = &m.tool_call_id {
        out.insert("tool_call_id".into(), Value::String(id.clone()));
    }
    if let Some(name) = &m.name {
        out.insert("name".into(), Value::String(name.clone()));
    }
    if let Some(reasoning) = &m.reasoning_content {
        out.insert("reasoning_content".into(), Value::String(reasoning.clone()));
    }
    Value::Object(out)
}

/// `{id, type, function: {name, arguments}}` with the arguments parsed:
/// templates write them with `arguments | tojson` or walk `.items()`. Text
/// that is not JSON stays a string (Qwen3 prints a string as it is).
fn tool_call(call: &ToolCall) -> Value {
    let arguments = serde_json::from_str(&call.function.arguments)
        .unwrap_or_else(|_| Value::String(call.function.arguments.clone()));
    let mut function = Map::new();
    function.insert("name".into(), Value::String(call.function.name.clone()));
    function.insert("arguments".into(), arguments);
    let mut out = Map::new();
    out.insert("id".into(), Value::String(call.id.clone()));
    out.insert("type".into(), Value::String(call.kind.clone()));
    out.insert("function".into(), Value::Object(function));
    Value::Object(out)
}

/// `{type, function: {name, description, parameters}}`, what
/// transformers' `get_json_schema` yields and OpenAI clients send; an absent
/// description or schema is left out. `strict` is a request-level switch
/// (the schema is enforced by the grammar), not text for the model.
pub(super) fn tool(t: &Tool) -> Value {
    let mut function = Map::new();
    function.insert("name".into(), Value::String(t.function.name.clone()));
    if let Some(description) = &t.function.description {
        function.insert("description".into(), Value::String(description.clone()));
    }
    if let Some(parameters) = &t.function.parameters {
        function.insert("parameters".into(), parameters.clone());
    }
    let mut out = Map::new();
    out.insert("type".into(), Value::String(t.kind.clone()));
    out.insert("function".into(), Value::Object(function));
    Value::Object(out)
}
