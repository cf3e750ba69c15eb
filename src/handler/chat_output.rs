//! From a chat request's tools and constraints to what the model must
//! produce, and from the model's token pieces to what the client sees.
//!
//! [`OutputPlan`] is decided before generation: the grammar (a JSON schema,
//! a raw GBNF, or the tool-call grammar — lazy, switched on by the tool-call
//! opener, unless `tool_choice` forces a call from the first token), which
//! tools the template shows, and whether the output may open with reasoning.
//! [`OutputShaper`] then splits the stream: reasoning (`<think>`) into
//! `reasoning`, tool-call markup into `tool_calls` deltas, the rest into text,
//! carrying each token's logprob when asked.

use serde_json::json;

use crate::api::{
    ChatChunk, ChatMessage, FunctionCall, Structure, TokenLogprob, Tool, ToolCall, ToolCallDelta,
    ToolChoice, ToolMode,
};
use crate::engine::structured::{
    self, ThinkSplitter, ToolCallStream, ToolFormat, tool_calls::StreamEvent,
};
use crate::engine::text::{Grammar, Piece, TextModel};
use crate::error::ApiError;

/// Template variables the request itself fills in.
const RESERVED_TEMPLATE_VARIABLES: [&str; 5] = [
    "messages",
    "tools",
    "add_generation_prompt",
    "bos_token",
    "eos_token",
];

/// What a chat's output must look like, decided before it runs.
pub struct OutputPlan {
    /// The grammar the sampler holds the output to.
    pub grammar: Option<Grammar>,
    /// Tools shown to the template (none with `tool_choice: none`).
    pub tools: Vec<Tool>,
    /// The tool-call format parsed out of the output, when tools may be called.
    pub tool_format: Option<ToolFormat>,
    /// Reasoning markers (open, close, whether the prompt already opened one).
    pub think: Option<(String, String, bool)>,
    /// The template's extra variables (with `enable_thinking` from `think`).
    pub kwargs: serde_json::Map<String, serde_json::Value>,
    /// The template has no tool format of its own: tools are described in
    /// the system message and calls written as the generic JSON form.
    generic_tools: bool,
}

impl OutputPlan {
    /// The plan of a request on `model`; a bad combination or a schema the
    /// grammar cannot enforce is a 400 naming it.
    pub fn new(model: &dyn TextModel, structure: &Structure) -> Result<OutputPlan, ApiError> {
        let constraints = [
            structure.json_schema.is_some(),
            structure.grammar.is_some(),
            calls_tools(structure),
        ];
        if constraints.iter().filter(|c| **c).count() > 1 {
            return Err(ApiError::bad_request(
                "json_schema, grammar and tools cannot be combined: pick one constraint",
            ));
        }
        if let Some(reserved) = structure
            .chat_template_kwargs
            .keys()
            .find(|k| RESERVED_TEMPLATE_VARIABLES.contains(&k.as_str()))
        {
            return Err(ApiError::bad_request(format!(
                "chat_template_kwargs may not set `{reserved}`: the request itself provides it"
            )));
        }
        let mut kwargs = structure.chat_template_kwargs.clone();
        // On unless asked off, as llama-server passes it: templates that
        // open the block only when it is set would otherwise answer inside it.
        kwargs
            .entry("enable_thinking")
            .or_insert(serde_json::Value::Bool(structure.think != Some(false)));
        let source = model.template_source();
        let think = match (
            structure.think,
            source.and_then(structured::reasoning::markers),
        ) {
            (Some(false), _) | (_, None) => None,
            (_, Some(markers)) => Some(markers),
        };
        // The template's own tool-call format, read once.
        let format = source.map_or(ToolFormat::Generic, structured::tool_calls::detect);
        let generic_tools = format == ToolFormat::Generic;
        let mut plan = OutputPlan {
            grammar: None,
            tools: Vec::new(),
            tool_format: None,
            think,
            kwargs,
            generic_tools,
        };
        if let Some(schema) = &structure.json_schema {
            structured::schema::check_schema(schema).map_err(ApiError::bad_request)?;
            // The converter's strings allow lone surrogate escapes, which no
            // JSON parser takes.
            let gbnf = model.schema_grammar(schema)?;
            plan.grammar = Some(Grammar {
                gbnf: structured::grammar::without_lone_surrogates(&gbnf),
                triggers: Vec::new(),
            });
        } else if let Some(gbnf) = &structure.grammar {
            plan.grammar = Some(Grammar {
                gbnf: gbnf.clone(),
                triggers: Vec::new(),
            });
        } else if calls_tools(structure) {
            plan.tool_grammar(model, structure, format)?;
        }
        if calls_tools(structure) {
            plan.tools = structure.tools.clone();
        }
        Ok(plan)
    }

    /// The conversation the template renders. A template without a tool
    /// format of its own cannot show tools or calls: for it the tools are
    /// described in the system message, and past calls become the generic
    /// JSON form the grammar makes the model write (llama.cpp's way).
    pub fn conversation(&self, messages: &[ChatMessage]) -> Vec<ChatMessage> {
        let has_calls = messages.iter().any(|m| !m.tool_calls.is_empty());
        if !self.generic_tools || (self.tools.is_empty() && !has_calls) {
            return messages.to_vec();
        }
        let mut out: Vec<ChatMessage> = messages
            .iter()
            .map(|m| {
                if m.tool_calls.is_empty() {
                    return m.clone();
                }
                let calls: Vec<serde_json::Value> = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let arguments = serde_json::from_str(&c.function.arguments)
                            .unwrap_or_else(|_| json!(c.function.arguments));
                        json!({"name": c.function.name, "arguments": arguments})
                    })
                    .collect();
                let mut turn = m.clone();
                turn.content = json!({"tool_calls": calls}).to_string();
                turn.tool_calls.clear();
                turn
            })
            .collect();
        if !self.tools.is_empty() {
            let described: Vec<serde_json::Value> = self
                .tools
                .iter()
                .map(|t| {
                    json!({"name": t.function.name, "description": t.function.description,
                           "parameters": t.function.parameters})
                })
                .collect();
            let instruction = format!(
                "You can call tools. Answer with JSON only: {{\"tool_calls\": [{{\"name\": \
                 ..., \"arguments\": {{...}}}}]}} to call tools, or {{\"response\": \"...\"}} \
                 to answer directly.\nTools: {}",
                serde_json::Value::Array(described)
            );
            match out.first_mut() {
                Some(first) if first.role == "system" => {
                    first.content = format!("{}\n\n{instruction}", first.content);
                }
                _ => out.insert(0, ChatMessage::new("system", instruction)),
            }
        }
        out
    }

    /// The tools the template itself shows (none for the generic form).
    pub fn template_tools(&self) -> &[Tool] {
        if self.generic_tools { &[] } else { &self.tools }
    }

    /// The grammar of a tool call in the template's format.
    fn tool_grammar(
        &mut self,
        model: &dyn TextModel,
        structure: &Structure,
        format: ToolFormat,
    ) -> Result<(), ApiError> {
        for tool in &structure.tools {
            if tool.kind != "function" {
                return Err(ApiError::bad_request(format!(
                    "tools of type {:?} are not supported (function only)",
                    tool.kind
                )));
            }
            if let Some(parameters) = &tool.function.parameters {
                structured::schema::check_schema(parameters).map_err(|e| {
                    ApiError::bad_request(format!("tool {}: {e}", tool.function.name))
                })?;
            }
        }
        let choice = structure
            .tool_choice
            .clone()
            .unwrap_or(ToolChoice::Mode(ToolMode::Auto));
        if let ToolChoice::Named(named) = &choice
            && !structure
                .tools
                .iter()
                .any(|t| t.function.name == named.function.name)
        {
            return Err(ApiError::bad_request(format!(
                "tool_choice names {:?}, which is not in tools",
                named.function.name
            )));
        }
        let forced = !matches!(choice, ToolChoice::Mode(ToolMode::Auto));
        let schema = structured::grammar::tool_call_schema(format, &structure.tools, &choice);
        let call_gbnf = model.schema_grammar(&schema)?;
        let spec = structured::grammar::wrap_call_grammar(
            format,
            &call_gbnf,
            structure.parallel_tool_calls.unwrap_or(true),
            forced,
        );
        self.grammar = Some(Grammar {
            gbnf: spec.gbnf,
            triggers: if spec.lazy {
                spec.trigger_words
            } else {
                Vec::new()
            },
        });
        self.tool_format = Some(format);
        Ok(())
    }
}

/// Whether the request lets the model call tools.
fn calls_tools(structure: &Structure) -> bool {
    !structure.tools.is_empty()
        && !matches!(
            structure.tool_choice,
            Some(ToolChoice::Mode(ToolMode::None))
        )
}

/// Splits the model's output into text, reasoning and tool calls.
pub struct OutputShaper {
    think: Option<ThinkSplitter>,
    tools: Option<ToolCallStream>,
    logprobs: bool,
    text: String,
    reasoning: String,
    calls: Vec<ToolCall>,
    all_logprobs: Vec<TokenLogprob>,
}

impl OutputShaper {
    /// A shaper for the output that follows `prompt` under `plan`;
    /// `logprobs` keeps each token's.
    pub fn new(plan: &OutputPlan, prompt: &str, logprobs: bool) -> OutputShaper {
        OutputShaper {
            // The rendered prompt says whether the answer starts inside a
            // reasoning block (templates that open it themselves).
            think: plan
                .think
                .as_ref()
                .map(|(open, close, _)| ThinkSplitter::after_prompt(open, close, prompt)),
            tools: plan.tool_format.map(|format| {
                ToolCallStream::new(format, structured::tool_calls::call_ids(format))
            }),
            logprobs,
            text: String::new(),
            reasoning: String::new(),
            calls: Vec::new(),
            all_logprobs: Vec::new(),
        }
    }

    /// One token's piece; the chunk to stream, when it shows anything.
    pub fn push(&mut self, piece: Piece<'_>) -> Option<ChatChunk> {
        let mut chunk = ChatChunk::default();
        if self.logprobs
            && let Some(logprob) = piece.logprob
        {
            chunk.logprobs.push(logprob.clone());
            self.all_logprobs.push(logprob.clone());
        }
        self.shape(piece.text, false, &mut chunk);
        visible(chunk)
    }

    /// The text held back until the end; the last chunk, when any.
    pub fn finish(&mut self) -> Option<ChatChunk> {
        let mut chunk = ChatChunk::default();
        self.shape("", true, &mut chunk);
        visible(chunk)
    }

    fn shape(&mut self, text: &str, end: bool, chunk: &mut ChatChunk) {
        let (reasoning, content) = match self.think.as_mut() {
            Some(splitter) if end => splitter.finish(),
            Some(splitter) => splitter.push(text),
            None => (String::new(), text.to_string()),
        };
        self.reasoning.push_str(&reasoning);
        chunk.reasoning = reasoning;
        let events = match self.tools.as_mut() {
            Some(stream) => {
                let mut events = stream.push(&content);
                if end {
                    events.extend(stream.finish());
                }
                events
            }
            None => vec![StreamEvent::Content(content)],
        };
        for event in events {
            match event {
                StreamEvent::Content(text) => {
                    self.text.push_str(&text);
                    chunk.delta.push_str(&text);
                }
                StreamEvent::Call(delta) => {
                    self.record(&delta);
                    chunk.tool_calls.push(delta);
                }
            }
        }
    }

    /// Adds a call's piece to the calls so far.
    fn record(&mut self, delta: &ToolCallDelta) {
        let index = delta.index as usize;
        while self.calls.len() <= index {
            self.calls.push(ToolCall {
                id: String::new(),
                kind: "function".into(),
                function: FunctionCall {
                    name: String::new(),
                    arguments: String::new(),
                },
            });
        }
        let call = &mut self.calls[index];
        if let Some(id) = &delta.id {
            call.id = id.clone();
        }
        if let Some(name) = &delta.name {
            call.function.name = name.clone();
        }
        call.function.arguments.push_str(&delta.arguments);
    }

    /// Everything shaped: text, reasoning (None when there was none), calls
    /// and logprobs.
    pub fn into_parts(self) -> (String, Option<String>, Vec<ToolCall>, Vec<TokenLogprob>) {
        let reasoning = Some(self.reasoning).filter(|r| !r.trim().is_empty());
        (self.text, reasoning, self.calls, self.all_logprobs)
    }
}

fn visible(chunk: ChatChunk) -> Option<ChatChunk> {
    let empty = chunk.delta.is_empty()
        && chunk.reasoning.is_empty()
        && chunk.tool_calls.is_empty()
        && chunk.logprobs.is_empty();
    (!empty).then_some(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FunctionDefinition, ToolMode};
    use crate::engine::text::fake::FakeTextModel;

    fn model() -> FakeTextModel {
        FakeTextModel {
            reply: vec![],
            token_delay: std::time::Duration::ZERO,
        }
    }

    fn tool(name: &str) -> Tool {
        Tool {
            kind: "function".into(),
            function: FunctionDefinition {
                name: name.into(),
                description: Some("does things".into()),
                parameters: Some(json!({"type": "object"})),
                strict: None,
            },
        }
    }

    #[test]
    fn a_template_without_a_tool_format_gets_tools_in_the_system_message() {
        let structure = Structure {
            tools: vec![tool("open_tab")],
            ..Structure::default()
        };
        let plan = OutputPlan::new(&model(), &structure).unwrap();
        assert_eq!(plan.tool_format, Some(ToolFormat::Generic));
        assert!(plan.template_tools().is_empty());
        assert!(plan.grammar.as_ref().is_some_and(|g| g.triggers.is_empty()));
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls.push(ToolCall {
            id: "c1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "open_tab".into(),
                arguments: r#"{"url":"x"}"#.into(),
            },
        });
        let turns = plan.conversation(&[ChatMessage::new("user", "hi"), call]);
        assert_eq!(turns[0].role, "system");
        assert!(
            turns[0].content.contains("open_tab"),
            "{}",
            turns[0].content
        );
        let written: serde_json::Value = serde_json::from_str(&turns[2].content).unwrap();
        assert_eq!(written["tool_calls"][0]["arguments"]["url"], "x");
        assert!(turns[2].tool_calls.is_empty());
    }

    #[test]
    fn constraints_are_one_at_a_time_and_kwargs_cannot_shadow_the_request() {
        let both = Structure {
            tools: vec![tool("a")],
            json_schema: Some(json!({"type": "object"})),
            ..Structure::default()
        };
        assert_eq!(OutputPlan::new(&model(), &both).err().unwrap().status, 400);
        let mut shadow = Structure::default();
        shadow
            .chat_template_kwargs
            .insert("messages".into(), json!([]));
        let error = OutputPlan::new(&model(), &shadow).err().unwrap();
        assert!(error.detail.contains("messages"), "{}", error.detail);
        let named = Structure {
            tools: vec![tool("a")],
            tool_choice: Some(ToolChoice::Named(crate::api::NamedTool {
                kind: "function".into(),
                function: crate::api::NamedFunction { name: "b".into() },
            })),
            ..Structure::default()
        };
        assert!(OutputPlan::new(&model(), &named).is_err());
        let none = Structure {
            tools: vec![tool("a")],
            tool_choice: Some(ToolChoice::Mode(ToolMode::None)),
            ..Structure::default()
        };
        let plan = OutputPlan::new(&model(), &none).unwrap();
        assert!(plan.grammar.is_none() && plan.tools.is_empty());
    }
}
