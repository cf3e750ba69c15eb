//! CreateResponse, GetResponse and DeleteResponse through the handler with
//! the fake chat model: the conversation rebuilt from `previous_response_id`
//! (its prompt counted in the fake's words), instructions not inherited,
//! streaming frames, `store: false`, and the 404s.

use serde_json::{Value, json};

use super::{Fixture, Setup, assert_error};

fn create(fixture: &Fixture, fields: Value) -> Value {
    let mut request = json!({"id": "r", "request_type": "CreateResponse", "model": "alpha"});
    request
        .as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    fixture.call(request)
}

#[test]
fn a_chain_of_responses_carries_the_conversation_but_not_the_instructions() {
    let fixture = Fixture::new(Setup::default());
    let first = create(
        &fixture,
        json!({"input": "what is up", "instructions": "be brief"}),
    );
    assert_eq!(first["response_type"], "ResponseResult", "{first}");
    let first = &first["response"];
    assert_eq!(first["status"], "completed");
    assert_eq!(
        first["output"][0]["content"][0]["text"],
        "Hello there friend"
    );
    // "system: be brief" + "user: what is up": 3 + 4 words.
    assert_eq!(first["usage"]["input_tokens"], 7, "{first}");

    let second = create(
        &fixture,
        json!({"input": [{"role": "user", "content": "again"}], "previous_response_id": first["id"]}),
    );
    let second = &second["response"];
    assert_eq!(second["previous_response_id"], first["id"]);
    // "user: what is up" + "assistant: Hello there friend" + "user: again".
    assert_eq!(second["usage"]["input_tokens"], 4 + 4 + 2, "{second}");
    assert_eq!(second["instructions"], Value::Null);

    let id = second["id"].as_str().unwrap();
    let read = fixture.call(json!({"id": 1, "request_type": "GetResponse", "response_id": id}));
    assert_eq!(&read["response"], second);
    let deleted =
        fixture.call(json!({"id": 2, "request_type": "DeleteResponse", "response_id": id}));
    assert_eq!(deleted["deleted"], true, "{deleted}");
    let gone = fixture.call(json!({"id": 3, "request_type": "GetResponse", "response_id": id}));
    assert_error(&gone, 404, id);
    let unknown = create(&fixture, json!({"input": "x", "previous_response_id": id}));
    assert_error(&unknown, 404, id);
}

#[test]
fn a_streamed_response_starts_then_chunks_then_finishes_and_store_false_keeps_nothing() {
    let fixture = Fixture::new(Setup::default());
    let request = json!({"id": "s", "request_type": "CreateResponse", "model": "alpha",
        "input": "hi", "stream": true, "store": false, "max_output_tokens": 2});
    let replies = fixture.send(request).finished();
    let kinds: Vec<&str> = replies
        .iter()
        .map(|r| r["response_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "ResponseStarted",
            "ChatChunk",
            "ChatChunk",
            "ResponseResult"
        ]
    );
    let (started, done) = (&replies[0]["response"], &replies[3]["response"]);
    assert_eq!(started["id"], done["id"]);
    assert_eq!(started["status"], "in_progress");
    assert_eq!(done["status"], "incomplete");
    assert_eq!(done["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(done["store"], false);
    let read =
        fixture.call(json!({"id": 1, "request_type": "GetResponse", "response_id": done["id"]}));
    assert_error(&read, 404, done["id"].as_str().unwrap());
}
