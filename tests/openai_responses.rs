//! OpenAI's Responses API (`/v1/responses`) against the real binary and the
//! tiny random GGUF: the Response object, `previous_response_id` chains
//! (the earlier turn really is in the prompt), the event stream in OpenAI's
//! order, retrieve and delete, `store: false`, and 400s naming what is not
//! implemented. The official SDK's own checks are in tests/openai_client.py.

use serde_json::{Value, json};

use crate::util::{HttpServer, NativeHost, TempDir, http, tiny_gguf};

/// A data dir whose models dir holds the tiny random GGUF as `tiny`.
fn data_with_tiny_model() -> TempDir {
    let data = TempDir::new("openai-responses");
    let models = data.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(tiny_gguf(), models.join("tiny.gguf")).unwrap();
    data
}

fn create(server: &HttpServer, body: Value) -> Value {
    let mut request = json!({"model": "tiny", "max_output_tokens": 6});
    request
        .as_object_mut()
        .unwrap()
        .extend(body.as_object().unwrap().clone());
    server.post("/v1/responses", &request).ok_json()
}

fn input_tokens(response: &Value) -> u64 {
    response["usage"]["input_tokens"].as_u64().unwrap()
}

/// The text of a Response's message items, as the SDK's `output_text` reads it.
fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["type"] == "message")
        .flat_map(|item| item["content"].as_array().unwrap())
        .map(|part| part["text"].as_str().unwrap())
        .collect()
}

#[test]
fn a_response_is_openais_object_and_previous_response_id_continues_it() {
    let server = HttpServer::start_with(data_with_tiny_model(), |_| {});
    let first = create(
        &server,
        json!({"input": "hello there", "instructions": "be brief", "metadata": {"tab": "1"}}),
    );
    assert_eq!(first["object"], "response", "{first}");
    assert!(first["id"].as_str().unwrap().starts_with("resp_"));
    assert!(
        ["completed", "incomplete"].contains(&first["status"].as_str().unwrap()),
        "{first}"
    );
    assert_eq!(first["model"], "tiny");
    assert_eq!(first["instructions"], "be brief");
    assert_eq!(first["metadata"], json!({"tab": "1"}));
    let message = &first["output"][0];
    assert_eq!(
        (&message["type"], &message["role"]),
        (&json!("message"), &json!("assistant"))
    );
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(message["content"][0]["type"], "output_text");
    assert_eq!(message["content"][0]["annotations"], json!([]));
    let usage = &first["usage"];
    assert_eq!(
        usage["total_tokens"],
        input_tokens(&first) + usage["output_tokens"].as_u64().unwrap()
    );
    assert!(usage["input_tokens_details"]["cached_tokens"].is_u64());
    assert!(usage["output_tokens_details"]["reasoning_tokens"].is_u64());

    let next = create(
        &server,
        json!({"input": "and again", "previous_response_id": first["id"]}),
    );
    let alone = create(&server, json!({"input": "and again", "store": false}));
    assert_eq!(next["previous_response_id"], first["id"]);
    assert_eq!(next["instructions"], Value::Null, "not inherited");
    // The earlier user turn is in the prompt (and its reply besides).
    let earlier = server
        .post(
            "/tokenize",
            &json!({"model": "tiny", "content": "hello there"}),
        )
        .ok_json()["tokens"]
        .as_array()
        .unwrap()
        .len() as u64;
    assert!(
        input_tokens(&next) >= input_tokens(&alone) + earlier,
        "{next} {alone}"
    );

    let id = next["id"].as_str().unwrap();
    let read = server.get(&format!("/v1/responses/{id}")).ok_json();
    assert_eq!(read, next);
    let deleted = http(
        server.addr,
        "DELETE",
        &format!("/v1/responses/{id}"),
        &[],
        None,
    )
    .ok_json();
    assert_eq!(
        deleted,
        json!({"id": id, "object": "response", "deleted": true})
    );
    let gone = server.get(&format!("/v1/responses/{id}"));
    gone.assert_status(404);
    assert_eq!(
        gone.header("Content-Type"),
        Some("application/problem+json")
    );
    let orphan = server.post(
        "/v1/responses",
        &json!({"model": "tiny", "input": "x", "previous_response_id": id}),
    );
    orphan.assert_status(404);
    assert!(orphan.json()["detail"].as_str().unwrap().contains(id));
    // store: false left nothing to read.
    let unstored = format!("/v1/responses/{}", alone["id"].as_str().unwrap());
    server.get(&unstored).assert_status(404);
}

/// (event name, data) of an event stream, checking each data's type.
fn events(body: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter(|event| !event.trim().is_empty() && !event.starts_with(':'))
        .map(|event| {
            let mut lines = event.lines();
            let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], name, "{event}");
            (name.to_string(), data)
        })
        .collect()
}

#[test]
fn a_streamed_response_sends_openais_events_in_order() {
    let server = HttpServer::start_with(data_with_tiny_model(), |_| {});
    let first = create(&server, json!({"input": "hello"}));
    let reply = server.post(
        "/v1/responses",
        &json!({"model": "tiny", "input": "more", "stream": true, "max_output_tokens": 8,
            "previous_response_id": first["id"]}),
    );
    reply.assert_status(200);
    assert_eq!(reply.header("Content-Type"), Some("text/event-stream"));
    let events = events(&reply.body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let numbers: Vec<u64> = events
        .iter()
        .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>());
    assert_eq!(names[..2], ["response.created", "response.in_progress"]);
    let (last, done) = events.last().unwrap();
    assert!(
        ["response.completed", "response.incomplete"].contains(&last.as_str()),
        "{names:?}"
    );
    let response = &done["response"];
    assert_eq!(events[0].1["response"]["id"], response["id"]);
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    assert_eq!(response["previous_response_id"], first["id"]);
    // One message item: announced, its part, the text, closed, in that order.
    let expected_tail = [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        last.as_str(),
    ];
    assert_eq!(names[names.len() - 4..], expected_tail, "{names:?}");
    assert_eq!(
        names[2..4],
        ["response.output_item.added", "response.content_part.added"]
    );
    assert!(
        names[4..names.len() - 4]
            .iter()
            .all(|n| *n == "response.output_text.delta"),
        "{names:?}"
    );
    let deltas: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, output_text(response));
    let item_id = &response["output"][0]["id"];
    assert!(
        events[4..]
            .iter()
            .all(|(_, d)| d.get("item_id").is_none_or(|id| id == item_id))
    );
    // It was stored whole.
    let read = server
        .get(&format!(
            "/v1/responses/{}",
            response["id"].as_str().unwrap()
        ))
        .ok_json();
    assert_eq!(&read, response);
}

#[test]
fn what_is_not_implemented_is_a_400_naming_it() {
    let server = HttpServer::start_with(data_with_tiny_model(), |_| {});
    for (body, named) in [
        (
            json!({"input": "x", "reasoning": {"summary": "auto"}}),
            "reasoning",
        ),
        (
            json!({"input": "x", "service_tier": "flex"}),
            "service_tier",
        ),
        (
            json!({"input": "x", "tools": [{"type": "web_search"}]}),
            "web_search",
        ),
        (json!({"input": "x", "background": true}), "background"),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]}),
            "input_image",
        ),
    ] {
        let reply = server.post("/v1/responses", &body);
        reply.assert_status(400);
        let detail = reply.json()["detail"].as_str().unwrap().to_string();
        assert!(detail.contains(named), "{body}: {detail}");
    }
    let unknown = server.get("/v1/responses/resp_00000000000000000000000000000000");
    unknown.assert_status(404);
    let missing_model = server.post("/v1/responses", &json!({"model": "nope", "input": "x"}));
    missing_model.assert_status(404);
}

#[test]
fn native_messaging_creates_and_continues_responses_too() {
    let mut host = NativeHost::start_with(data_with_tiny_model(), |_| {});
    host.send(
        &json!({"id": "a", "request_type": "CreateResponse", "model": "tiny",
        "input": "hi", "stream": true, "max_output_tokens": 4}),
    );
    let frames = host.recv_until_done(&json!("a"));
    assert_eq!(frames[0]["response_type"], "ResponseStarted", "{frames:?}");
    let last = frames.last().unwrap();
    assert_eq!(last["response_type"], "ResponseResult", "{last}");
    let streamed: String = frames
        .iter()
        .filter(|f| f["response_type"] == "ChatChunk")
        .map(|f| f["delta"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, output_text(&last["response"]));
    let next = host.request(
        json!({"id": "b", "request_type": "CreateResponse", "model": "tiny",
        "input": "again", "max_output_tokens": 4,
        "previous_response_id": last["response"]["id"]}),
    );
    assert_eq!(next["response_type"], "ResponseResult", "{next}");
    assert!(input_tokens(&next["response"]) > input_tokens(&last["response"]));
}

/// The weather tool in the Responses API's flat shape; bounded so that
/// random weights finish the grammar's arguments.
fn weather_tool() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "additionalProperties": false, "required": ["city", "days"],
            "properties": {"city": {"type": "string", "maxLength": 10},
                           "days": {"type": "integer", "minimum": 1, "maximum": 7}}}})
}

/// The tiny model under Qwen 2.5's template (Hermes `<tool_call>` format).
fn qwen_server() -> HttpServer {
    let data = data_with_tiny_model();
    let qwen = crate::util::tiny_gguf_with_template("qwen2.5");
    std::fs::copy(qwen, data.path().join("models/qwen.gguf")).unwrap();
    HttpServer::start_with(data, |_| {})
}

fn assert_valid(schema: &Value, text: &str) {
    let value: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    let validator = jsonschema::validator_for(schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{text} against {schema}: {errors:?}");
}

#[test]
fn tools_become_function_call_items_and_their_results_continue_the_chain() {
    let server = qwen_server();
    let body = json!({"model": "qwen", "input": "weather in Paris?", "tools": [weather_tool()],
        "tool_choice": "required", "parallel_tool_calls": false, "max_output_tokens": 400,
        "temperature": 0.0});
    let called = server.post("/v1/responses", &body).ok_json();
    assert_eq!(called["status"], "completed", "{called}");
    let calls: Vec<&Value> = called["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["type"] == "function_call")
        .collect();
    assert_eq!(calls.len(), 1, "{called}");
    let call = calls[0];
    assert_eq!(call["name"], "get_weather");
    assert!(call["id"].as_str().unwrap().starts_with("fc_"), "{call}");
    assert!(!call["call_id"].as_str().unwrap().is_empty(), "{call}");
    assert_valid(
        &weather_tool()["parameters"],
        call["arguments"].as_str().unwrap(),
    );
    assert_eq!(called["tools"][0]["name"], "get_weather", "echoed as sent");

    // Streamed, the call is an item of its own whose deltas make its arguments.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let reply = server.post("/v1/responses", &streamed);
    let events = events(&reply.body);
    let (_, done) = events.last().unwrap();
    let item = done["response"]["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["type"] == "function_call")
        .unwrap_or_else(|| panic!("{done}"))
        .clone();
    let deltas: String = events
        .iter()
        .filter(|(n, d)| {
            n == "response.function_call_arguments.delta" && d["item_id"] == item["id"]
        })
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, item["arguments"].as_str().unwrap());
    let arguments_done = events
        .iter()
        .find(|(n, _)| n == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(arguments_done.1["arguments"], item["arguments"]);
    assert!(events.iter().any(|(n, d)| n == "response.output_item.added" && d["item"]["type"] == "function_call"));

    // The function's result goes back as an item; the chain carries the call.
    let answered = create(
        &server,
        json!({"model": "qwen", "previous_response_id": called["id"], "tools": [weather_tool()],
            "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny, 21 C"}]}),
    );
    assert!(
        ["completed", "incomplete"].contains(&answered["status"].as_str().unwrap()),
        "{answered}"
    );
    assert!(
        input_tokens(&answered) > input_tokens(&called),
        "{answered}"
    );
}

#[test]
fn a_json_schema_text_format_holds_the_output_to_it() {
    let server = qwen_server();
    let schema = json!({"type": "object", "additionalProperties": false, "required": ["name", "tags"],
        "properties": {"name": {"type": "string", "maxLength": 8},
                       "tags": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 5}}}});
    let reply = create(
        &server,
        json!({"model": "qwen", "input": "a user", "max_output_tokens": 200,
            "text": {"format": {"type": "json_schema", "name": "user", "schema": schema, "strict": true}}}),
    );
    assert_eq!(reply["status"], "completed", "{reply}");
    assert_valid(&schema, &output_text(&reply));
    assert_eq!(reply["text"]["format"]["name"], "user");
}
