//! Grammars for tool calls, handed to llama.cpp's grammar sampler. A call's
//! JSON comes from one JSON schema ([`tool_call_schema`]: any allowed tool's
//! name with its arguments), which llama.cpp's converter turns into GBNF;
//! [`wrap_call_grammar`] renames that grammar's `root` and wraps it in the
//! format's markup (`<tool_call>..</tool_call>`, `[TOOL_CALLS][..]`, ...).
//! When the model may answer in text (`tool_choice: auto`) the grammar is
//! lazy: it starts at the format's opener (a trigger word). When a call is
//! required it applies from the first token; the generic form is never lazy,
//! as its `{"response": ..}` branch holds the text answer.

use serde_json::{Value, json};

use super::tool_calls::ToolFormat;
use crate::api::{Tool, ToolChoice};

/// What to give llama.cpp's grammar sampler (`LlamaSampler::grammar` or,
/// when `lazy`, `grammar_lazy` with `trigger_words`); the start rule is `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrammarSpec {
    /// The GBNF.
    pub gbnf: String,
    /// Apply it only from a trigger word on.
    pub lazy: bool,
    /// The words that start it, when lazy.
    pub trigger_words: Vec<String>,
}

/// One JSON schema for one call of any tool `choice` allows (the named one,
/// or all), with the arguments under the key `format` expects; any object
/// for a tool without parameters. The caller checks each tool's parameters
/// with [`check_schema`](super::schema::check_schema) and that a named tool
/// exists (an unknown name allows all). Local `$ref`s are rebased so they
/// still resolve inside the combined schema.
pub fn tool_call_schema(format: ToolFormat, tools: &[Tool], choice: &ToolChoice) -> Value {
    let named: Vec<&Tool> = match choice {
        ToolChoice::Named(named) => tools
            .iter()
            .filter(|t| t.function.name == named.function.name)
            .collect(),
        ToolChoice::Mode(_) => Vec::new(),
    };
    let allowed: Vec<&Tool> = if named.is_empty() {
        tools.iter().collect()
    } else {
        named
    };
    let key = format.arguments_key();
    let single = allowed.len() == 1;
    let mut alternatives: Vec<Value> = allowed
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let function = &tool.function;
            let mut parameters = function
                .parameters
                .clone()
                .unwrap_or_else(|| json!({"type": "object"}));
            let base = if single {
                format!("#/properties/{key}/")
            } else {
                format!("#/anyOf/{i}/properties/{key}/")
            };
            rebase_refs(&mut parameters, &base);
            let mut properties = serde_json::Map::new();
            properties.insert("name".into(), json!({"const": function.name}));
            properties.insert(key.into(), parameters);
            let mut required = vec![json!("name"), json!(key)];
            if format == ToolFormat::Mistral {
                // Mistral's templates require nine alphanumerics as a call's
                // id, and its models write one.
                properties.insert(
                    "id".into(),
                    json!({"type": "string", "pattern": "^[a-zA-Z0-9]{9}$"}),
                );
                required.push(json!("id"));
            }
            json!({
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            })
        })
        .collect();
    match alternatives.len() {
        // No tools at all: any call-shaped object (the caller sends tools).
        0 => {
            json!({"type": "object", "properties": {"name": {"type": "string"}, key: {"type": "object"}}, "required": ["name", key], "additionalProperties": false})
        }
        1 => alternatives.remove(0),
        _ => json!({"anyOf": alternatives}),
    }
}

/// Points every `#/...` reference of a subschema at `base` (where the
/// subschema now sits) instead of the document root.
fn rebase_refs(value: &mut Value, base: &str) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(r) if key == "$ref" && r.starts_with("#/") => {
                        *r = format!("{base}{}", &r[2..]);
                    }
                    other => rebase_refs(other, base),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rebase_refs(v, base)),
        _ => {}
    }
}

/// Wraps the converter's grammar of one call (`call_gbnf`, start rule
/// `root`) in `format`'s markup. `parallel` allows several calls; `forced`
/// (`tool_choice` required or named) makes a call the only output.
pub fn wrap_call_grammar(
    format: ToolFormat,
    call_gbnf: &str,
    parallel: bool,
    forced: bool,
) -> GrammarSpec {
    let p = fresh_prefix(call_gbnf);
    let call = format!("{p}call");
    let mut gbnf = without_lone_surrogates(&rename_rule(call_gbnf, "root", &call));
    if !gbnf.ends_with('\n') {
        gbnf.push('\n');
    }
    let ws = format!("{p}ws");
    // The converter's `space`, under a name of our own.
    gbnf.push_str(&format!(
        "{ws} ::= | \" \" | \"\\n\"{{1,2}} [ \\t]{{0,20}}\n"
    ));
    let more = |item: &str, sep: &str| {
        if parallel {
            format!("{item} ({sep} {item})*")
        } else {
            item.to_string()
        }
    };
    let (root, triggers): (String, &[&str]) = match format {
        ToolFormat::Hermes => {
            let block = format!("{p}block");
            gbnf.push_str(&format!(
                "{block} ::= \"<tool_call>\" {ws} {call} {ws} \"</tool_call>\"\n"
            ));
            (more(&block, &ws), &["<tool_call>"])
        }
        // Llama 3 templates take one call per turn.
        ToolFormat::Llama3Json => (
            format!("\"<|python_tag|>\"? {call}"),
            &["<|python_tag|>", "{\"name\""],
        ),
        ToolFormat::Mistral => (
            format!(
                "\"[TOOL_CALLS]\" \"[\" {ws} {} {ws} \"]\"",
                more(&call, &format!("\",\" {ws}"))
            ),
            &["[TOOL_CALLS]"],
        ),
        ToolFormat::Generic => {
            let calls = format!(
                "\"{{\" {ws} \"\\\"tool_calls\\\"\" {ws} \":\" {ws} \"[\" {ws} {} {ws} \"]\" {ws} \"}}\"",
                more(&call, &format!("\",\" {ws}"))
            );
            let root = if forced {
                calls
            } else {
                let (string, ch) = (format!("{p}string"), format!("{p}char"));
                gbnf.push_str(&format!("{string} ::= \"\\\"\" {ch}* \"\\\"\"\n"));
                gbnf.push_str(&format!(
                    "{ch} ::= [^\"\\\\\\x7F\\x00-\\x1F] | [\\\\] ([\"\\\\bfnrt] | {SAFE_ESCAPE})\n"
                ));
                format!(
                    "{calls} | \"{{\" {ws} \"\\\"response\\\"\" {ws} \":\" {ws} {string} {ws} \"}}\""
                )
            };
            gbnf.push_str(&format!("root ::= {root}\n"));
            return GrammarSpec {
                gbnf,
                lazy: false,
                trigger_words: Vec::new(),
            };
        }
    };
    gbnf.push_str(&format!("root ::= {root}\n"));
    GrammarSpec {
        gbnf,
        lazy: !forced,
        trigger_words: if forced {
            Vec::new()
        } else {
            triggers.iter().map(|t| t.to_string()).collect()
        },
    }
}

/// The converter's `\uXXXX` escape, in its `char` rule.
const ANY_ESCAPE: &str = r#""u" [0-9a-fA-F]{4}"#;

/// The same escape without the surrogates D800-DFFF: a lone one is not
/// valid JSON text to serde_json (and a pair cannot be held together here),
/// while any other character can still be escaped or written as is.
const SAFE_ESCAPE: &str =
    r#""u" ([0-9a-cA-C] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} | [eEfF] [0-9a-fA-F]{3})"#;

/// `gbnf` (the converter's output) with string escapes that cannot name a
/// surrogate, so every string it admits parses, and with calendar dates
/// ([`calendar_dates`]). Apply it to a JSON-schema
/// grammar before the sampler gets it; [`wrap_call_grammar`] does.
pub fn without_lone_surrogates(gbnf: &str) -> String {
    calendar_dates(&gbnf.replace(ANY_ESCAPE, SAFE_ESCAPE))
}

/// The converter's `date` rule: any day 01-31 in any month.
const LOOSE_DATE: &str = r#"date ::= [0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )"#;

/// RFC 3339 full-date with real calendars: 30-day months, February's 28
/// days, and the 29th only in leap years (every 4th year, centuries only
/// when divisible by 400).
const CALENDAR_DATE: &str = r#"date ::= [0-9]{4} "-" ( ( "0" [13578] | "1" [02] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] ) | ( "0" [469] | "11" ) "-" ( "0" [1-9] | [12] [0-9] | "30" ) | "02-" ( "0" [1-9] | "1" [0-9] | "2" [0-8] ) ) | ( [0-9] [0-9] ( "0" [48] | [2468] [048] | [13579] [26] ) | ( [02468] [048] | [13579] [26] ) "00" ) "-02-29""#;

/// `gbnf` (the converter's output) with its `date` rule (used by the
/// `date` and `date-time` formats) held to the calendar: the converter's
/// own takes 2023-02-31. [`without_lone_surrogates`] applies it too.
pub fn calendar_dates(gbnf: &str) -> String {
    gbnf.lines()
        .map(|line| {
            if line == LOOSE_DATE {
                CALENDAR_DATE
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A rule-name prefix no rule of `gbnf` starts with.
fn fresh_prefix(gbnf: &str) -> String {
    let names = rule_words(gbnf);
    let taken = |p: &str| names.iter().any(|n| n.starts_with(p));
    let mut prefix = "tool-".to_string();
    let mut n = 0;
    while taken(&prefix) {
        n += 1;
        prefix = format!("tool{n}-");
    }
    prefix
}

/// The words of a GBNF text that can be rule names (outside literals,
/// character classes and comments), with their byte ranges.
fn word_spans(gbnf: &str) -> Vec<(usize, usize)> {
    let b = gbnf.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'-';
    while i < b.len() {
        match b[i] {
            quote @ (b'"' | b'[') => {
                let close = if quote == b'"' { b'"' } else { b']' };
                i += 1;
                while i < b.len() && b[i] != close {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            c if is_word(c) => {
                let start = i;
                while i < b.len() && is_word(b[i]) {
                    i += 1;
                }
                spans.push((start, i));
            }
            _ => i += 1,
        }
    }
    spans
}

fn rule_words(gbnf: &str) -> Vec<&str> {
    word_spans(gbnf)
        .into_iter()
        .map(|(s, e)| &gbnf[s..e])
        .collect()
}

/// `gbnf` with the rule `from` (its definition and every reference)
/// renamed to `to`.
pub fn rename_rule(gbnf: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(gbnf.len() + 64);
    let mut last = 0;
    for (start, end) in word_spans(gbnf) {
        if &gbnf[start..end] == from {
            out.push_str(&gbnf[last..start]);
            out.push_str(to);
            last = end;
        }
    }
    out.push_str(&gbnf[last..]);
    out
}

#[cfg(test)]
mod tests;
