//! Tool calls in a model's output, in the formats chat templates teach:
//! Hermes/Qwen `<tool_call>{json}</tool_call>`, Llama 3.x bare JSON
//! (`{"name": .., "parameters": ..}`, or after `<|python_tag|>`), Mistral
//! `[TOOL_CALLS][{..}, ..]`, and llama.cpp's generic form for templates
//! without one (the whole output is `{"tool_calls": [..]}` or
//! `{"response": ".."}`). [`ToolCallStream`] splits streamed text into
//! content and OpenAI tool-call deltas as it arrives, holding back text that
//! may start a call the way a stop sequence is held back; [`parse`] runs the
//! same machine over a finished text, so both always agree.
//!
//! A call's arguments are its JSON with the whitespace between tokens taken
//! out, sent as the model writes them. Whitespace around calls is markup, not
//! content, and so is whitespace at the very end of the output.

use crate::api::{FunctionCall, ToolCallDelta};

use super::json_scan::{self, Scan};

mod stream;

pub use stream::ToolCallStream;

/// How a template's model writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>{"name": .., "arguments": ..}</tool_call>`, one block per
    /// call (Hermes 2/3, Qwen 2.5/3, SmolLM3 and other ChatML templates).
    Hermes,
    /// `{"name": .., "parameters": ..}`, optionally after `<|python_tag|>`
    /// (Llama 3.1 to 3.3).
    Llama3Json,
    /// `[TOOL_CALLS][{"name": .., "arguments": ..}, ..]` (Mistral Nemo and
    /// other v3-tokenizer Mistral templates).
    Mistral,
    /// The whole output is `{"tool_calls": [{"name": .., "arguments": ..}]}`
    /// or `{"response": ".."}` (llama.cpp's fallback; a grammar enforces it).
    Generic,
}

impl ToolFormat {
    /// The key a call's arguments are under, as the template teaches it.
    pub fn arguments_key(self) -> &'static str {
        match self {
            ToolFormat::Llama3Json => "parameters",
            _ => "arguments",
        }
    }
}

/// The format of a chat template's source, from the markers it renders.
/// Tagged formats that are not JSON inside (Qwen3-Coder's and Qwen 3.5's
/// `<function=..>`, GLM's `<arg_key>`, MiniMax's `<invoke>`, Apriel's
/// `<tool_calls>[..]`, functionary's `<function=..>`) are left to the
/// generic form.
pub fn detect(template_source: &str) -> ToolFormat {
    let has = |marker: &str| template_source.contains(marker);
    let xml = [
        "<function=",
        "<parameter=",
        "<arg_key>",
        "<invoke",
        "<tool_calls>",
    ]
    .iter()
    .any(|m| has(m));
    let json_name = has("{\"name\"") || has("{\\\"name\\\"");
    if has("<tool_call>") && json_name && !xml {
        ToolFormat::Hermes
    } else if (has("<|python_tag|>") || has("<|start_header_id|>ipython<|end_header_id|>")) && !xml
    {
        ToolFormat::Llama3Json
    } else if has("[TOOL_CALLS]") && !has("[ARGS]") {
        // Templates with `[ARGS]` (Mistral Small 3.2, Ministral 3) write
        // `[TOOL_CALLS]name[ARGS]{..}`, which is not parsed here.
        ToolFormat::Mistral
    } else {
        ToolFormat::Generic
    }
}

/// A finished output: its text and the calls it made, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// The text outside the calls.
    pub content: String,
    /// The calls, arguments as compact JSON text.
    pub calls: Vec<FunctionCall>,
}

/// Splits a finished output into content and calls.
pub fn parse(format: ToolFormat, text: &str) -> Parsed {
    let mut stream = ToolCallStream::new(format, Box::new(String::new));
    let mut events = stream.push(text);
    events.extend(stream.finish());
    let mut parsed = Parsed::default();
    for event in events {
        match event {
            StreamEvent::Content(text) => parsed.content.push_str(&text),
            StreamEvent::Call(delta) => match parsed.calls.get_mut(delta.index as usize) {
                Some(call) => call.arguments.push_str(&delta.arguments),
                None => parsed.calls.push(FunctionCall {
                    name: delta.name.unwrap_or_default(),
                    arguments: delta.arguments,
                }),
            },
        }
    }
    parsed
}

/// A piece of streamed output.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// More content text.
    Content(String),
    /// A piece of a call: the first of call `index` carries its id and name,
    /// later ones more of its arguments.
    Call(ToolCallDelta),
}

/// Makes the id of each new call (`call_<n>`, a random one, or Mistral's
/// nine alphanumerics: the caller decides).
pub type IdGen = Box<dyn FnMut() -> String + Send>;

/// A fresh call id, OpenAI's shape: `call_` and 24 random alphanumerics.
pub fn random_call_id() -> String {
    format!("call_{}", random_alphanumerics(24))
}

/// The id generator a format needs: Mistral's templates refuse any id but
/// nine alphanumerics; others take [`random_call_id`]s.
pub fn call_ids(format: ToolFormat) -> IdGen {
    match format {
        ToolFormat::Mistral => Box::new(|| random_alphanumerics(9)),
        _ => Box::new(random_call_id),
    }
}

/// `n` random letters and digits. std's `RandomState` carries random keys
/// (fresh ones per instance), which is enough for ids; no crate needed.
fn random_alphanumerics(n: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    let mut bits = 0u64;
    for i in 0..n {
        if i % 8 == 0 {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_usize(i);
            bits = hasher.finish();
        }
        out.push(char::from(ALPHABET[(bits % 62) as usize]));
        bits /= 62;
    }
    out
}

/// Where a call's arguments are.
enum Args {
    /// An object at these byte offsets (end unknown while it is partial).
    Raw { start: usize, end: Option<usize> },
    /// A JSON string holding the arguments' JSON, decoded and compacted
    /// once whole.
    Text(Option<String>),
}

/// What is known of a call object at the start of a text.
#[derive(Default)]
struct CallScan {
    name: Option<String>,
    args: Option<Args>,
    /// The offset just past its `}`, once it is whole.
    end: Option<usize>,
    /// Where it stops being a call object.
    invalid: Option<usize>,
}

/// Reads `{"name": .., "arguments"|"parameters": .., ...}` at the start of
/// `text` (after whitespace), as far as it goes.
fn scan_call(text: &str) -> CallScan {
    let b = text.as_bytes();
    let mut scan = CallScan::default();
    let fail = |mut scan: CallScan, at: usize| {
        scan.invalid = Some(at);
        scan
    };
    let mut i = json_scan::skip_ws(b, 0);
    match b.get(i) {
        None => return scan,
        Some(b'{') => i = json_scan::skip_ws(b, i + 1),
        Some(_) => return fail(scan, i),
    }
    if b.get(i) == Some(&b'}') {
        scan.end = Some(i + 1);
        return scan;
    }
    loop {
        match b.get(i) {
            None => return scan,
            Some(b'"') => {}
            Some(_) => return fail(scan, i),
        }
        let key_end = match json_scan::string(b, i) {
            Scan::Done(e) => e,
            Scan::Partial => return scan,
            Scan::Invalid(at) => return fail(scan, at),
        };
        let key: String = serde_json::from_str(&text[i..key_end]).unwrap_or_default();
        i = json_scan::skip_ws(b, key_end);
        match b.get(i) {
            None => return scan,
            Some(b':') => i = json_scan::skip_ws(b, i + 1),
            Some(_) => return fail(scan, i),
        }
        let Some(&first) = b.get(i) else { return scan };
        let is_args = key == "arguments" || key == "parameters";
        if (key == "name" && first != b'"') || (is_args && first != b'{' && first != b'"') {
            return fail(scan, i);
        }
        let value = json_scan::value(b, i);
        if is_args && scan.args.is_none() {
            scan.args = Some(match (first, value) {
                (b'{', Scan::Done(e)) => Args::Raw {
                    start: i,
                    end: Some(e),
                },
                (b'{', _) => Args::Raw {
                    start: i,
                    end: None,
                },
                (_, Scan::Done(e)) => match object_in_string(&text[i..e]) {
                    Some(inner) => Args::Text(Some(inner)),
                    None => return fail(scan, i),
                },
                _ => Args::Text(None),
            });
        }
        let end = match value {
            Scan::Done(e) => e,
            Scan::Partial => return scan,
            Scan::Invalid(at) => return fail(scan, at),
        };
        if key == "name" && scan.name.is_none() {
            scan.name = serde_json::from_str(&text[i..end]).ok();
        }
        i = json_scan::skip_ws(b, end);
        match b.get(i) {
            None => return scan,
            Some(b',') => i = json_scan::skip_ws(b, i + 1),
            Some(b'}') => {
                scan.end = Some(i + 1);
                return scan;
            }
            Some(_) => return fail(scan, i),
        }
    }
}

/// Arguments written as a JSON string holding an object (some models do):
/// that object, compacted.
fn object_in_string(literal: &str) -> Option<String> {
    let inner: String = serde_json::from_str(literal).ok()?;
    let start = json_scan::skip_ws(inner.as_bytes(), 0);
    match json_scan::value(inner.as_bytes(), start) {
        Scan::Done(end) if inner[start..].starts_with('{') && inner[end..].trim().is_empty() => {
            Some(json_scan::compact(&inner[start..end]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
