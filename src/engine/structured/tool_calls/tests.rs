use super::{IdGen, Parsed, StreamEvent, ToolCallStream, ToolFormat, detect, parse};
use crate::api::{FunctionCall, ToolCallDelta};

fn call(name: &str, arguments: &str) -> FunctionCall {
    FunctionCall {
        name: name.into(),
        arguments: arguments.into(),
    }
}

fn counter() -> IdGen {
    let mut n = 0;
    Box::new(move || {
        n += 1;
        format!("call_{n}")
    })
}

/// Streams `text` in pieces of `size` characters and assembles the result.
fn streamed(format: ToolFormat, text: &str, size: usize) -> (Parsed, Vec<StreamEvent>) {
    let mut stream = ToolCallStream::new(format, counter());
    let chars: Vec<char> = text.chars().collect();
    let mut events = Vec::new();
    for piece in chars.chunks(size.max(1)) {
        events.extend(stream.push(&piece.iter().collect::<String>()));
    }
    events.extend(stream.finish());
    let mut parsed = Parsed::default();
    for event in &events {
        match event {
            StreamEvent::Content(t) => parsed.content.push_str(t),
            StreamEvent::Call(d) => match parsed.calls.get_mut(d.index as usize) {
                Some(c) => c.arguments.push_str(&d.arguments),
                None => parsed
                    .calls
                    .push(call(d.name.as_deref().unwrap_or(""), &d.arguments)),
            },
        }
    }
    (parsed, events)
}

fn check(format: ToolFormat, text: &str, content: &str, calls: &[FunctionCall]) {
    let parsed = parse(format, text);
    assert_eq!(parsed.content, content, "content of {text:?}");
    assert_eq!(parsed.calls, calls, "calls of {text:?}");
    for size in [1, 2, 3, 7] {
        assert_eq!(
            streamed(format, text, size).0,
            parsed,
            "{text:?} in pieces of {size}"
        );
    }
}

#[test]
fn detects_formats_from_template_markers() {
    // Excerpts of the templates under llama.cpp's models/templates.
    let qwen25 =
        r#"{{- '\n<tool_call>\n{"name": "' }}{{- tool_call.name }}{{- '", "arguments": ' }}"#;
    let llama31 = r#"{{- "<|python_tag|>" + tool_call.name + ".call(" }}"#;
    let llama32 = r#"{{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}"#;
    let nemo = r#"{{- "[TOOL_CALLS][" }}"#;
    let mistral32 = r#"{{- '[TOOL_CALLS]' + tool_call.function.name }}{{- '[ARGS]' }}"#;
    let qwen3_coder = r#"{{- '<tool_call>\n<function=' + tool_call.name + '>\n' }}"#;
    let smollm2 =
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}";
    assert_eq!(detect(qwen25), ToolFormat::Hermes);
    assert_eq!(detect(llama31), ToolFormat::Llama3Json);
    assert_eq!(detect(llama32), ToolFormat::Llama3Json);
    assert_eq!(detect(nemo), ToolFormat::Mistral);
    assert_eq!(detect(mistral32), ToolFormat::Generic);
    assert_eq!(detect(qwen3_coder), ToolFormat::Generic);
    assert_eq!(detect(smollm2), ToolFormat::Generic);
    // `<tool_call>` around something other than JSON.
    let glm = r#"<tool_call>{function-name}<arg_key>{arg-key-1}</arg_key>{{- '<tool_call>' + tc.name -}}"#;
    let apriel = r#"<tool_call></tool_call> XML tags: <tool_calls>[{"name": <function-name-1>, "arguments": <args-dict-1>}]</tool_calls>"#;
    let functionary = r#"<|start_header_id|>ipython<|end_header_id|>{{- '<function=' + tool_call.function.name + '>' }}"#;
    let hermes3 =
        r#"<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-dict>}\n</tool_call>"#;
    assert_eq!(detect(glm), ToolFormat::Generic);
    assert_eq!(detect(apriel), ToolFormat::Generic);
    assert_eq!(detect(functionary), ToolFormat::Generic);
    assert_eq!(detect(hermes3), ToolFormat::Hermes);
    assert_eq!(ToolFormat::Llama3Json.arguments_key(), "parameters");
    assert_eq!(ToolFormat::Hermes.arguments_key(), "arguments");
}

#[test]
fn hermes_calls() {
    let h = ToolFormat::Hermes;
    check(
        h,
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": [1, 2]}}\n</tool_call>",
        "",
        &[call("get_weather", r#"{"city":"Paris","days":[1,2]}"#)],
    );
    check(
        h,
        "Let me look.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"arguments\": {\"x\": \"1 2\"}, \"name\": \"b\"}\n</tool_call>\n",
        "Let me look.",
        &[call("a", "{}"), call("b", r#"{"x":"1 2"}"#)],
    );
    // Arguments as a string holding JSON.
    check(
        h,
        "<tool_call>{\"name\": \"a\", \"arguments\": \"{\\\"q\\\": 1}\"}</tool_call>",
        "",
        &[call("a", r#"{"q":1}"#)],
    );
    // Not calls: stays content, word for word.
    for text in [
        "I use <tool_call> tags",
        "<tool_call>{\"name\": \"a\"}</tool_call>",
        "<tool_call>{\"name\": 3, \"arguments\": {}}</tool_call>",
        "a <tool_call",
        "<tool_call>{\"name\": \"a\", \"argu",
    ] {
        check(h, text, text, &[]);
    }
    // Cut off inside the arguments: the call keeps what was written.
    check(
        h,
        "<tool_call>{\"name\": \"a\", \"arguments\": {\"q\": \"par",
        "",
        &[call("a", "{\"q\":\"par")],
    );
    // No closer: the call stands and the text after is content.
    check(
        h,
        "<tool_call>{\"name\": \"a\", \"arguments\": {}} and then",
        "and then",
        &[call("a", "{}")],
    );
}

#[test]
fn llama3_calls() {
    let l = ToolFormat::Llama3Json;
    check(
        l,
        "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
        "",
        &[call("get_weather", r#"{"city":"Paris"}"#)],
    );
    check(
        l,
        "<|python_tag|>{\"type\": \"function\", \"name\": \"f\", \"parameters\": {\"a\": true}}",
        "",
        &[call("f", r#"{"a":true}"#)],
    );
    check(
        l,
        "{\"type\": \"function\", \"name\": \"f\", \"parameters\": {}}",
        "",
        &[call("f", "{}")],
    );
    // JSON that is not a call stays content.
    for text in [
        "{\"name\": \"Bob\", \"age\": 3}",
        "Use {\"name\": x}",
        "<|python_tag|>print(1)",
    ] {
        check(l, text, text, &[]);
    }
}

#[test]
fn mistral_calls() {
    check(
        ToolFormat::Mistral,
        "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": 1}, \"id\": \"abc123def\"}, {\"name\": \"b\", \"arguments\": {}}]",
        "",
        &[call("a", r#"{"x":1}"#), call("b", "{}")],
    );
    for text in [
        "[TOOL_CALLS] no list",
        "[TOOL_CALLS][1, 2]",
        "say [TOOL_CALLS",
    ] {
        check(ToolFormat::Mistral, text, text, &[]);
    }
}

#[test]
fn generic_form() {
    let g = ToolFormat::Generic;
    check(
        g,
        "{\"tool_calls\": [{\"name\": \"a\", \"arguments\": {\"x\": [1, {\"y\": null}]}}, {\"name\": \"b\", \"arguments\": {}}]}",
        "",
        &[call("a", r#"{"x":[1,{"y":null}]}"#), call("b", "{}")],
    );
    check(
        g,
        "{\"tool_call\": {\"name\": \"a\", \"arguments\": {\"k\": \"v\"}}}",
        "",
        &[call("a", r#"{"k":"v"}"#)],
    );
    check(
        g,
        "{\"response\": \"Hello \\\"world\\\"\\n\\u00e9\\ud83d\\ude00\"}",
        "Hello \"world\"\né😀",
        &[],
    );
    for text in [
        "plain words",
        "{\"other\": 1}",
        "{\"tool_calls\": 3}",
        "{\"tool_calls\": [{\"name\": 1}]}",
    ] {
        check(g, text, text, &[]);
    }
    // Cut off inside the response.
    check(g, "{\"response\": \"Hel", "Hel", &[]);
}

#[test]
fn stream_sends_id_and_name_first_then_arguments() {
    let text = "Hi <tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}</tool_call><tool_call>{\"name\": \"g\", \"arguments\": {}}</tool_call>";
    let (parsed, events) = streamed(ToolFormat::Hermes, text, 1);
    assert_eq!(parsed.content, "Hi");
    let deltas: Vec<&ToolCallDelta> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Call(d) => Some(d),
            StreamEvent::Content(_) => None,
        })
        .collect();
    assert_eq!(deltas[0].id.as_deref(), Some("call_1"));
    assert_eq!(deltas[0].name.as_deref(), Some("f"));
    assert_eq!(deltas[0].index, 0);
    assert!(
        deltas[1..]
            .iter()
            .take_while(|d| d.index == 0)
            .all(|d| d.id.is_none() && d.name.is_none())
    );
    // Arguments arrive in several pieces, as the model writes them.
    assert!(
        deltas
            .iter()
            .filter(|d| d.index == 0 && d.name.is_none())
            .count()
            > 3
    );
    let second = deltas.iter().find(|d| d.index == 1).unwrap();
    assert_eq!(second.id.as_deref(), Some("call_2"));
    assert_eq!(second.name.as_deref(), Some("g"));
}

#[test]
fn call_ids_are_fresh_and_shaped_for_the_format() {
    let a = super::random_call_id();
    let b = super::random_call_id();
    assert_ne!(a, b);
    assert!(a.starts_with("call_") && a.len() == 29, "{a}");
    assert!(a[5..].bytes().all(|c| c.is_ascii_alphanumeric()));
    let mistral = (super::call_ids(ToolFormat::Mistral))();
    assert!(
        mistral.len() == 9 && mistral.bytes().all(|c| c.is_ascii_alphanumeric()),
        "{mistral}"
    );
    assert!((super::call_ids(ToolFormat::Hermes))().starts_with("call_"));
}

#[test]
fn holds_back_what_may_be_an_opener() {
    let mut s = ToolCallStream::new(ToolFormat::Hermes, counter());
    assert_eq!(
        s.push("Hello <tool"),
        vec![StreamEvent::Content("Hello".into())]
    );
    assert_eq!(
        s.push("box> ok"),
        vec![StreamEvent::Content(" <toolbox> ok".into())]
    );
    assert_eq!(s.push(" "), vec![]);
    assert_eq!(s.finish(), vec![]);
}

mod props {
    use super::super::{ToolFormat, parse};
    use super::{call, streamed};
    use proptest::prelude::*;

    const FORMATS: [ToolFormat; 4] = [
        ToolFormat::Hermes,
        ToolFormat::Llama3Json,
        ToolFormat::Mistral,
        ToolFormat::Generic,
    ];

    /// Text made of fragments of the formats' markup, to reach every state.
    fn markupish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-z \n]{0,4}",
            Just("<tool_call>".to_string()),
            Just("</tool_call>".to_string()),
            Just("<|python_tag|>".to_string()),
            Just("[TOOL_CALLS]".to_string()),
            Just("{\"name\": \"f\", ".to_string()),
            Just("\"arguments\": ".to_string()),
            Just("\"parameters\": ".to_string()),
            Just("{\"tool_calls\": [".to_string()),
            Just("{\"response\": \"".to_string()),
            "[{}\\[\\]\",:\\\\u0-9 ]{1,3}",
            "\\PC{1,3}",
        ];
        prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn any_text_in_any_pieces_gives_the_same_answer(text in markupish(), size in 1usize..6) {
            for format in FORMATS {
                let whole = parse(format, &text);
                let (pieces, _) = streamed(format, &text, size);
                prop_assert_eq!(&pieces, &whole);
                // Without calls, every character of the text is content
                // (the generic form decodes its `response`, so not there).
                if whole.calls.is_empty() && format != ToolFormat::Generic {
                    prop_assert_eq!(whole.content.as_str(), text.trim_end());
                }
            }
        }

        #[test]
        fn calls_between_content_come_back(
            parts in prop::collection::vec(("[a-z]([a-z.,!?]| [a-z]){0,8}", "[a-z_]{1,6}", "[a-z]{0,4}", 0i64..1000), 1..4),
            size in 1usize..8,
        ) {
            for format in [ToolFormat::Hermes, ToolFormat::Mistral, ToolFormat::Llama3Json] {
                let mut text = String::new();
                let mut content = String::new();
                let mut calls = Vec::new();
                for (words, name, key, n) in &parts {
                    text.push_str(words);
                    content.push_str(words);
                    let args = format!("{{\"{key}\": [{n}, \"a b\"]}}");
                    let key_name = format.arguments_key();
                    let object = format!("{{\"name\": \"{name}\", \"{key_name}\": {args}}}");
                    text.push_str(&match format {
                        ToolFormat::Hermes => format!("\n<tool_call>\n{object}\n</tool_call>\n"),
                        ToolFormat::Mistral => format!("[TOOL_CALLS][{object}]"),
                        _ => format!("<|python_tag|>{object} "),
                    });
                    calls.push(call(name, &format!("{{\"{key}\":[{n},\"a b\"]}}")));
                }
                let (parsed, _) = streamed(format, &text, size);
                prop_assert_eq!(&parsed.content, &content);
                prop_assert_eq!(&parsed.calls, &calls);
            }
        }
    }
}
