//! A knowledge-base upload in parts over a WebRTC data channel to the real
//! binary (`--mode all`, signaled over native messaging as the extension's
//! offscreen document does through the service worker): UploadStart, the
//! numbered UploadChunks (each a data channel message), UploadFinish, the
//! IndexProgress events pushed over the same channel, then the document
//! listed and found by RagQuery with the real MiniLM.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::client::Client;
use crate::knowledge::{B64, MINILM, hex, real_models};
use crate::util::TempDir;

#[test]
fn a_file_uploaded_in_parts_over_a_data_channel_is_indexed_and_found() {
    let Some(real) =
        real_models("a_file_uploaded_in_parts_over_a_data_channel_is_indexed_and_found")
    else {
        return;
    };
    let models = TempDir::new("rtc-kb-models");
    std::os::unix::fs::symlink(real.join(MINILM), models.path().join(MINILM)).unwrap();
    let (_host, mut client) = super::signaling::host_and_channel(TempDir::new("rtc-kb"), |c| {
        c.env("TABAGENT_MODELS_DIR", models.path());
    });

    let subscribed = client.recv_after_send(
        json!({"id": "sub", "request_type": "Subscribe", "events": ["IndexProgress"]}),
    );
    assert_eq!(subscribed["response_type"], "Subscribed", "{subscribed}");
    let mut events: Vec<Value> = Vec::new();

    let mut text = String::from("# Orchard notes\n\n");
    for i in 0..120 {
        text.push_str(&format!(
            "Pear tree {i} in the north orchard is pruned in February and netted against starlings in August.\n\n"
        ));
    }
    text.push_str("The beehives stand beside the old quince tree by the east gate.\n");
    let bytes = text.as_bytes();
    let chunk_size = 4096;
    let started = call(
        &mut client,
        &mut events,
        json!({"id": "start", "request_type": "UploadStart", "collection": "rtc-kb",
            "filename": "orchard.md", "size": bytes.len(), "chunk_size": chunk_size,
            "sha256": hex(&Sha256::digest(bytes))}),
    );
    assert_eq!(started["response_type"], "UploadStarted", "{started}");
    let upload = started["upload_id"].as_str().unwrap().to_string();
    let parts: Vec<&[u8]> = bytes.chunks(chunk_size).collect();
    assert!(parts.len() >= 3, "{} parts", parts.len());
    assert_eq!(started["chunks"], parts.len());
    for (index, part) in parts.iter().enumerate() {
        let stored = call(
            &mut client,
            &mut events,
            json!({"id": format!("chunk{index}"), "request_type": "UploadChunk",
                "upload_id": upload, "index": index, "data": B64.encode(part)}),
        );
        assert_eq!(stored["response_type"], "UploadChunkStored", "{stored}");
    }
    let finish = call(
        &mut client,
        &mut events,
        json!({"id": "finish", "request_type": "UploadFinish", "upload_id": upload}),
    );
    assert_eq!(finish["response_type"], "IndexingStarted", "{finish}");

    // The progress events come over the same data channel.
    let deadline = Instant::now() + Duration::from_secs(120);
    let end = loop {
        if let Some(end) = events.iter().find(|e| {
            e["upload_id"] == upload.as_str() && (e["state"] == "done" || e["state"] == "failed")
        }) {
            break end.clone();
        }
        assert!(Instant::now() < deadline, "no end of indexing: {events:?}");
        let frame = client.recv(Duration::from_secs(120));
        if frame["response_type"] == "Event" {
            events.push(frame);
        }
    };
    assert_eq!(end["state"], "done", "{end}");
    let embedding: Vec<&Value> = events
        .iter()
        .filter(|e| e["upload_id"] == upload.as_str() && e["state"] == "embedding")
        .collect();
    assert!(!embedding.is_empty(), "no chunk N of M events: {events:?}");
    assert_eq!(embedding.last().unwrap()["chunk"], end["chunks"]);

    let listed = call(
        &mut client,
        &mut events,
        json!({"id": "ls", "request_type": "ListDocuments", "collection": "rtc-kb"}),
    );
    assert_eq!(listed["documents"][0]["title"], "orchard.md", "{listed}");
    let found = call(
        &mut client,
        &mut events,
        json!({"id": "q", "request_type": "RagQuery", "collection": "rtc-kb",
            "query": "Where are the beehives?", "top_k": 3}),
    );
    assert_eq!(found["response_type"], "RagResults", "{found}");
    let hits = found["hits"].as_array().unwrap();
    assert!(
        hits.iter()
            .any(|h| h["text"].as_str().unwrap().contains("quince tree")),
        "{found}"
    );
}

/// The final reply of `message`; pushed events meanwhile go to `events`.
fn call(client: &mut Client, events: &mut Vec<Value>, message: Value) -> Value {
    let id = message["id"].clone();
    client.send(&message);
    loop {
        let frame = client.recv(Duration::from_secs(60));
        if frame["id"] == id && frame["done"] == true {
            return frame;
        }
        if frame["response_type"] == "Event" {
            events.push(frame);
        }
    }
}
