use super::{
    CALENDAR_DATE, GrammarSpec, LOOSE_DATE, calendar_dates, rename_rule, tool_call_schema,
    without_lone_surrogates, word_spans, wrap_call_grammar,
};
use crate::api::{FunctionDefinition, NamedFunction, NamedTool, Tool, ToolChoice, ToolMode};
use crate::engine::structured::schema::check_schema;
use crate::engine::structured::tool_calls::ToolFormat;
use serde_json::{Value, json};
use std::collections::HashMap;

/// What llama.cpp's `json_schema_to_grammar` gives for the call schema of
/// one tool `get_weather(city: string)` (rules sorted by name, as its
/// `format_grammar` prints them from a std::map).
const CONVERTED: &str = r#"arguments ::= "{" space arguments-city-kv space "}"
arguments-city-kv ::= "\"city\"" space ":" space string
arguments-kv ::= "\"arguments\"" space ":" space arguments
char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})
name ::= "\"get_weather\""
name-kv ::= "\"name\"" space ":" space name
root ::= "{" space name-kv "," space arguments-kv space "}"
space ::= | " " | "\n"{1,2} [ \t]{0,20}
string ::= "\"" char* "\""
"#;

/// What the converter gives for [`tool_call_schema`] of two tools, one
/// with a `$defs` enum and a `maxLength`, one without parameters.
const CONVERTED_TWO_TOOLS: &str = r#"alternative-0 ::= "{" space alternative-0-name-kv "," space alternative-0-arguments-kv space "}"
alternative-0-arguments ::= "{" space alternative-0-arguments-city-kv ( "," space ( alternative-0-arguments-unit-kv ) )? space "}"
alternative-0-arguments-city ::= "\"" char{0,20} "\""
alternative-0-arguments-city-kv ::= "\"city\"" space ":" space alternative-0-arguments-city
alternative-0-arguments-kv ::= "\"arguments\"" space ":" space alternative-0-arguments
alternative-0-arguments-unit ::= ref-anyOf-0-properties-arguments-defs-Unit
alternative-0-arguments-unit-kv ::= "\"unit\"" space ":" space alternative-0-arguments-unit
alternative-0-name ::= "\"get_weather\""
alternative-0-name-kv ::= "\"name\"" space ":" space alternative-0-name
alternative-1 ::= "{" space alternative-1-name-kv "," space alternative-1-arguments-kv space "}"
alternative-1-arguments ::= object
alternative-1-arguments-kv ::= "\"arguments\"" space ":" space alternative-1-arguments
alternative-1-name ::= "\"now\""
alternative-1-name-kv ::= "\"name\"" space ":" space alternative-1-name
array ::= "[" space ( value ("," space value)* )? space "]"
boolean ::= ("true" | "false")
char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})
decimal-part ::= [0-9]{1,16}
integral-part ::= [0] | [1-9] [0-9]{0,15}
null ::= "null"
number ::= ("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)?
object ::= "{" space ( string ":" space value ("," space string ":" space value)* )? space "}"
ref-anyOf-0-properties-arguments-defs-Unit ::= ("\"c\"" | "\"f\"")
root ::= alternative-0 | alternative-1
space ::= | " " | "\n"{1,2} [ \t]{0,20}
string ::= "\"" char* "\""
value ::= object | array | string | number | boolean | null
"#;

fn tool(name: &str, parameters: Option<Value>) -> Tool {
    Tool {
        kind: "function".into(),
        function: FunctionDefinition {
            name: name.into(),
            description: None,
            parameters,
            strict: None,
        },
    }
}

/// Rule definitions and references of a GBNF text, by name.
fn rules(gbnf: &str) -> (HashMap<String, usize>, Vec<String>) {
    let mut defined = HashMap::new();
    let mut referenced = Vec::new();
    for (start, end) in word_spans(gbnf) {
        let word = &gbnf[start..end];
        if word.bytes().all(|b| b.is_ascii_digit()) {
            continue; // a repetition count
        }
        if gbnf[end..]
            .trim_start_matches([' ', '\t'])
            .starts_with("::=")
        {
            *defined.entry(word.to_string()).or_insert(0) += 1;
        } else {
            referenced.push(word.to_string());
        }
    }
    (defined, referenced)
}

/// Every rule is defined once, every reference resolves, `root` exists.
fn well_formed(spec: &GrammarSpec) {
    let (defined, referenced) = rules(&spec.gbnf);
    assert!(
        defined.values().all(|&n| n == 1),
        "a rule defined twice in\n{}",
        spec.gbnf
    );
    assert_eq!(defined.get("root"), Some(&1), "{}", spec.gbnf);
    for r in referenced {
        assert!(
            defined.contains_key(&r),
            "`{r}` is not defined in\n{}",
            spec.gbnf
        );
    }
}

fn root_of(spec: &GrammarSpec) -> &str {
    spec.gbnf
        .lines()
        .find_map(|l| l.strip_prefix("root ::= "))
        .unwrap_or_default()
}

#[test]
fn renames_root_everywhere_but_in_literals() {
    let gbnf = "root ::= \"root\" [root] x # root\nx ::= root | \"a\\\"root\"\n";
    assert_eq!(
        rename_rule(gbnf, "root", "call"),
        "call ::= \"root\" [root] x # root\nx ::= call | \"a\\\"root\"\n"
    );
    let renamed = rename_rule(CONVERTED, "root", "tool-call");
    assert!(
        renamed
            .contains("tool-call ::= \"{\" space name-kv \",\" space arguments-kv space \"}\"\n")
    );
    assert!(!renamed.contains("root"));
}

#[test]
fn string_escapes_cannot_name_a_surrogate() {
    let safe = without_lone_surrogates(CONVERTED);
    assert!(safe.contains(
        r#"char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" ([0-9a-cA-C] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} | [eEfF] [0-9a-fA-F]{3}))"#
    ), "{safe}");
    assert!(!safe.contains("[0-9a-fA-F]{4}"));
    for format in [ToolFormat::Hermes, ToolFormat::Generic] {
        assert!(
            !wrap_call_grammar(format, CONVERTED, false, false)
                .gbnf
                .contains("[0-9a-fA-F]{4}")
        );
    }
}

#[test]
fn hermes_wraps_calls_in_tags_lazily() {
    let spec = wrap_call_grammar(ToolFormat::Hermes, CONVERTED, false, false);
    well_formed(&spec);
    assert!(spec.lazy);
    assert_eq!(spec.trigger_words, vec!["<tool_call>"]);
    assert_eq!(root_of(&spec), "tool-block");
    assert!(
        spec.gbnf.contains(
            "tool-block ::= \"<tool_call>\" tool-ws tool-call tool-ws \"</tool_call>\"\n"
        )
    );
    // The converter's rules are all still there.
    for line in without_lone_surrogates(CONVERTED)
        .lines()
        .filter(|l| !l.starts_with("root "))
    {
        assert!(spec.gbnf.contains(line), "{line}");
    }
    let parallel = wrap_call_grammar(ToolFormat::Hermes, CONVERTED, true, true);
    well_formed(&parallel);
    assert!(!parallel.lazy);
    assert!(parallel.trigger_words.is_empty());
    assert_eq!(root_of(&parallel), "tool-block (tool-ws tool-block)*");
}

#[test]
fn other_formats() {
    let llama = wrap_call_grammar(ToolFormat::Llama3Json, CONVERTED, true, false);
    well_formed(&llama);
    assert_eq!(root_of(&llama), "\"<|python_tag|>\"? tool-call");
    assert_eq!(llama.trigger_words, vec!["<|python_tag|>", "{\"name\""]);

    let mistral = wrap_call_grammar(ToolFormat::Mistral, CONVERTED, true, false);
    well_formed(&mistral);
    assert_eq!(
        root_of(&mistral),
        "\"[TOOL_CALLS]\" \"[\" tool-ws tool-call (\",\" tool-ws tool-call)* tool-ws \"]\""
    );
    assert_eq!(mistral.trigger_words, vec!["[TOOL_CALLS]"]);

    let auto = wrap_call_grammar(ToolFormat::Generic, CONVERTED, false, false);
    well_formed(&auto);
    assert!(!auto.lazy);
    assert_eq!(
        root_of(&auto),
        "\"{\" tool-ws \"\\\"tool_calls\\\"\" tool-ws \":\" tool-ws \"[\" tool-ws tool-call tool-ws \"]\" tool-ws \"}\" | \"{\" tool-ws \"\\\"response\\\"\" tool-ws \":\" tool-ws tool-string tool-ws \"}\""
    );
    let forced = wrap_call_grammar(ToolFormat::Generic, CONVERTED, true, true);
    well_formed(&forced);
    assert!(!root_of(&forced).contains("response"));
}

#[test]
fn wraps_a_union_of_tools() {
    for format in [
        ToolFormat::Hermes,
        ToolFormat::Llama3Json,
        ToolFormat::Mistral,
        ToolFormat::Generic,
    ] {
        for (parallel, forced) in [(false, false), (true, true)] {
            let spec = wrap_call_grammar(format, CONVERTED_TWO_TOOLS, parallel, forced);
            well_formed(&spec);
            assert!(
                spec.gbnf
                    .contains("tool-call ::= alternative-0 | alternative-1\n")
            );
        }
    }
}

#[test]
fn avoids_names_the_converter_used() {
    let gbnf = "root ::= tool-x\ntool-x ::= \"a\"\n";
    let spec = wrap_call_grammar(ToolFormat::Hermes, gbnf, false, false);
    well_formed(&spec);
    assert_eq!(root_of(&spec), "tool1-block");
}

#[test]
fn call_schema_per_format_and_choice() {
    let params =
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let tools = [tool("get_weather", Some(params.clone())), tool("now", None)];
    let named = ToolChoice::Named(NamedTool {
        kind: "function".into(),
        function: NamedFunction {
            name: "get_weather".into(),
        },
    });
    assert_eq!(
        tool_call_schema(ToolFormat::Hermes, &tools, &named),
        json!({
            "type": "object",
            "properties": {"name": {"const": "get_weather"}, "arguments": params},
            "required": ["name", "arguments"],
            "additionalProperties": false,
        })
    );
    let all = tool_call_schema(
        ToolFormat::Llama3Json,
        &tools,
        &ToolChoice::Mode(ToolMode::Required),
    );
    assert_eq!(all["anyOf"][0]["properties"]["parameters"], params);
    assert_eq!(
        all["anyOf"][1]["properties"]["parameters"],
        json!({"type": "object"})
    );
    assert_eq!(all["anyOf"][1]["required"], json!(["name", "parameters"]));
    let mistral = tool_call_schema(
        ToolFormat::Mistral,
        &tools[..1],
        &ToolChoice::Mode(ToolMode::Auto),
    );
    assert_eq!(mistral["required"], json!(["name", "arguments", "id"]));
    for schema in [&all, &mistral] {
        assert_eq!(check_schema(schema), Ok(()));
    }
    let none = tool_call_schema(ToolFormat::Hermes, &[], &ToolChoice::Mode(ToolMode::Auto));
    assert_eq!(check_schema(&none), Ok(()));
    assert_eq!(none["required"], json!(["name", "arguments"]));
    assert_eq!(none["properties"]["arguments"], json!({"type": "object"}));
}

#[test]
fn call_schema_rebases_refs() {
    let with_defs = json!({
        "$defs": {"Unit": {"enum": ["c", "f"]}},
        "type": "object",
        "properties": {"unit": {"$ref": "#/$defs/Unit"}}
    });
    let tools = [
        tool("a", Some(json!({"type": "object"}))),
        tool("t", Some(with_defs.clone())),
    ];
    let schema = tool_call_schema(
        ToolFormat::Hermes,
        &tools,
        &ToolChoice::Mode(ToolMode::Auto),
    );
    assert_eq!(
        schema["anyOf"][1]["properties"]["arguments"]["properties"]["unit"]["$ref"],
        "#/anyOf/1/properties/arguments/$defs/Unit"
    );
    // The rebased reference resolves in the combined schema.
    assert_eq!(check_schema(&schema), Ok(()));
    let one = tool_call_schema(
        ToolFormat::Hermes,
        &tools[1..],
        &ToolChoice::Mode(ToolMode::Auto),
    );
    assert_eq!(
        one["properties"]["arguments"]["properties"]["unit"]["$ref"],
        "#/properties/arguments/$defs/Unit"
    );
    assert_eq!(check_schema(&one), Ok(()));
}

#[test]
fn dates_follow_the_calendar() {
    let converted =
        format!("root ::= date-string\n{LOOSE_DATE}\ndate-string ::= \"\\\"\" date \"\\\"\"");
    let strict = calendar_dates(&converted);
    assert!(
        strict.contains(CALENDAR_DATE) && !strict.contains(LOOSE_DATE),
        "{strict}"
    );
    assert!(strict.starts_with("root ::= date-string\n"));
    assert_eq!(calendar_dates("root ::= x"), "root ::= x");
}
