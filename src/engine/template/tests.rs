//! Real models' templates rendered against what jinja2 renders with
//! transformers' settings (tests/fixtures/render_templates.py wrote the
//! expected files), and the environment's limits and Python-isms.

use std::path::PathBuf;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Map, json};

use super::*;
use crate::api::{FunctionCall, ToolCall};

/// 2026-07-26 12:34:56 UTC, the clock the fixtures were rendered with.
const NOW_SECS: u64 = 1_785_069_296;

/// Python's error for `{% for x in none %}`.
const NONE_NOT_ITERABLE: &str = "TypeError: 'NoneType' object is not iterable";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/templates")
}

fn read(name: &str) -> String {
    let path = dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Deserialize)]
struct Entry {
    file: String,
    bos: String,
    eos: String,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    tools: Vec<Tool>,
    add_generation_prompt: bool,
    #[serde(default)]
    kwargs: Map<String, serde_json::Value>,
}

fn load(entry: &Entry) -> ChatTemplate {
    let special = SpecialTokens {
        bos: entry.bos.clone(),
        eos: entry.eos.clone(),
    };
    ChatTemplate::new(&read(&entry.file), special).unwrap_or_else(|e| panic!("{}: {e}", entry.file))
}

fn render_case(template: &ChatTemplate, case: &Case) -> Result<String, TemplateError> {
    template.render(&RenderRequest {
        messages: &case.messages,
        tools: &case.tools,
        add_generation_prompt: case.add_generation_prompt,
        kwargs: &case.kwargs,
        now: UNIX_EPOCH + Duration::from_secs(NOW_SECS),
    })
}

/// Where two renders part, for a readable failure.
fn first_difference(got: &str, want: &str) -> String {
    let at = got
        .char_indices()
        .zip(want.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or(got.len().min(want.len()));
    let from = got.floor_char_boundary(at.saturating_sub(40));
    let want_from = want.floor_char_boundary(from.min(want.len()));
    format!(
        "at byte {at}: got {:?}, want {:?}",
        &got[from..got.ceil_char_boundary((at + 40).min(got.len()))],
        &want[want_from..want.ceil_char_boundary((at + 40).min(want.len()))]
    )
}

#[test]
fn real_templates_render_every_case_byte_for_byte_as_jinja2_does() {
    let manifest: BTreeMap<String, Entry> =
        serde_json::from_str(&read("manifest.json")).expect("manifest.json");
    let cases: Vec<Case> = serde_json::from_str(&read("cases.json")).expect("cases.json");
    assert!(manifest.len() >= 8 && cases.len() >= 6);
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, entry) in &manifest {
        let template = load(entry);
        for case in &cases {
            let stem = format!("{name}.{}", case.name);
            let got = render_case(&template, case);
            let ok = dir().join(format!("{stem}.txt"));
            let raised = dir().join(format!("{stem}.error.txt"));
            let fails = dir().join(format!("{stem}.fails.txt"));
            let problem = if ok.exists() {
                let want = read(&format!("{stem}.txt"));
                match got {
                    Ok(got) if got == want => None,
                    Ok(got) => Some(first_difference(&got, &want)),
                    Err(e) => Some(format!("failed: {e}")),
                }
            } else if raised.exists() {
                let want = read(&format!("{stem}.error.txt"));
                match got {
                    Err(TemplateError::Raised(message)) if message == want => None,
                    other => Some(format!("want raise_exception({want:?}), got {other:?}")),
                }
            } else if fails.exists() {
                // jinja2 itself failed: so must we, except where minijinja
                // is knowingly more lenient than Python (a `for` over None
                // runs zero times; Python raises TypeError).
                let why = read(&format!("{stem}.fails.txt"));
                match got {
                    Err(TemplateError::Render { .. }) => None,
                    Ok(_) if why == NONE_NOT_ITERABLE => None,
                    other => Some(format!("want a render error, got {other:?}")),
                }
            } else {
                Some("no expected output".to_string())
            };
            checked += 1;
            if let Some(problem) = problem {
                failures.push(format!("{stem}: {problem}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn template(source: &str) -> ChatTemplate {
    let special = SpecialTokens {
        bos: "<s>".into(),
        eos: "</s>".into(),
    };
    ChatTemplate::new(source, special).expect("compiles")
}

fn render(template: &ChatTemplate, messages: &[ChatMessage]) -> Result<String, TemplateError> {
    template.render(&RenderRequest {
        messages,
        tools: &[],
        add_generation_prompt: false,
        kwargs: &Map::new(),
        now: UNIX_EPOCH + Duration::from_secs(NOW_SECS),
    })
}

fn render_str(source: &str) -> Result<String, TemplateError> {
    render(&template(source), &[ChatMessage::new("user", "hi")])
}

#[test]
fn raise_exception_is_an_error_carrying_its_message() {
    let t = template(
        "{% if messages[0].role == 'user' %}{{ raise_exception('No users here!') }}{% endif %}ok",
    );
    let err = render(&t, &[ChatMessage::new("user", "hi")]).unwrap_err();
    assert_eq!(err, TemplateError::Raised("No users here!".into()));
    assert_eq!(
        err.to_string(),
        "chat template refused the conversation: No users here!"
    );
    assert_eq!(
        render(&t, &[ChatMessage::new("system", "s")]).unwrap(),
        "ok"
    );
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    let start = Instant::now();
    let err = render_str(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% if i == j %}{% endif %}{% endfor %}{% endfor %}",
    )
    .unwrap_err();
    assert!(matches!(err, TemplateError::OutOfFuel { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("chat template ran out of fuel"),
        "{err}"
    );
    // Debug builds are slow; this still bounds it well below a hang.
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_prompt_past_the_cap_is_refused() {
    let err = render_str("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}").unwrap_err();
    assert_eq!(
        err,
        TemplateError::TooLong {
            limit: MAX_PROMPT_BYTES
        }
    );
}

#[test]
fn a_broken_template_fails_at_new_naming_the_line() {
    let special = SpecialTokens::default();
    let err = ChatTemplate::new(
        "line one\n{% for m in messages %}\n{{ m.content }}\n",
        special.clone(),
    )
    .unwrap_err();
    assert!(
        matches!(err, TemplateError::Compile { line: Some(_), .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("chat template does not compile (line "),
        "{err}"
    );
    let err = ChatTemplate::new("{% endfor %}", special.clone()).unwrap_err();
    assert!(matches!(err, TemplateError::Compile { .. }), "{err:?}");
    // minijinja looks filters up when they run (jinja2 at compile time).
    let t = ChatTemplate::new("{{ messages | no_such_filter }}", special).expect("compiles");
    let err = render(&t, &[]).unwrap_err();
    assert!(err.to_string().contains("no_such_filter"), "{err}");
}

#[test]
fn a_render_error_names_the_line() {
    // jinja2 too: an attribute of an undefined value is an error.
    let err = render_str("a\nb\n{{ nothing.here }}").unwrap_err();
    match &err {
        TemplateError::Render { line, .. } => assert_eq!(*line, Some(3)),
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("chat template failed (line 3): "),
        "{err}"
    );
}

#[test]
fn undefined_is_lenient_like_jinja2s() {
    let out = render_str(
        "[{{ nothing }}]{% if nothing %}yes{% endif %}{% for x in nothing %}x{% endfor %}\
         {{ nothing is defined }} {{ messages[0].missing is defined }} {{ nothing | length }}",
    )
    .unwrap();
    assert_eq!(out, "[]False False 0");
}

#[test]
fn printed_values_read_as_python_prints_them() {
    let out = render_str(
        "{{ none }} {{ true }} {{ false|string }} {{ [1, 'a', none, 1.5] }} {{ {'k': \"it's\"} }} {{ 2.0 }}",
    )
    .unwrap();
    assert_eq!(
        out,
        "None True False [1, 'a', None, 1.5] {'k': \"it's\"} 2.0"
    );
}

#[test]
fn tojson_is_python_json_dumps() {
    let t = "{% set v = {'b': [1, 2.5, true, none], 'a': 'Zürich \"q\"\\n', 'e': {}, 'l': []} %}\
             {{ v | tojson }}|{{ v | tojson(indent=2) }}|{{ v | tojson(sort_keys=true, separators=[',', ':']) }}|{{ 'é' | tojson(ensure_ascii=true) }}";
    let out = render_str(t).unwrap();
    let expected = [
        r#"{"b": [1, 2.5, true, null], "a": "Zürich \"q\"\n", "e": {}, "l": []}"#,
        "{\n  \"b\": [\n    1,\n    2.5,\n    true,\n    null\n  ],\n  \"a\": \"Zürich \\\"q\\\"\\n\",\n  \"e\": {},\n  \"l\": []\n}",
        r#"{"a":"Zürich \"q\"\n","b":[1,2.5,true,null],"e":{},"l":[]}"#,
        r#""\u00e9""#,
    ];
    assert_eq!(out, expected.join("|"));
    let err = render_str("{{ nothing | tojson }}").unwrap_err();
    assert!(matches!(err, TemplateError::Render { .. }), "{err:?}");
}

#[test]
fn python_string_methods_and_loop_controls_work() {
    let out = render_str(
        "{{ '  a b  '.strip() }}|{{ 'a,b'.split(',') | join('+') }}|{{ 'Hi'.upper() }}|{{ 'abc'.startswith('ab') }}|\
         {% for k, v in {'x': 1, 'y': 2}.items() %}{{ k }}{{ v }}{% endfor %}|\
         {% for i in range(10) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}",
    )
    .unwrap();
    assert_eq!(out, "a b|a+b|HI|True|x1y2|02");
}

#[test]
fn kwargs_are_top_level_variables_and_the_fixed_ones_win() {
    let t = template(
        "{{ enable_thinking }} {{ reasoning_effort }} {{ bos_token }} {{ strftime_now('%d %B %Y') }}",
    );
    let kwargs = json!({"enable_thinking": false, "reasoning_effort": "low", "bos_token": "X"});
    let out = t
        .render(&RenderRequest {
            messages: &[],
            tools: &[],
            add_generation_prompt: true,
            kwargs: kwargs.as_object().expect("an object"),
            now: UNIX_EPOCH + Duration::from_secs(NOW_SECS),
        })
        .unwrap();
    assert_eq!(out, "False low <s> 26 July 2026");
}

#[test]
fn tool_calls_reach_the_template_in_openai_shape() {
    let t = template(
        "{% for m in messages %}{{ m.role }}:{{ m.content | tojson }}{% for c in m.tool_calls %} {{ c | tojson }}{% endfor %}\
         {% if m.tool_call_id is defined %} id={{ m.tool_call_id }} name={{ m.name }}{% endif %};{% endfor %}{{ tools }}",
    );
    let mut call = ChatMessage::new("assistant", "");
    call.tool_calls = vec![
        ToolCall {
            id: "c1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "f".into(),
                arguments: r#"{"x": [1, "é"]}"#.into(),
            },
        },
        ToolCall {
            id: "c2".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "g".into(),
                arguments: "not json".into(),
            },
        },
    ];
    let mut result = ChatMessage::new("tool", "42");
    result.tool_call_id = Some("c1".into());
    result.name = Some("f".into());
    let out = render(&t, &[call, result]).unwrap();
    assert_eq!(
        out,
        r#"assistant:"" {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": [1, "é"]}}} {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "not json"}};tool:"42" id=c1 name=f;None"#
    );
}

#[test]
fn uses_tools_tells_which_templates_take_tool_definitions() {
    assert!(template(&read("qwen2.5.jinja")).uses_tools());
    assert!(template(&read("llama3.2.jinja")).uses_tools());
    assert!(!template(&read("smollm2.jinja")).uses_tools());
    assert!(!template(&read("gemma2.jinja")).uses_tools());
    assert_eq!(template("{{ x }}").source(), "{{ x }}");
}

#[test]
fn a_compiled_template_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>(_: &T) {}
    let t = template(&read("qwen3.jinja"));
    shared(&t);
    let out = std::thread::scope(|s| {
        s.spawn(|| render(&t, &[ChatMessage::new("user", "hi")]))
            .join()
            .expect("the thread ran")
    });
    assert_eq!(out.unwrap(), "<|im_start|>user\nhi<|im_end|>\n");
}
