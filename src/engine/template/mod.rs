//! Chat templates: a GGUF's Hugging Face Jinja template rendered with
//! minijinja as transformers' `apply_chat_template` renders it with jinja2.
//!
//! transformers compiles a template in an `ImmutableSandboxedEnvironment`
//! with `trim_blocks`, `lstrip_blocks` and loop controls, jinja2's lenient
//! `Undefined`, its own `tojson` (`json.dumps`, non-ASCII kept, keys in
//! order), `raise_exception` and `strftime_now`, and renders it with
//! `messages`, `tools` (None without tools), `documents` (None),
//! `add_generation_prompt`, the special tokens and any extra keyword
//! arguments. This module does the same, plus Python's `str()` for what a
//! template prints (`None`, `True`), jinja2's `is iterable`/`is sequence`,
//! Python's string methods from minijinja-contrib, and transformers'
//! `{% generation %}` blocks. Every render has a fuel budget (a template cannot loop
//! forever or build unbounded values) and an output cap; a template that
//! fails to compile or render is an error, never a panic. The expected
//! outputs in `tests/fixtures/templates/` come from jinja2 itself.

mod context;
mod generation;
mod python;
mod strftime;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::time::SystemTime;

use minijinja::value::{Serde, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};

use crate::api::{ChatMessage, Tool};

/// The template's name inside its environment.
const NAME: &str = "chat_template";

/// Work one render may do (minijinja counts about one unit per instruction
/// and per 64 bytes of data built, so this also bounds memory, to ~320 MB).
/// Measured: gpt-oss's template with 150 messages and 20 tools uses 75,000,
/// other real templates less; a hostile loop stops here within a second
/// even in a debug build.
const FUEL: u64 = 5_000_000;

/// The longest prompt a render may produce: far beyond any context window
/// (1M tokens is about 4 MB of text), small enough to refuse a runaway.
pub const MAX_PROMPT_BYTES: usize = 16 << 20;

/// The model's special tokens as text, as transformers passes them
/// (`bos_token`, `eos_token`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// The beginning-of-sequence token's text (`<|begin_of_text|>`, `<s>`).
    pub bos: String,
    /// The end-of-sequence token's text (`<|eot_id|>`, `<|im_end|>`).
    pub eos: String,
}

/// One render: the conversation and what the template is told about it.
#[derive(Debug, Clone, Copy)]
pub struct RenderRequest<'a> {
    /// The conversation, oldest first.
    pub messages: &'a [ChatMessage],
    /// Tools the model may call; none gives the template `tools = None`.
    pub tools: &'a [Tool],
    /// End with the opening of an assistant turn.
    pub add_generation_prompt: bool,
    /// Extra top-level variables (`enable_thinking`, `reasoning_effort`, ...);
    /// the fixed ones above win over a kwarg of the same name.
    pub kwargs: &'a serde_json::Map<String, serde_json::Value>,
    /// The clock `strftime_now` reads (UTC).
    pub now: SystemTime,
}

/// A compiled chat template, made once when a model loads.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    special: SpecialTokens,
    uses_tools: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("special", &self.special)
            .field("uses_tools", &self.uses_tools)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source` (a GGUF's `tokenizer.chat_template`); fails on a
    /// syntax error. (An unknown filter or test fails when it runs: minijinja
    /// looks them up then, jinja2 at compile time.)
    pub fn new(source: &str, special: SpecialTokens) -> Result<ChatTemplate, TemplateError> {
        let mut env = environment();
        env.add_template_owned(NAME, generation::rewrite(source))
            .map_err(compile_error)?;
        let template = env.get_template(NAME).map_err(compile_error)?;
        let uses_tools = template.undeclared_variables(false).contains("tools");
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            special,
            uses_tools,
        })
    }

    /// Renders the prompt for `request`.
    pub fn render(&self, request: &RenderRequest) -> Result<String, TemplateError> {
        let template = self.env.get_template(NAME).map_err(render_error)?;
        let mut vars: BTreeMap<String, Value> = request
            .kwargs
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(Serde(v))))
            .collect();
        let messages: Vec<serde_json::Value> =
            request.messages.iter().map(context::message).collect();
        let tools = if request.tools.is_empty() {
            Value::from(())
        } else {
            let tools: Vec<serde_json::Value> = request.tools.iter().map(context::tool).collect();
            Value::from(Serde(&tools))
        };
        let now = request.now;
        let fixed = [
            ("messages", Value::from(Serde(&messages))),
            ("tools", tools),
            ("documents", Value::from(())),
            (
                "add_generation_prompt",
                Value::from(request.add_generation_prompt),
            ),
            ("bos_token", Value::from(self.special.bos.as_str())),
            ("eos_token", Value::from(self.special.eos.as_str())),
            (
                "strftime_now",
                Value::from_function(move |format: &str| strftime::strftime(now, format)),
            ),
        ];
        for (name, value) in fixed {
            vars.insert(name.to_string(), value);
        }
        let mut out = Capped::default();
        template
            .render_captured_to(Value::from(vars), &mut out)
            .map_err(|e| {
                if out.overflowed {
                    TemplateError::TooLong {
                        limit: MAX_PROMPT_BYTES,
                    }
                } else {
                    render_error(e)
                }
            })?;
        String::from_utf8(out.bytes).map_err(|_| TemplateError::Render {
            detail: "the output is not UTF-8".into(),
            line: None,
        })
    }

    /// Whether the template refers to `tools`: only then do tool definitions
    /// reach the model through it (otherwise the caller must describe them).
    pub fn uses_tools(&self) -> bool {
        self.uses_tools
    }

    /// The template's source, for tool-call format detection.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// transformers' environment, in minijinja.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(false);
    // The default delimiters always build.
    if let Ok(syntax) = syntax.build() {
        env.set_syntax(syntax);
    }
    // jinja2's default Undefined: prints as "", iterates as empty, is false;
    // an attribute of it is an error.
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(|out, _state, value| {
        let text = match value.as_str() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(python::str_of(value)),
        };
        out.write_str(&text)
            .map_err(|_| Error::new(ErrorKind::WriteFailure, "cannot write the output"))
    });
    env.add_filter("tojson", python::tojson);
    env.add_filter("string", |value: Value| python::str_of(&value));
    env.add_test("iterable", |value: Value| python::is_iterable(&value));
    env.add_test("sequence", |value: Value| python::is_sequence(&value));
    env.add_function(
        "raise_exception",
        |message: Value| -> Result<Value, Error> {
            let message = python::str_of(&message);
            Err(Error::new(ErrorKind::InvalidOperation, message.clone())
                .with_source(Raised(message)))
        },
    );
    env
}

/// Collects the output, refusing to grow past [`MAX_PROMPT_BYTES`].
#[derive(Default)]
struct Capped {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_PROMPT_BYTES {
            self.overflowed = true;
            return Err(io::Error::other("prompt too long"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What `raise_exception` raised, found again in the error's sources.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

/// Why a chat template could not be compiled or rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template does not compile (a syntax error).
    Compile {
        /// minijinja's description.
        detail: String,
        /// The template line, when known.
        line: Option<usize>,
    },
    /// The template called `raise_exception`: it refuses this conversation
    /// (say a system turn, or roles that do not alternate).
    Raised(String),
    /// Rendering failed: an undefined attribute, a type error, ...
    Render {
        /// minijinja's description.
        detail: String,
        /// The template line, when known.
        line: Option<usize>,
    },
    /// The render used up its fuel (an endless or enormous loop).
    OutOfFuel {
        /// The template line, when known.
        line: Option<usize>,
    },
    /// The prompt grew past the cap.
    TooLong {
        /// The cap, in bytes.
        limit: usize,
    },
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |line: &Option<usize>| match line {
            Some(n) => format!(" (line {n})"),
            None => String::new(),
        };
        match self {
            TemplateError::Compile { detail, line } => {
                write!(f, "chat template does not compile{}: {detail}", at(line))
            }
            TemplateError::Raised(message) => {
                write!(f, "chat template refused the conversation: {message}")
            }
            TemplateError::Render { detail, line } => {
                write!(f, "chat template failed{}: {detail}", at(line))
            }
            TemplateError::OutOfFuel { line } => {
                write!(f, "chat template ran out of fuel{}", at(line))
            }
            TemplateError::TooLong { limit } => {
                write!(f, "chat template output exceeds {limit} bytes")
            }
        }
    }
}

impl std::error::Error for TemplateError {}

/// minijinja's own words: its kind, then its detail when it has one.
fn describe(e: &Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

fn compile_error(e: Error) -> TemplateError {
    TemplateError::Compile {
        detail: describe(&e),
        line: e.line(),
    }
}

fn render_error(e: Error) -> TemplateError {
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(Raised(message)) = s.downcast_ref::<Raised>() {
            return TemplateError::Raised(message.clone());
        }
        source = s.source();
    }
    match e.kind() {
        ErrorKind::OutOfFuel => TemplateError::OutOfFuel { line: e.line() },
        _ => TemplateError::Render {
            detail: describe(&e),
            line: e.line(),
        },
    }
}
