//! Structured output and tools against the real binary and llama.cpp, on the
//! tiny random GGUF: a grammar makes even random weights produce valid
//! output, so these are deterministic. Schemas carry `maxLength`/`maxItems`
//! so that random weights finish within `max_tokens`.

use serde_json::{Value, json};

use crate::inference::{http_server, tiny_models};
use crate::util::{HttpServer, TempDir, tiny_gguf_with_template};

/// A server with the tiny model under SmolLM2's ChatML template (`tiny`:
/// no tool format of its own, so the generic JSON form) and under Qwen
/// 2.5's (`qwen`, Hermes `<tool_call>` format).
fn server() -> (TempDir, HttpServer) {
    let models = tiny_models(&[]);
    for (name, template) in [("tiny", "smollm2"), ("qwen", "qwen2.5")] {
        std::fs::copy(
            tiny_gguf_with_template(template),
            models.path().join(format!("{name}.gguf")),
        )
        .unwrap();
    }
    let server = http_server(&models, &[]);
    (models, server)
}

fn chat(server: &HttpServer, body: Value) -> Value {
    let mut body = body;
    body["stream"] = json!(false);
    server.post("/v1/chat/completions", &body).ok_json()
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap()
}

fn assert_valid(schema: &Value, output: &str) {
    let value: Value = serde_json::from_str(output)
        .unwrap_or_else(|e| panic!("output is not JSON ({e}): {output:?}"));
    let validator = validator(schema);
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{output} against {schema}: {errors:?}");
}

#[test]
fn json_schema_output_validates_for_objects_arrays_enums_and_formats() {
    let (_models, server) = server();
    let schemas = [
        json!({"type": "object", "additionalProperties": false,
               "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0, "maximum": 150}},
               "required": ["name", "age"]}),
        json!({"type": "array", "items": {"type": "string", "maxLength": 5}, "minItems": 1, "maxItems": 3}),
        json!({"enum": ["red", "green", "blue"]}),
        json!({"type": "object", "additionalProperties": false, "required": ["user"],
               "properties": {"user": {"type": "object", "additionalProperties": false, "required": ["id", "tags"],
                   "properties": {"id": {"type": "integer"}, "tags": {"type": "array", "maxItems": 2,
                       "items": {"enum": ["a", "b"]}}}}}}),
        json!({"type": "object", "additionalProperties": false,
               "required": ["day", "at", "when", "id"],
               "properties": {"day": {"type": "string", "format": "date"},
                              "at": {"type": "string", "format": "time"},
                              "when": {"type": "string", "format": "date-time"},
                              "id": {"type": "string", "format": "uuid"}}}),
    ];
    for schema in &schemas {
        for seed in [1, 2, 3] {
            // OpenAI's response_format over HTTP...
            let reply = chat(
                &server,
                json!({"model": "tiny", "messages": [{"role": "user", "content": "go"}],
                       "max_tokens": 800, "temperature": 1.0, "seed": seed,
                       "response_format": {"type": "json_schema",
                           "json_schema": {"name": "t", "schema": schema, "strict": true}}}),
            );
            assert_eq!(reply["choices"][0]["finish_reason"], "stop", "{reply}");
            assert_valid(
                schema,
                reply["choices"][0]["message"]["content"].as_str().unwrap(),
            );
        }
        // ...and tabagent's own Chat field.
        let own = server
            .post(
                "/api/chat",
                &json!({"model": "tiny", "messages": [{"role": "user", "content": "go"}],
                        "stream": false, "max_tokens": 800, "json_schema": schema}),
            )
            .ok_json();
        assert_valid(schema, own["text"].as_str().unwrap());
    }
}

#[test]
fn output_cut_by_max_tokens_says_length() {
    let (_models, server) = server();
    let reply = chat(
        &server,
        json!({"model": "tiny", "messages": [{"role": "user", "content": "go"}], "max_tokens": 3,
               "response_format": {"type": "json_schema", "json_schema": {"name": "t",
                   "schema": {"type": "array", "items": {"type": "string"}, "minItems": 3}}}}),
    );
    assert_eq!(reply["choices"][0]["finish_reason"], "length", "{reply}");
}

#[test]
fn schemas_the_grammar_cannot_enforce_are_refused_by_keyword() {
    let (_models, server) = server();
    for (schema, keyword) in [
        (json!({"type": "array", "uniqueItems": true}), "uniqueItems"),
        (json!({"type": "string", "format": "email"}), "email"),
        (json!({"not": {"type": "string"}}), "not"),
    ] {
        let reply = server.post(
            "/v1/chat/completions",
            &json!({"model": "tiny", "messages": [{"role": "user", "content": "go"}],
                    "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}}),
        );
        reply.assert_status(400);
        let text = String::from_utf8_lossy(&reply.body).to_string();
        assert!(text.contains(keyword), "{keyword}: {text}");
    }
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "additionalProperties": false, "required": ["city", "days"],
            "properties": {"city": {"type": "string", "maxLength": 10},
                           "days": {"type": "integer", "minimum": 1, "maximum": 7}}}}})
}

fn calls_of(reply: &Value) -> Vec<Value> {
    reply["choices"][0]["message"]["tool_calls"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no tool_calls: {reply}"))
}

#[test]
fn required_tool_choice_returns_calls_whose_arguments_validate() {
    let (_models, server) = server();
    let schema = weather_tool()["function"]["parameters"].clone();
    // Generic JSON form (ChatML) and Hermes <tool_call> (Qwen 2.5's template).
    for model in ["tiny", "qwen"] {
        for seed in [1, 2] {
            let reply = chat(
                &server,
                json!({"model": model, "messages": [{"role": "user", "content": "weather in Paris?"}],
                       "tools": [weather_tool()], "tool_choice": "required", "max_tokens": 400,
                       "parallel_tool_calls": false, "temperature": 1.0, "seed": seed}),
            );
            assert_eq!(
                reply["choices"][0]["finish_reason"], "tool_calls",
                "{reply}"
            );
            let calls = calls_of(&reply);
            assert!(!calls.is_empty(), "{reply}");
            for call in calls {
                assert_eq!(call["type"], "function");
                assert!(
                    call["id"].as_str().is_some_and(|id| !id.is_empty()),
                    "{call}"
                );
                assert_eq!(call["function"]["name"], "get_weather");
                assert_valid(&schema, call["function"]["arguments"].as_str().unwrap());
            }
        }
    }
    // A named function is forced the same way.
    let named = chat(
        &server,
        json!({"model": "qwen", "messages": [{"role": "user", "content": "x"}],
               "tools": [weather_tool(), {"type": "function", "function": {"name": "other"}}],
               "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
               "parallel_tool_calls": false, "max_tokens": 400}),
    );
    let calls = calls_of(&named);
    assert_eq!(calls.len(), 1, "{named}");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
}

#[test]
fn streamed_tool_call_deltas_assemble_into_the_same_call() {
    let (_models, server) = server();
    for model in ["tiny", "qwen"] {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "weather?"}],
            "tools": [weather_tool()], "tool_choice": "required", "max_tokens": 400,
            "parallel_tool_calls": false, "temperature": 0.0});
        let whole = chat(&server, body.clone());
        let expected = calls_of(&whole);
        let mut streamed = body;
        streamed["stream"] = json!(true);
        let reply = server.post("/v1/chat/completions", &streamed);
        reply.assert_status(200);
        let mut calls: Vec<(String, String, String)> = Vec::new();
        let mut finish = Value::Null;
        for event in reply.events() {
            if event == "[DONE]" {
                break;
            }
            let chunk: Value = serde_json::from_str(&event).unwrap();
            let choice = &chunk["choices"][0];
            if !choice["finish_reason"].is_null() {
                finish = choice["finish_reason"].clone();
            }
            for piece in choice["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let index = piece["index"].as_u64().unwrap() as usize;
                if calls.len() <= index {
                    calls.resize(index + 1, Default::default());
                }
                let call = &mut calls[index];
                if let Some(id) = piece["id"].as_str() {
                    call.0 = id.to_string();
                }
                if let Some(name) = piece["function"]["name"].as_str() {
                    call.1 = name.to_string();
                }
                call.2
                    .push_str(piece["function"]["arguments"].as_str().unwrap_or(""));
            }
        }
        assert_eq!(finish, "tool_calls", "{model}");
        assert_eq!(
            calls.len(),
            expected.len(),
            "{model}: {calls:?} vs {expected:?}"
        );
        for (got, want) in calls.iter().zip(&expected) {
            assert!(!got.0.is_empty(), "{model}: a call without id");
            assert_eq!(got.1, want["function"]["name"], "{model}");
            assert_eq!(got.2, want["function"]["arguments"], "{model}");
        }
    }
}

#[test]
fn a_tool_round_trip_reaches_a_final_answer() {
    let (_models, server) = server();
    for model in ["tiny", "qwen"] {
        let question = json!({"role": "user", "content": "weather in Oslo?"});
        let first = chat(
            &server,
            json!({"model": model, "messages": [question], "tools": [weather_tool()],
                   "tool_choice": "required", "parallel_tool_calls": false, "max_tokens": 400}),
        );
        let call = calls_of(&first)[0].clone();
        let turns = json!([
            question,
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"temp_c\": 4, \"sky\": \"snow\"}"},
        ]);
        let answer = chat(
            &server,
            json!({"model": model, "messages": turns, "tools": [weather_tool()],
                   "tool_choice": "none", "max_tokens": 8}),
        );
        let message = &answer["choices"][0]["message"];
        assert!(message["tool_calls"].is_null(), "{answer}");
        assert!(message["content"].is_string(), "{answer}");
        // The tool's result went through the template into the prompt.
        let without = chat(
            &server,
            json!({"model": model, "messages": [question], "max_tokens": 1}),
        );
        let (with, without) = (
            answer["usage"]["prompt_tokens"].as_u64().unwrap(),
            without["usage"]["prompt_tokens"].as_u64().unwrap(),
        );
        assert!(with > without + 10, "{model}: {with} vs {without}");
    }
}

#[test]
fn think_blocks_split_into_reasoning() {
    let models = tiny_models(&[]);
    std::fs::copy(
        tiny_gguf_with_template("qwen3"),
        models.path().join("thinker.gguf"),
    )
    .unwrap();
    let server = http_server(&models, &[]);
    let grammar = r#"root ::= "<think>" [a-z]{3,6} "</think>" " "? [a-z]{2,5}"#;
    let reply = chat(
        &server,
        json!({"model": "thinker", "messages": [{"role": "user", "content": "hi"}],
               "grammar": grammar, "max_tokens": 60, "temperature": 0,
               "chat_template_kwargs": {"enable_thinking": true}}),
    );
    let message = &reply["choices"][0]["message"];
    let reasoning = message["reasoning_content"].as_str().unwrap_or("");
    let content = message["content"].as_str().unwrap_or("");
    assert!(
        (3..=6).contains(&reasoning.trim().len())
            && reasoning.trim().chars().all(|c| c.is_ascii_lowercase()),
        "{reply}"
    );
    assert!(
        !content.contains("think") && (2..=5).contains(&content.trim().len()),
        "{reply}"
    );
    // Streamed, the same split arrives as reasoning deltas, then content.
    let mut body = json!({"model": "thinker", "messages": [{"role": "user", "content": "hi"}],
        "grammar": grammar, "max_tokens": 60, "stream": true, "temperature": 0});
    body["chat_template_kwargs"] = json!({"enable_thinking": true});
    let stream = server.post("/v1/chat/completions", &body);
    let (mut thought, mut said) = (String::new(), String::new());
    for event in stream.events().iter().filter(|e| *e != "[DONE]") {
        let chunk: Value = serde_json::from_str(event).unwrap();
        let delta = &chunk["choices"][0]["delta"];
        thought.push_str(delta["reasoning_content"].as_str().unwrap_or(""));
        said.push_str(delta["content"].as_str().unwrap_or(""));
    }
    assert_eq!(
        (thought.trim(), said.trim()),
        (reasoning.trim(), content.trim())
    );
}

#[test]
fn every_unsupported_field_is_a_400_naming_it() {
    let (_models, server) = server();
    let base = json!({"model": "tiny", "messages": [{"role": "user", "content": "x"}]});
    for (field, value) in [
        ("audio", json!({"voice": "alloy"})),
        ("modalities", json!(["text", "audio"])),
        ("prediction", json!({"type": "content", "content": "x"})),
        ("web_search_options", json!({})),
        ("functions", json!([])),
        ("function_call", json!("auto")),
        ("metadata", json!({"a": "b"})),
        ("service_tier", json!("flex")),
        ("store", json!(true)),
        ("verbosity", json!("low")),
        ("n", json!(0)),
        ("no_such_field", json!(1)),
    ] {
        let mut body = base.clone();
        body[field] = value;
        let reply = server.post("/v1/chat/completions", &body);
        reply.assert_status(400);
        let text = String::from_utf8_lossy(&reply.body).to_string();
        assert!(text.contains(field), "{field}: {text}");
    }
    let reply = server.post(
        "/v1/completions",
        &json!({"model": "tiny", "prompt": "x", "suffix": "y"}),
    );
    reply.assert_status(400);
    assert!(String::from_utf8_lossy(&reply.body).contains("suffix"));
    let reply = server.post("/v1/embeddings", &json!({"input": "x", "dimensions": 8}));
    reply.assert_status(400);
    assert!(String::from_utf8_lossy(&reply.body).contains("dimensions"));
}

/// `<|im_end|>`, the tiny model's end-of-sequence token
/// (tests/fixtures/make_tiny_gguf.py: 3 specials, 256 bytes, `<|im_start|>`).
const TINY_EOS: u32 = 260;

fn first_token(reply: &Value) -> String {
    reply["choices"][0]["logprobs"]["content"][0]["token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn logprobs_biases_penalties_and_eos_controls_take_effect() {
    let (_models, server) = server();
    let ask = |extra: Value| {
        let mut body = json!({"model": "tiny", "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 12, "temperature": 0.0, "repeat_penalty": 1.0, "logprobs": true,
            "top_logprobs": 3});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        chat(&server, body)
    };
    let plain = ask(json!({}));
    let tokens = plain["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(
        tokens.len() as u64,
        plain["usage"]["completion_tokens"].as_u64().unwrap(),
        "{plain}"
    );
    for token in tokens {
        let logprob = token["logprob"].as_f64().unwrap();
        assert!(logprob <= 0.0, "{token}");
        let top = token["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{token}");
        // Greedy: the chosen token is the likeliest one.
        assert!(
            (top[0]["logprob"].as_f64().unwrap() - logprob).abs() < 1e-4,
            "{token}"
        );
    }
    // A bias of -100 on the greedy choice makes another token come first.
    let first = first_token(&plain);
    let ids = server
        .post("/tokenize", &json!({"model": "tiny", "content": first}))
        .ok_json()["tokens"]
        .clone();
    if let [id] = ids.as_array().unwrap().as_slice() {
        let biased = ask(json!({"logit_bias": {id.to_string(): -100}}));
        assert_ne!(first_token(&biased), first, "{biased}");
    }
    // Penalties change what greedy decoding of a random model repeats.
    let penalised =
        ask(json!({"frequency_penalty": 2.0, "presence_penalty": 2.0, "max_tokens": 40}));
    let unpenalised = ask(json!({"max_tokens": 40}));
    assert_ne!(
        penalised["choices"][0]["message"]["content"],
        unpenalised["choices"][0]["message"]["content"]
    );
    // End-of-sequence pushed to the top: it ends the reply at once, after
    // min_tokens tokens, or never with ignore_eos.
    let eos_first = json!({"logit_bias": {TINY_EOS.to_string(): 100}});
    assert_eq!(ask(eos_first.clone())["usage"]["completion_tokens"], 0);
    let mut held = eos_first.clone();
    held["min_tokens"] = json!(5);
    let held = ask(held);
    assert_eq!(held["usage"]["completion_tokens"], 5, "{held}");
    assert_eq!(held["choices"][0]["finish_reason"], "stop");
    let mut ignored = eos_first;
    ignored["ignore_eos"] = json!(true);
    let ignored = ask(ignored);
    assert_eq!(ignored["usage"]["completion_tokens"], 12, "{ignored}");
    assert_eq!(ignored["choices"][0]["finish_reason"], "length");
    // With include_usage, usage arrives alone in a last chunk.
    let stream = server.post(
        "/v1/chat/completions",
        &json!({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 9,
                "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}}),
    );
    let events: Vec<Value> = stream
        .events()
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["choices"], json!([]), "{last}");
    assert_eq!(last["usage"]["completion_tokens"], 9, "{last}");
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|e| e["usage"].is_null())
    );
}
