//! The event stream of a response, rendered from the protocol's replies.

use serde_json::{Value, json};

use super::*;
use crate::api::{RequestId, ResponseReply};
use crate::error::ApiError;

fn object(status: ResponseStatus, output: Vec<OutputItem>) -> ResponseObject {
    serde_json::from_value(json!({
        "id": "resp_0123456789abcdef0123456789abcdef", "object": "response", "created_at": 1,
        "status": status, "completed_at": null, "error": null, "incomplete_details": null,
        "instructions": null, "max_output_tokens": null, "metadata": {}, "model": "m",
        "output": output, "parallel_tool_calls": true, "previous_response_id": null,
        "store": true, "temperature": null, "top_p": null, "text": {"format": {"type": "text"}},
        "tool_choice": "auto", "tools": [], "truncation": "disabled", "usage": null,
        "user": null, "background": false,
    }))
    .unwrap()
}

fn reply(response: Response) -> Reply {
    Reply::new(RequestId::NONE, response)
}

/// (event name, data) pairs, checking that each data's type is its name.
fn events(bytes: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|event| {
            let (name, data) = event.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap().to_string();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name.as_str());
            (name, data)
        })
        .collect()
}

fn run(replies: Vec<Response>) -> Vec<(String, Value)> {
    let mut stream = ResponsesStream::default();
    let bytes: Vec<u8> = replies
        .into_iter()
        .flat_map(|r| stream.event(&reply(r)))
        .collect();
    let events = events(&bytes);
    let numbers: Vec<u64> = events
        .iter()
        .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>());
    events
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

fn started() -> Response {
    Response::ResponseStarted(Box::new(ResponseReply {
        response: object(ResponseStatus::InProgress, Vec::new()),
    }))
}

fn message(id: &str, text: &str) -> OutputItem {
    OutputItem::Message {
        id: item_id(id, ItemKind::Message),
        role: "assistant".into(),
        status: ItemStatus::Completed,
        content: vec![OutputContent::output_text(text)],
    }
}

#[test]
fn text_streams_in_openais_order() {
    let id = "resp_0123456789abcdef0123456789abcdef";
    let done = object(ResponseStatus::Completed, vec![message(id, "hello")]);
    let events = run(vec![
        started(),
        Response::ChatChunk(ChatChunk::text("he")),
        Response::ChatChunk(ChatChunk::text("llo")),
        Response::ResponseResult(Box::new(ResponseReply { response: done })),
    ]);
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(events[2].1["item"]["content"], json!([]));
    assert_eq!(events[4].1["item_id"], item_id(id, ItemKind::Message));
    assert_eq!(events[6].1["text"], "hello");
    assert_eq!(events[8].1["item"]["status"], "completed");
    assert_eq!(
        events[9].1["response"]["output"][0]["content"][0]["text"],
        "hello"
    );
}

#[test]
fn tool_calls_are_items_of_their_own_and_unstreamed_items_are_announced() {
    let id = "resp_0123456789abcdef0123456789abcdef";
    let call = OutputItem::FunctionCall {
        id: item_id(id, ItemKind::FunctionCall(0)),
        call_id: "call_a".into(),
        name: "f".into(),
        arguments: "{\"x\":1}".into(),
        status: ItemStatus::Completed,
    };
    let mut chunk = ChatChunk::default();
    chunk.tool_calls.push(ToolCallDelta {
        index: 0,
        id: Some("call_a".into()),
        name: Some("f".into()),
        arguments: "{\"x\"".into(),
    });
    let done = object(ResponseStatus::Completed, vec![message(id, "hi"), call]);
    let events = run(vec![
        started(),
        Response::ChatChunk(chunk),
        Response::ResponseResult(Box::new(ResponseReply { response: done })),
    ]);
    assert_eq!(
        names(&events)[2..],
        [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            // the call closes with the rest of its arguments
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            // then the message the stream never showed
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(events[2].1["item"]["call_id"], "call_a");
    assert_eq!(events[4].1["delta"], ":1}");
    assert_eq!(events[5].1["arguments"], "{\"x\":1}");
    assert_eq!(events[7].1["output_index"], 1);
}

#[test]
fn a_cut_response_is_incomplete_and_a_failure_is_failed() {
    let cut = object(ResponseStatus::Incomplete, Vec::new());
    let events = run(vec![
        started(),
        Response::ResponseResult(Box::new(ResponseReply { response: cut })),
    ]);
    assert_eq!(names(&events).last(), Some(&"response.incomplete"));

    let error = Response::error(ApiError::internal("the model broke"));
    let events = run(vec![
        started(),
        Response::ChatChunk(ChatChunk::text("a")),
        error.clone(),
    ]);
    let (name, failed) = events.last().unwrap();
    assert_eq!(name, "response.failed");
    assert_eq!(failed["response"]["status"], "failed");
    assert_eq!(failed["response"]["error"]["message"], "the model broke");
    assert_eq!(failed["response"]["output"][0]["content"][0]["text"], "a");
    // Before the response was announced, an `error` event.
    assert_eq!(run(vec![error])[0].1["code"], "internal");
}
