//! Reading CreateResponse requests: items, tools, formats and refusals.

use super::*;

fn request(body: Value) -> Result<Plan, ApiError> {
    let mut body = body;
    body["request_type"] = json!("CreateResponse");
    let Ok((_, crate::api::Request::CreateResponse(request))) =
        crate::api::request_from_value(body)
    else {
        panic!("parses")
    };
    Plan::check(request)
}

#[test]
fn items_become_turns_with_tool_calls_and_results() {
    let plan = request(json!({"instructions": "be brief", "input": [
        {"role": "developer", "content": "dev"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "It is sunny.", "annotations": []}]},
    ]}))
    .unwrap();
    let roles: Vec<&str> = plan.input.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "assistant"]);
    assert_eq!(plan.input[1].content, "weather?");
    assert_eq!(plan.input[2].tool_calls[0].function.name, "weather");
    assert_eq!(plan.input[3].name.as_deref(), Some("weather"));
    assert_eq!(plan.input[3].tool_call_id.as_deref(), Some("c1"));
    assert_eq!(plan.instructions.as_deref(), Some("be brief"));
    assert!(!plan.stream && plan.store);
}

#[test]
fn tools_and_formats_reach_the_structure() {
    let plan = request(json!({"input": "hi",
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "f"},
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "array"}}}}))
    .unwrap();
    assert_eq!(plan.structure.tools[0].function.name, "f");
    assert!(matches!(
        plan.structure.tool_choice,
        Some(ToolChoice::Named(_))
    ));
    assert_eq!(plan.structure.json_schema, Some(json!({"type": "array"})));
    assert_eq!(plan.echo.text["format"]["name"], "x");
}

#[test]
fn what_is_not_implemented_is_refused_by_name() {
    for (body, named) in [
        (
            json!({"input": "hi", "reasoning": {"effort": "low"}}),
            "reasoning",
        ),
        (json!({"input": "hi", "background": true}), "background"),
        (
            json!({"input": "hi", "include": ["reasoning.encrypted_content"]}),
            "include",
        ),
        (
            json!({"input": "hi", "tools": [{"type": "web_search"}]}),
            "web_search",
        ),
        (
            json!({"input": "hi", "tools": [{"type": "function", "name": "f", "defer_loading": true}]}),
            "defer_loading",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
            "input_image",
        ),
        (
            json!({"input": [{"type": "web_search_call"}]}),
            "web_search_call",
        ),
        (
            json!({"input": "hi", "text": {"format": {"type": "grammar"}}}),
            "text.format.type",
        ),
        (
            json!({"input": "hi", "tool_choice": {"type": "function", "name": "g"}}),
            "\"g\"",
        ),
        (json!({"input": "hi", "metadata": {"k": 1}}), "metadata.k"),
        (json!({"input": []}), "input"),
    ] {
        let error = request(body.clone()).unwrap_err();
        assert_eq!(error.status, 400, "{body}");
        assert!(error.detail.contains(named), "{body}: {}", error.detail);
    }
    // Null means unset, as OpenAI's SDKs send it.
    assert!(request(json!({"input": "hi", "reasoning": null, "include": []})).is_ok());
}
