//! History search and truncation over a data channel (the server in this
//! process, as most WebRTC tests run it): the same requests as native
//! messaging, answered the same way.

use serde_json::json;

use super::TestServer;
use super::client::Client;

#[test]
fn history_search_and_truncation_over_a_data_channel() {
    let server = TestServer::start();
    let mut client = Client::connect(server.http);
    let mut ids = Vec::new();
    for (i, content) in [
        "Which ferns grow in shade?",
        "Maidenhair ferns like damp shade.",
    ]
    .into_iter()
    .enumerate()
    {
        let role = if i == 0 { "user" } else { "assistant" };
        let saved = client.call(json!({"id": i, "request_type": "SaveMessage",
            "session_id": "garden", "role": role, "content": content}));
        assert_eq!(saved["response_type"], "MessageSaved", "{saved}");
        ids.push(saved["message"]["id"].as_i64().unwrap());
    }
    let found =
        client.call(json!({"id": "q", "request_type": "SearchHistory", "query": "maidenhair"}));
    assert_eq!(found["response_type"], "HistoryResults", "{found}");
    assert_eq!(found["sessions"][0]["session_id"], "garden");
    assert_eq!(found["sessions"][0]["matches"][0]["message_id"], ids[1]);

    let cut = client.call(json!({"id": "t", "request_type": "TruncateSession",
        "session_id": "garden", "from_id": ids[1]}));
    assert_eq!(cut["response_type"], "SessionTruncated", "{cut}");
    let found =
        client.call(json!({"id": "q2", "request_type": "SearchHistory", "query": "maidenhair"}));
    assert_eq!(found["sessions"], json!([]), "{found}");
    let empty = client.call(json!({"id": "e", "request_type": "SearchHistory", "query": " "}));
    assert_eq!(empty["error"]["status"], 400, "{empty}");
}
