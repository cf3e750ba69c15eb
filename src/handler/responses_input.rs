//! Reading a CreateResponse: OpenAI's input items, flat function tools,
//! `tool_choice` and `text.format` become chat messages and the chat's
//! [`Structure`]; what tabagent does not implement is a 400 naming it.
//!
//! Every check here is on the request alone (no disk, no model), so a bad
//! request is answered inline, before a job is queued.

use serde_json::{Map, Value, json};

use crate::api::{
    ChatMessage, CreateResponseRequest, FunctionCall, FunctionDefinition, NamedFunction, NamedTool,
    Sampling, Structure, Tool, ToolCall, ToolChoice, ToolMode,
};
use crate::error::ApiError;

/// Metadata bounds, OpenAI's.
const MAX_METADATA: usize = 16;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 512;

/// A checked CreateResponse.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub model: Option<String>,
    /// This request's own turns (without its instructions).
    pub input: Vec<ChatMessage>,
    pub instructions: Option<String>,
    pub previous: Option<String>,
    pub store: bool,
    pub stream: bool,
    pub sampling: Sampling,
    pub structure: Structure,
    /// What the Response object echoes of the request.
    pub echo: Echo,
}

/// The request's settings as the Response object shows them.
#[derive(Debug, Clone)]
pub(super) struct Echo {
    pub tools: Vec<Value>,
    pub tool_choice: Value,
    pub parallel_tool_calls: bool,
    pub text: Value,
    pub metadata: Map<String, Value>,
    pub user: Option<String>,
}

fn bad(detail: impl Into<String>) -> ApiError {
    ApiError::bad_request(detail)
}

impl Plan {
    pub(super) fn check(request: CreateResponseRequest) -> Result<Plan, ApiError> {
        refuse_unsupported(&request)?;
        let input = input_messages(request.input.as_ref())?;
        if input.is_empty() {
            return Err(bad(
                "input is required: a string or a non-empty list of items",
            ));
        }
        let tools = request.tools.unwrap_or_default();
        let structure_tools = tools
            .iter()
            .enumerate()
            .map(|(i, tool)| function_tool(i, tool))
            .collect::<Result<Vec<_>, _>>()?;
        let tool_choice = match &request.tool_choice {
            None | Some(Value::Null) => None,
            Some(choice) => Some(tool_choice(choice, &structure_tools)?),
        };
        let (json_schema, text) = text_format(request.text.as_ref())?;
        check_range("temperature", request.temperature, 0.0, 2.0)?;
        if request.top_p.is_some_and(|p| p <= 0.0) {
            return Err(bad("top_p must be above 0 and at most 1"));
        }
        check_range("top_p", request.top_p, 0.0, 1.0)?;
        if let Some(tokens @ (0 | 1_000_001..)) = request.max_output_tokens {
            return Err(bad(format!(
                "max_output_tokens {tokens} is out of range: allowed 1 to 1000000"
            )));
        }
        let metadata = metadata(request.metadata)?;
        Ok(Plan {
            model: request.model,
            input,
            instructions: request.instructions.filter(|i| !i.is_empty()),
            previous: request.previous_response_id,
            store: request.store.unwrap_or(true),
            stream: request.stream.unwrap_or(false),
            sampling: Sampling {
                temperature: request.temperature,
                top_p: request.top_p,
                max_tokens: request.max_output_tokens,
                ..Sampling::default()
            },
            structure: Structure {
                tools: structure_tools,
                tool_choice,
                parallel_tool_calls: request.parallel_tool_calls,
                json_schema,
                ..Structure::default()
            },
            echo: Echo {
                tools,
                tool_choice: request.tool_choice.unwrap_or_else(|| json!("auto")),
                parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
                text,
                metadata,
                user: request.user,
            },
        })
    }
}

/// OpenAI's bounds, which are narrower than tabagent's own settings'.
fn check_range(name: &str, value: Option<f64>, low: f64, high: f64) -> Result<(), ApiError> {
    match value {
        Some(v) if !(low..=high).contains(&v) => Err(bad(format!(
            "{name} {v} is out of range: allowed {low} to {high}"
        ))),
        _ => Ok(()),
    }
}

/// Fields OpenAI has and tabagent does not implement; null means unset.
fn refuse_unsupported(request: &CreateResponseRequest) -> Result<(), ApiError> {
    let unknown: Vec<&str> = request
        .unsupported
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(key, _)| key.as_str())
        .collect();
    if !unknown.is_empty() {
        return Err(bad(format!(
            "not supported by tabagent's Responses API: {}",
            unknown.join(", ")
        )));
    }
    if request.background == Some(true) {
        return Err(bad(
            "background: true is not supported: responses run in the foreground",
        ));
    }
    if request.include.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err(bad(
            "include is not supported: no extra output data is offered",
        ));
    }
    match request.truncation.as_deref() {
        None | Some("disabled") => Ok(()),
        Some(other) => Err(bad(format!(
            "truncation {other:?} is not supported (only \"disabled\")"
        ))),
    }
}

/// The request's turns: a string is one user message; items become messages.
fn input_messages(input: Option<&Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let items = match input {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(text)) => return Ok(vec![ChatMessage::new("user", text.clone())]),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(bad("input must be a string or a list of input items")),
    };
    let mut out: Vec<ChatMessage> = Vec::new();
    // A reasoning item belongs to the assistant turn after it.
    let mut reasoning: Option<String> = None;
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        let Value::Object(item) = item else {
            return Err(bad(format!("{at} must be an object")));
        };
        let kind = match item.get("type") {
            None | Some(Value::Null) => "message",
            Some(Value::String(kind)) => kind.as_str(),
            Some(_) => return Err(bad(format!("{at}.type must be a string"))),
        };
        match kind {
            "message" => {
                only_keys(
                    item,
                    &at,
                    &["type", "id", "role", "content", "status", "phase"],
                )?;
                let role = match string(item, &at, "role")? {
                    "developer" => "system",
                    role @ ("user" | "system" | "assistant") => role,
                    other => {
                        return Err(bad(format!(
                            "{at}.role {other:?} is not one of user, system, developer, assistant"
                        )));
                    }
                };
                let content = content_text(item.get("content"), &format!("{at}.content"))?;
                let mut message = ChatMessage::new(role, content);
                if role == "assistant" {
                    message.reasoning_content = reasoning.take();
                }
                out.push(message);
            }
            "function_call" => {
                only_keys(
                    item,
                    &at,
                    &["type", "id", "call_id", "name", "arguments", "status"],
                )?;
                let call = ToolCall {
                    id: string(item, &at, "call_id")?.to_string(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: string(item, &at, "name")?.to_string(),
                        arguments: string(item, &at, "arguments")?.to_string(),
                    },
                };
                // Calls right after an assistant turn are that turn's.
                match out.last_mut() {
                    Some(last) if last.role == "assistant" && reasoning.is_none() => {
                        last.tool_calls.push(call)
                    }
                    _ => {
                        let mut message = ChatMessage::new("assistant", "");
                        message.reasoning_content = reasoning.take();
                        message.tool_calls.push(call);
                        out.push(message);
                    }
                }
            }
            "function_call_output" => {
                only_keys(item, &at, &["type", "id", "call_id", "output", "status"])?;
                let call_id = string(item, &at, "call_id")?.to_string();
                let name = out
                    .iter()
                    .flat_map(|m| &m.tool_calls)
                    .find(|c| c.id == call_id)
                    .map(|c| c.function.name.clone());
                let mut message = ChatMessage::new(
                    "tool",
                    content_text(item.get("output"), &format!("{at}.output"))?,
                );
                message.tool_call_id = Some(call_id);
                message.name = name;
                out.push(message);
            }
            "reasoning" => {
                only_keys(
                    item,
                    &at,
                    &[
                        "type",
                        "id",
                        "summary",
                        "content",
                        "status",
                        "encrypted_content",
                    ],
                )?;
                if item.get("encrypted_content").is_some_and(|e| !e.is_null()) {
                    return Err(bad(format!("{at}.encrypted_content is not supported")));
                }
                let text = match item.get("content") {
                    None | Some(Value::Null) => String::new(),
                    content => content_text(content, &format!("{at}.content"))?,
                };
                reasoning = Some(text);
            }
            other => {
                return Err(bad(format!(
                    "{at}: items of type {other:?} are not supported \
                     (message, function_call, function_call_output, reasoning)"
                )));
            }
        }
    }
    Ok(out)
}

/// A string content, or the text of its text parts joined; `at` names it.
fn content_text(content: Option<&Value>, at: &str) -> Result<String, ApiError> {
    let parts = match content {
        Some(Value::String(text)) => return Ok(text.clone()),
        Some(Value::Array(parts)) => parts,
        _ => {
            return Err(bad(format!(
                "{at}.content must be a string or a list of parts"
            )));
        }
    };
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{at}[{j}]");
        let Value::Object(part) = part else {
            return Err(bad(format!("{at} must be an object")));
        };
        let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
        let field = match kind {
            "input_text" | "output_text" | "reasoning_text" | "summary_text" => "text",
            "refusal" => "refusal",
            other => {
                return Err(bad(format!(
                    "{at}: parts of type {other:?} are not supported (text only)"
                )));
            }
        };
        only_keys(part, &at, &["type", field, "annotations", "logprobs"])?;
        text.push_str(string(part, &at, field)?);
    }
    Ok(text)
}

/// The Responses API's flat function tool as tabagent's [`Tool`].
fn function_tool(i: usize, tool: &Value) -> Result<Tool, ApiError> {
    let at = format!("tools[{i}]");
    let Value::Object(tool) = tool else {
        return Err(bad(format!("{at} must be an object")));
    };
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {}
        other => {
            return Err(bad(format!(
                "{at}: tools of type {} are not supported (function only)",
                other.map_or("?".into(), |t| format!("{t:?}"))
            )));
        }
    }
    only_keys(
        tool,
        &at,
        &["type", "name", "description", "parameters", "strict"],
    )?;
    let description = match tool.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => return Err(bad(format!("{at}.description must be a string"))),
    };
    let parameters = match tool.get("parameters") {
        None | Some(Value::Null) => None,
        Some(schema @ Value::Object(_)) => Some(schema.clone()),
        Some(_) => return Err(bad(format!("{at}.parameters must be a JSON schema object"))),
    };
    let strict = match tool.get("strict") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(strict)) => Some(*strict),
        Some(_) => return Err(bad(format!("{at}.strict must be true or false"))),
    };
    Ok(Tool {
        kind: "function".into(),
        function: FunctionDefinition {
            name: string(tool, &at, "name")?.to_string(),
            description,
            parameters,
            strict,
        },
    })
}

fn tool_choice(choice: &Value, tools: &[Tool]) -> Result<ToolChoice, ApiError> {
    let mode = |mode| Ok(ToolChoice::Mode(mode));
    match choice {
        Value::String(text) => match text.as_str() {
            "auto" => mode(ToolMode::Auto),
            "none" => mode(ToolMode::None),
            "required" => mode(ToolMode::Required),
            other => Err(bad(format!(
                "tool_choice {other:?} is not one of auto, none, required"
            ))),
        },
        Value::Object(object) if object.get("type").and_then(Value::as_str) == Some("function") => {
            only_keys(object, "tool_choice", &["type", "name"])?;
            let name = string(object, "tool_choice", "name")?;
            if !tools.iter().any(|t| t.function.name == name) {
                return Err(bad(format!(
                    "tool_choice names the function {name:?}, which is not in tools"
                )));
            }
            Ok(ToolChoice::Named(NamedTool {
                kind: "function".into(),
                function: NamedFunction { name: name.into() },
            }))
        }
        _ => Err(bad(
            "tool_choice must be auto, none, required or {\"type\": \"function\", \"name\"}",
        )),
    }
}

/// `text.format` as the chat's JSON schema, and the text config to echo.
fn text_format(text: Option<&Value>) -> Result<(Option<Value>, Value), ApiError> {
    let plain = json!({"format": {"type": "text"}});
    let config = match text {
        None | Some(Value::Null) => return Ok((None, plain)),
        Some(Value::Object(config)) => config,
        Some(_) => return Err(bad("text must be an object: {\"format\": {...}}")),
    };
    only_keys(config, "text", &["format", "verbosity"])?;
    if config.get("verbosity").is_some_and(|v| !v.is_null()) {
        return Err(bad("text.verbosity is not supported"));
    }
    let format = match config.get("format") {
        None | Some(Value::Null) => return Ok((None, plain)),
        Some(Value::Object(format)) => format,
        Some(_) => return Err(bad("text.format must be an object with a type")),
    };
    let at = "text.format";
    let schema = match format.get("type").and_then(Value::as_str) {
        Some("text") => {
            only_keys(format, at, &["type"])?;
            None
        }
        Some("json_object") => {
            only_keys(format, at, &["type"])?;
            Some(json!({"type": "object"}))
        }
        Some("json_schema") => {
            only_keys(
                format,
                at,
                &["type", "name", "schema", "description", "strict"],
            )?;
            string(format, at, "name")?;
            if !format
                .get("description")
                .is_none_or(|d| d.is_null() || d.is_string())
            {
                return Err(bad("text.format.description must be a string"));
            }
            if !format
                .get("strict")
                .is_none_or(|s| s.is_null() || s.is_boolean())
            {
                return Err(bad("text.format.strict must be true or false"));
            }
            match format.get("schema") {
                Some(schema @ Value::Object(_)) => Some(schema.clone()),
                _ => return Err(bad("text.format.schema must be a JSON schema object")),
            }
        }
        _ => {
            return Err(bad(
                "text.format.type must be one of text, json_object, json_schema",
            ));
        }
    };
    Ok((schema, json!({"format": format})))
}

fn metadata(metadata: Option<Map<String, Value>>) -> Result<Map<String, Value>, ApiError> {
    let metadata = metadata.unwrap_or_default();
    if metadata.len() > MAX_METADATA {
        return Err(bad(format!("metadata holds at most {MAX_METADATA} pairs")));
    }
    for (key, value) in &metadata {
        if key.chars().count() > MAX_METADATA_KEY {
            return Err(bad(format!(
                "metadata keys are at most {MAX_METADATA_KEY} characters long"
            )));
        }
        match value {
            Value::String(text) if text.chars().count() <= MAX_METADATA_VALUE => {}
            _ => {
                return Err(bad(format!(
                    "metadata.{key} must be a string of at most {MAX_METADATA_VALUE} characters"
                )));
            }
        }
    }
    Ok(metadata)
}

/// Refuses keys of `object` other than `allowed`, naming them; nulls count as absent.
fn only_keys(object: &Map<String, Value>, at: &str, allowed: &[&str]) -> Result<(), ApiError> {
    match object
        .iter()
        .find(|(key, value)| !value.is_null() && !allowed.contains(&key.as_str()))
    {
        Some((key, _)) => Err(bad(format!("{at}.{key} is not supported"))),
        None => Ok(()),
    }
}

fn string<'a>(object: &'a Map<String, Value>, at: &str, key: &str) -> Result<&'a str, ApiError> {
    object
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{at}.{key} must be a string")))
}

#[cfg(test)]
mod tests;
