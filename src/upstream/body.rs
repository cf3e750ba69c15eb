//! The OpenAI request bodies sent upstream when the client did not send
//! one (native messaging, WebRTC, tabagent's own routes, histories): built
//! from tabagent's fields, and a client's body less the messages a fitted
//! conversation dropped.

use serde_json::{Map, Value, json};

use crate::api::{ChatMessage, Sampling, Structure};

/// An OpenAI chat body from tabagent's fields (native messaging, WebRTC,
/// `/api/chat`, histories).
pub fn chat_body(messages: &[ChatMessage], sampling: &Sampling, structure: &Structure) -> Value {
    let mut body = sampling_fields(sampling);
    body.insert("messages".into(), json!(messages));
    if !structure.tools.is_empty() {
        body.insert("tools".into(), json!(structure.tools));
    }
    if let Some(choice) = &structure.tool_choice {
        body.insert("tool_choice".into(), json!(choice));
    }
    if let Some(parallel) = structure.parallel_tool_calls {
        body.insert("parallel_tool_calls".into(), json!(parallel));
    }
    if let Some(schema) = &structure.json_schema {
        body.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}),
        );
    }
    if let Some(grammar) = &structure.grammar {
        body.insert("grammar".into(), json!(grammar));
    }
    if !structure.chat_template_kwargs.is_empty() {
        body.insert(
            "chat_template_kwargs".into(),
            Value::Object(structure.chat_template_kwargs.clone()),
        );
    }
    Value::Object(body)
}

/// The client's raw `messages` (`raw`) less the `dropped` ones after the
/// leading system messages of `parsed` (its parsed form), as
/// `fit_conversation` dropped them; `None` when the two do not line up.
pub fn drop_messages(raw: Option<&Value>, parsed: &[ChatMessage], dropped: usize) -> Option<Value> {
    let raw = raw?.as_array()?;
    if raw.len() != parsed.len() {
        return None;
    }
    let head = parsed.iter().take_while(|m| m.role == "system").count();
    let kept: Vec<Value> = raw[..head]
        .iter()
        .chain(raw.get(head + dropped..)?)
        .cloned()
        .collect();
    Some(Value::Array(kept))
}

/// An OpenAI completions body from a raw prompt.
pub fn completion_body(
    prompt: &str,
    sampling: &Sampling,
    json_schema: Option<&Value>,
    grammar: Option<&str>,
) -> Value {
    let mut body = sampling_fields(sampling);
    body.insert("prompt".into(), json!(prompt));
    if let Some(schema) = json_schema {
        body.insert("json_schema".into(), schema.clone());
    }
    if let Some(grammar) = grammar {
        body.insert("grammar".into(), json!(grammar));
    }
    Value::Object(body)
}

/// The sampling settings that were given (llama-server's names for its extras).
fn sampling_fields(sampling: &Sampling) -> Map<String, Value> {
    let Ok(Value::Object(mut fields)) = serde_json::to_value(sampling) else {
        return Map::new();
    };
    fields.retain(|key, value| match (key.as_str(), &*value) {
        (_, Value::Null) => false,
        ("stop", Value::Array(list)) => !list.is_empty(),
        ("logprobs" | "ignore_eos", Value::Bool(on)) => *on,
        _ => true,
    });
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_chats_become_openai_bodies() {
        let sampling = Sampling {
            temperature: Some(0.0),
            max_tokens: Some(5),
            ..Sampling::default()
        };
        let structure = Structure {
            json_schema: Some(json!({"type": "object"})),
            ..Structure::default()
        };
        let body = chat_body(&[ChatMessage::new("user", "hi")], &sampling, &structure);
        assert_eq!(
            body["messages"][0],
            json!({"role": "user", "content": "hi"})
        );
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(body["max_tokens"], 5);
        assert!(body.get("top_p").is_none() && body.get("stop").is_none());
        assert!(body.get("logprobs").is_none());
        assert_eq!(
            body["response_format"]["json_schema"]["schema"]["type"],
            "object"
        );
        let plain = completion_body("x", &Sampling::default(), None, None);
        assert_eq!(plain, json!({"prompt": "x"}));
    }

    #[test]
    fn a_fitted_conversation_drops_the_same_raw_messages() {
        let parsed = [
            ChatMessage::new("system", "s"),
            ChatMessage::new("user", "u1"),
            ChatMessage::new("assistant", "a1"),
            ChatMessage::new("user", "u2"),
        ];
        let raw = json!([
            {"role": "system", "content": "s", "x": 1},
            {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": [{"type": "text", "text": "u2"}]}
        ]);
        let kept = drop_messages(Some(&raw), &parsed, 2).unwrap();
        assert_eq!(kept, json!([raw[0], raw[3]]));
        assert!(drop_messages(Some(&json!([])), &parsed, 2).is_none());
        assert!(drop_messages(Some(&raw), &parsed, 9).is_none());
    }
}
