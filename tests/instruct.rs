//! The default instruct model, SmolLM2-135M-Instruct, for real: it is the
//! chat default when nothing is selected, its own Jinja template is applied,
//! it stays on topic when asked to summarize a given paragraph (what a 135M
//! model does well; open questions it does not), and its structured output
//! and tool calls validate. Needs `$TABAGENT_TEST_MODELS` (`make test`).

use std::path::Path;

use serde_json::{Value, json};

use crate::inference::{GEMMA, http_server, real_models};
use crate::util::{HttpServer, TempDir};

const SMOLLM: &str = "smollm2-135m-instruct-q4_1";

/// A server whose models dir links both real chat models.
fn server(real: &Path) -> (TempDir, HttpServer) {
    let dir = TempDir::new("models");
    for id in [GEMMA, SMOLLM] {
        let name = format!("{id}.gguf");
        assert!(
            real.join(&name).is_file(),
            "{name} is not in TABAGENT_TEST_MODELS (run make models)"
        );
        std::os::unix::fs::symlink(real.join(&name), dir.path().join(&name)).unwrap();
    }
    let server = http_server(&dir, &[]);
    let one_thread = json!({"threads": crate::slots::LLAMA_THREADS}).to_string();
    crate::util::http(
        server.addr,
        "PATCH",
        "/api/params",
        &[],
        Some(one_thread.as_bytes()),
    )
    .assert_status(200);
    (dir, server)
}

#[test]
fn smollm2_is_the_instruct_default_with_its_own_template() {
    let Some(real) = real_models("smollm2_is_the_instruct_default_with_its_own_template") else {
        return;
    };
    let (_models, server) = server(&real);
    let info = server.get(&format!("/api/models/{SMOLLM}")).ok_json();
    assert_eq!(
        (info["instruct"].clone(), info["chat_template"].clone()),
        (json!(true), json!("embedded")),
        "{info}"
    );
    let base = server.get(&format!("/api/models/{GEMMA}")).ok_json();
    assert_eq!(base["instruct"], false, "{base}");
    assert!(base["finetune"].is_null(), "{base}");
    // No model named and none selected: the instruct model answers.
    let reply = server
        .post(
            "/api/chat",
            &json!({"messages": [{"role": "user", "content": "Say hello."}],
                    "stream": false, "max_tokens": 8, "temperature": 0}),
        )
        .ok_json();
    assert_eq!(reply["model"], SMOLLM, "{reply}");
}

#[test]
fn smollm2_summarizes_a_given_paragraph_on_topic() {
    let Some(real) = real_models("smollm2_summarizes_a_given_paragraph_on_topic") else {
        return;
    };
    let (_models, server) = server(&real);
    let paragraph = "The honeybee is a social insect that lives in colonies of tens of \
        thousands. Worker bees collect nectar and pollen from flowers, and in doing so they \
        pollinate many of the crops that people eat. A single colony can make more than \
        twenty kilograms of honey in a year.";
    let reply = server
        .post(
            "/v1/chat/completions",
            &json!({"model": SMOLLM, "temperature": 0, "max_tokens": 60,
                    "messages": [{"role": "user", "content":
                        format!("Summarize this paragraph in one sentence:\n\n{paragraph}")}]}),
        )
        .ok_json();
    let text = reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(text.contains("bee"), "off topic: {text}");
}

#[test]
fn smollm2_structured_output_and_tool_calls_validate() {
    let Some(real) = real_models("smollm2_structured_output_and_tool_calls_validate") else {
        return;
    };
    let (_models, server) = server(&real);
    let schema = json!({"type": "object", "additionalProperties": false,
        "required": ["title", "tags"],
        "properties": {"title": {"type": "string", "maxLength": 40},
                       "tags": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 12}}}});
    let reply = server
        .post(
            "/v1/chat/completions",
            &json!({"model": SMOLLM, "temperature": 0, "max_tokens": 120,
                    "messages": [{"role": "user", "content": "Give a title and tags for a page about bees."}],
                    "response_format": {"type": "json_schema", "json_schema": {"name": "page", "schema": schema}}}),
        )
        .ok_json();
    let output: Value =
        serde_json::from_str(reply["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&output), "{output}");

    let tool = json!({"type": "function", "function": {"name": "open_tab",
        "description": "Open a web page in a new tab",
        "parameters": {"type": "object", "additionalProperties": false, "required": ["url"],
            "properties": {"url": {"type": "string", "maxLength": 60}}}}});
    let reply = server
        .post(
            "/v1/chat/completions",
            &json!({"model": SMOLLM, "temperature": 0, "max_tokens": 120, "tools": [tool],
                    "tool_choice": "required",
                    "messages": [{"role": "user", "content": "Open wikipedia.org please."}]}),
        )
        .ok_json();
    let call = &reply["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "open_tab", "{reply}");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments["url"].is_string(), "{arguments}");
}
