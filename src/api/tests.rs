use super::*;

#[test]
fn id_is_echoed_verbatim() {
    for id in [r#""abc""#, "7", "7.5", "-3", r#""""#] {
        let text = format!(r#"{{"id": {id}, "request_type": "Health"}}"#);
        let (parsed, _) = parse_request(text.as_bytes()).unwrap();
        let reply = Reply::new(parsed, Response::error(ApiError::not_found("x")));
        let out: Value = serde_json::from_slice(&reply.to_json()).unwrap();
        assert_eq!(out["id"], serde_json::from_str::<Value>(id).unwrap());
        assert_eq!(out["done"], true);
        assert_eq!(out["response_type"], "Error");
    }
}

#[test]
fn integral_floats_are_integers_except_in_metadata() {
    let body = br#"{"request_type": "Detokenize", "tokens": [1.0, 2, -3.0]}"#;
    let Ok((_, Request::Detokenize(request))) = parse_request(body) else {
        panic!("2.0 is an integer")
    };
    assert_eq!(request.tokens, [1, 2, -3]);
    let (_, e) = parse_request(br#"{"request_type": "Detokenize", "tokens": [1.5]}"#).unwrap_err();
    assert_eq!(e.status, 400);
    let body = br#"{"request_type": "SaveMessage", "session_id": "s", "role": "user",
        "content": "c", "metadata": [2.0]}"#;
    let Ok((_, Request::SaveMessage(request))) = parse_request(body) else {
        panic!()
    };
    assert_eq!(request.metadata.unwrap(), serde_json::json!([2.0]));
}

#[test]
fn bad_messages_are_typed_errors_keeping_the_id() {
    let (id, e) = parse_request(br#"{"id": 5, "request_type": "Nope"}"#).unwrap_err();
    assert_eq!(id.key(), "5");
    assert_eq!(e.status, 400);
    assert!(e.detail.contains("unknown request_type"), "{}", e.detail);

    let (id, e) = parse_request(br#"{"id": "a", "request_type": "SaveMessage"}"#).unwrap_err();
    assert_eq!(id.key(), "a");
    assert!(e.detail.contains("missing field"), "{}", e.detail);

    let (id, e) = parse_request(b"{not json").unwrap_err();
    assert!(id.is_none());
    assert!(e.detail.contains("not valid JSON"));

    let (_, e) = parse_request(b"\"\xff\"").unwrap_err();
    assert!(e.detail.contains("UTF-8"), "{}", e.detail);

    let (id, e) = parse_request(br#"{"id": [1], "request_type": "Health"}"#).unwrap_err();
    assert!(id.is_none());
    assert!(e.detail.contains("`id`"));

    let (_, e) = parse_request(br#"[1,2]"#).unwrap_err();
    assert!(e.detail.contains("JSON object"));

    let long = format!(
        r#"{{"id": "{}", "request_type": "Health"}}"#,
        "i".repeat(2 << 20)
    );
    let (id, e) = parse_request(long.as_bytes()).unwrap_err();
    assert!(id.is_none(), "an over-long id is not echoed");
    assert!(e.detail.contains("at most 256"), "{}", e.detail);
}

#[test]
fn job_ids_are_unpredictable_and_read_back() {
    let (a, b) = (JobId::random(), JobId::random());
    assert_ne!(a, b);
    assert_eq!(JobId::parse(&a.to_string()), Some(a));
    assert_eq!(a.to_string().len(), 16);
    assert_eq!(JobId::parse("123"), None);
    let reply = Reply {
        id: RequestId::text("x"),
        job_id: Some(a),
        response: Response::ChatChunk(ChatChunk::text("d")),
    };
    let out: Value = serde_json::from_slice(&reply.to_json()).unwrap();
    assert_eq!(out["job_id"], a.to_string());
}

#[test]
fn chunks_are_not_final() {
    let chunk = Response::ChatChunk(ChatChunk::text("hi"));
    let out: Value =
        serde_json::from_slice(&Reply::new(RequestId::text("x"), chunk).to_json()).unwrap();
    assert_eq!(out["done"], false);
    assert_eq!(out["response_type"], "ChatChunk");
    assert_eq!(out["delta"], "hi");
}
