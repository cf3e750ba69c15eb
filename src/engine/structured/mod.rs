//! Structured output: JSON-schema checks, tool-call grammars and parsing,
//! and reasoning splitting, all pure Rust around llama.cpp's own JSON-schema
//! converter and grammar sampler.
//!
//! How a generation uses it:
//! - `response_format` / `json_schema`: [`schema::check_schema`] first (a 400
//!   naming the keyword), then the converter, then a grammar from the first
//!   token.
//! - Tools: [`tool_calls::detect`] the template's format;
//!   [`grammar::tool_call_schema`] (it checks each tool's parameters) through
//!   the converter; [`grammar::wrap_call_grammar`] gives the sampler's GBNF,
//!   lazy with trigger words unless a call is required.
//! - The output stream: [`reasoning::ThinkSplitter`] first (its reasoning goes
//!   to `reasoning_content`), its content into
//!   [`tool_calls::ToolCallStream`], whose events are content and
//!   tool-call deltas; [`tool_calls::parse`] gives the same for a finished
//!   text.

pub mod grammar;
mod json_scan;
pub mod reasoning;
pub mod schema;
pub mod tool_calls;

pub use reasoning::ThinkSplitter;
pub use tool_calls::{ToolCallStream, ToolFormat};

#[cfg(test)]
mod tests {
    use super::reasoning::ThinkSplitter;
    use super::tool_calls::{StreamEvent, ToolCallStream, ToolFormat};

    /// A reasoning model's streamed call, through both splitters as the
    /// generation loop chains them.
    #[test]
    fn reasoning_then_tool_calls() {
        let tokens = [
            "<think>",
            "The user",
            " wants weather",
            ".</think>",
            "\n\n",
            "<tool_call>",
            "\n{\"name\": \"",
            "weather",
            "\", \"arguments\": {\"city\": ",
            "\"Oslo\"}}",
            "\n</tool_call>",
        ];
        let mut think = ThinkSplitter::new("<think>", "</think>", false);
        let mut calls = ToolCallStream::new(ToolFormat::Hermes, Box::new(|| "call_0".to_string()));
        let (mut reasoning, mut events) = (String::new(), Vec::new());
        for token in tokens {
            let (r, content) = think.push(token);
            reasoning += &r;
            events.extend(calls.push(&content));
        }
        let (r, content) = think.finish();
        reasoning += &r;
        events.extend(calls.push(&content));
        events.extend(calls.finish());
        assert_eq!(reasoning, "The user wants weather.");
        assert!(!events.iter().any(|e| matches!(e, StreamEvent::Content(_))));
        let args: String = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Call(d) => Some(d.arguments.as_str()),
                StreamEvent::Content(_) => None,
            })
            .collect();
        assert_eq!(args, r#"{"city":"Oslo"}"#);
    }
}
