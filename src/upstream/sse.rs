//! An upstream's Server-Sent Events stream, read as it arrives: each
//! `data:` payload of an OpenAI chat or completions stream becomes tabagent
//! [`ChatChunk`]s (one per choice that carries output, with its `index`
//! when `n` > 1), and the pieces add up to each choice's text, reasoning,
//! tool calls and finish reason, and the usage.

use std::io::BufRead;

use serde_json::Value;

use crate::api::{ChatChunk, FinishReason, FunctionCall, ToolCall, ToolCallDelta, Usage};

/// One event of the stream.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// A JSON payload.
    Data(Value),
    /// `data: [DONE]`.
    Done,
    /// The stream ended (the connection closed).
    End,
}

/// Reads the next event; comments, `event:` and `id:` lines are skipped.
pub fn next_event(reader: &mut impl BufRead, line: &mut String) -> std::io::Result<Event> {
    loop {
        line.clear();
        if reader.read_line(line)? == 0 {
            return Ok(Event::End);
        }
        let Some(data) = line.trim_end().strip_prefix("data:") else {
            continue;
        };
        let data = data.trim_start();
        if data == "[DONE]" {
            return Ok(Event::Done);
        }
        if data.is_empty() {
            continue;
        }
        match serde_json::from_str(data) {
            Ok(value) => return Ok(Event::Data(value)),
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("an event is not JSON ({e})"),
                ));
            }
        }
    }
}

/// The most choices of one stream kept (an `index` beyond is ignored).
const MAX_CHOICES: usize = 128;

/// What the stream has said so far of one choice.
#[derive(Debug, Default)]
pub struct Choice {
    /// The text.
    pub text: String,
    /// Reasoning (`reasoning_content`).
    pub reasoning: String,
    /// Tool calls, by index.
    pub tool_calls: Vec<ToolCall>,
    /// Why it ended, once it says.
    pub finish: Option<FinishReason>,
}

/// What the stream has said so far: every choice (`n` > 1), by index.
#[derive(Debug, Default)]
pub struct Assembled {
    /// The choices, by their `index`.
    pub choices: Vec<Choice>,
    /// Token counts, when it reports them.
    pub usage: Option<Usage>,
    /// The model id the upstream named.
    pub model: Option<String>,
}

impl Assembled {
    /// Takes one payload: the chunks to pass on (one per choice that
    /// carries output, each with its `index`), or the upstream's error message.
    pub fn push(&mut self, value: &Value, chat: bool) -> Result<Vec<ChatChunk>, String> {
        if let Some(error) = value.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), String::from);
            return Err(message);
        }
        if let Some(model) = value.get("model").and_then(Value::as_str) {
            self.model.get_or_insert_with(|| model.to_string());
        }
        if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage_of(usage));
        }
        let mut chunks = Vec::new();
        let listed = value.get("choices").and_then(Value::as_array);
        for (position, choice) in listed.into_iter().flatten().enumerate() {
            let index = choice
                .get("index")
                .and_then(Value::as_u64)
                .map_or(position, |i| usize::try_from(i).unwrap_or(usize::MAX));
            if index >= MAX_CHOICES {
                continue;
            }
            while self.choices.len() <= index {
                self.choices.push(Choice::default());
            }
            if let Some(chunk) = self.choices[index].push(choice, chat) {
                chunks.push(ChatChunk {
                    index: index as u32,
                    ..chunk
                });
            }
        }
        Ok(chunks)
    }

    /// Whether every choice said why it ended (and there is one).
    pub fn finished(&self) -> bool {
        !self.choices.is_empty() && self.choices.iter().all(|c| c.finish.is_some())
    }
}

impl Choice {
    /// Takes one choice of a payload: the chunk to pass on, if any.
    fn push(&mut self, choice: &Value, chat: bool) -> Option<ChatChunk> {
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(finish_of(reason));
        }
        let mut chunk = ChatChunk::default();
        if chat {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                chunk.delta = text.to_string();
            }
            if let Some(text) = delta
                .get("reasoning_content")
                .or_else(|| delta.get("reasoning"))
                .and_then(Value::as_str)
            {
                chunk.reasoning = text.to_string();
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                chunk.tool_calls.push(self.call_piece(call));
            }
        } else if let Some(text) = choice.get("text").and_then(Value::as_str) {
            chunk.delta = text.to_string();
        }
        self.text.push_str(&chunk.delta);
        self.reasoning.push_str(&chunk.reasoning);
        let empty =
            chunk.delta.is_empty() && chunk.reasoning.is_empty() && chunk.tool_calls.is_empty();
        (!empty).then_some(chunk)
    }

    /// One piece of a streamed tool call, added to the call it belongs to.
    fn call_piece(&mut self, piece: &Value) -> ToolCallDelta {
        let index = piece
            .get("index")
            .and_then(Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or(0);
        let id = piece.get("id").and_then(Value::as_str).map(String::from);
        let name = piece
            .pointer("/function/name")
            .and_then(Value::as_str)
            .map(String::from);
        let arguments = piece
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let at = index as usize;
        while self.tool_calls.len() <= at.min(255) {
            self.tool_calls.push(ToolCall {
                id: String::new(),
                kind: "function".into(),
                function: FunctionCall {
                    name: String::new(),
                    arguments: String::new(),
                },
            });
        }
        if let Some(call) = self.tool_calls.get_mut(at) {
            if let Some(id) = &id {
                call.id.clone_from(id);
            }
            if let Some(name) = &name {
                call.function.name.push_str(name);
            }
            call.function.arguments.push_str(&arguments);
        }
        ToolCallDelta {
            index,
            id,
            name,
            arguments,
        }
    }
}

/// OpenAI's usage object as tabagent's.
pub fn usage_of(usage: &Value) -> Usage {
    let count = |key: &str| {
        usage
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    };
    let prompt_tokens = count("prompt_tokens");
    let completion_tokens = count("completion_tokens");
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
        cached_tokens: usage
            .pointer("/prompt_tokens_details/cached_tokens")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
    }
}

/// OpenAI's finish reason as tabagent's.
pub fn finish_of(reason: &str) -> FinishReason {
    match reason {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "cancelled" => FinishReason::Cancelled,
        _ => FinishReason::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_chat_stream_adds_up() {
        let stream = "\
: keep-alive\n\n\
data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n\
data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n\
data: [DONE]\n\n";
        let mut reader = std::io::BufReader::new(stream.as_bytes());
        let mut line = String::new();
        let mut all = Assembled::default();
        let mut chunks = Vec::new();
        loop {
            match next_event(&mut reader, &mut line).unwrap() {
                Event::Data(value) => chunks.extend(all.push(&value, true).unwrap()),
                Event::Done => break,
                Event::End => panic!("ended before [DONE]"),
            }
        }
        assert_eq!(chunks.len(), 4);
        let first = &all.choices[0];
        assert_eq!(first.text, "Hello");
        assert_eq!(first.tool_calls[0].id, "c1");
        assert_eq!(first.tool_calls[0].function.arguments, "{\"a\":1}");
        assert_eq!(first.finish, Some(FinishReason::ToolCalls));
        assert!(all.finished());
        assert_eq!(all.usage.unwrap().total_tokens, 7);
        assert_eq!(all.model.as_deref(), Some("m"));
        let error = Assembled::default().push(&json!({"error": {"message": "boom"}}), true);
        assert_eq!(error.unwrap_err(), "boom");
        let mut text = Assembled::default();
        let chunks = text
            .push(
                &json!({"choices": [{"text": "x", "finish_reason": null}]}),
                false,
            )
            .unwrap();
        assert_eq!(chunks[0].delta, "x");
    }

    #[test]
    fn every_choice_of_n_adds_up_by_its_index() {
        let mut all = Assembled::default();
        let chunks = all
            .push(
                &json!({"choices": [{"index": 1, "delta": {"content": "y"}},
                    {"index": 0, "delta": {"content": "x"}}]}),
                true,
            )
            .unwrap();
        assert_eq!(
            chunks
                .iter()
                .map(|c| (c.index, c.delta.as_str()))
                .collect::<Vec<_>>(),
            [(1, "y"), (0, "x")]
        );
        all.push(
            &json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            true,
        )
        .unwrap();
        assert!(!all.finished(), "choice 1 has not ended");
        all.push(&json!({"choices": [{"index": 1, "delta": {"content": "z"}, "finish_reason": "length"}]}), true)
            .unwrap();
        assert!(all.finished());
        assert_eq!(
            (all.choices[0].text.as_str(), all.choices[1].text.as_str()),
            ("x", "yz")
        );
        assert_eq!(all.choices[1].finish, Some(FinishReason::Length));
        let far = all.push(
            &json!({"choices": [{"index": 100000, "delta": {"content": "q"}}]}),
            true,
        );
        assert!(far.unwrap().is_empty(), "an absurd index is ignored");
    }
}
