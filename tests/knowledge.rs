//! The knowledge base and backups against the real binary: a PDF and a
//! Markdown file uploaded in parts over native messaging, indexed with
//! "chunk N of M" progress events by the real MiniLM, a grounded chat with
//! the real SmolLM2 citing the PDF's page, the PDF deleted and gone from the
//! answers; and over HTTP, a backup streamed in parts, the history deleted,
//! the backup uploaded in parts and restored to the same sessions and
//! messages, a bad backup refused whole; and a backup's documents restored
//! into a new install, found there by meaning.
//!
//! The test PDF is made here (`tabagent::extract::minimal_pdf`: one line of
//! Helvetica text a page, a valid xref), so no fixture file is needed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::util::{HttpServer, NativeHost, TempDir, http};

pub(crate) const MINILM: &str = "all-minilm-l6-v2";
const SMOLLM: &str = "smollm2-135m-instruct-q4_1";
pub(crate) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The models dir of `make test`, or None outside it (a failure under CI).
pub(crate) fn real_models(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("TABAGENT_TEST_MODELS")
        .zip(std::env::var_os("ORT_DYLIB_PATH"))
        .filter(|_| cfg!(all(feature = "onnx", feature = "llama", feature = "pdf")));
    match found {
        Some((dir, _)) => Some(PathBuf::from(dir)),
        None => {
            crate::util::skip(
                test,
                "needs TABAGENT_TEST_MODELS, ORT_DYLIB_PATH (make test sets them) and the onnx, llama and pdf features",
            );
            None
        }
    }
}

/// A native host; frames that are not the awaited reply are kept as events.
struct Host {
    host: NativeHost,
    events: Vec<Value>,
    _models: TempDir,
}

impl Host {
    fn start(real: &std::path::Path) -> Host {
        let models = TempDir::new("models");
        std::os::unix::fs::symlink(real.join(MINILM), models.path().join(MINILM)).unwrap();
        let gguf = format!("{SMOLLM}.gguf");
        std::os::unix::fs::symlink(real.join(&gguf), models.path().join(&gguf)).unwrap();
        let dir = models.path().to_path_buf();
        let host = NativeHost::start_with(TempDir::new("data"), move |c| {
            c.env("TABAGENT_MODELS_DIR", &dir);
        });
        Host {
            host,
            events: Vec::new(),
            _models: models,
        }
    }

    /// Sends `message` and returns its final reply; events meanwhile are kept.
    fn request(&mut self, message: Value) -> Value {
        let id = message["id"].clone();
        self.host.send(&message);
        loop {
            let frame = self.host.recv_within(Duration::from_secs(120));
            if frame["id"] == id && frame["done"] == true {
                return frame;
            }
            if frame["response_type"] == "Event" {
                self.events.push(frame);
            }
        }
    }

    /// Waits (bounded) for the `done` or `failed` event of `upload_id`.
    fn indexed(&mut self, upload_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(last) = self.events.iter().find(|e| {
                e["upload_id"] == upload_id && (e["state"] == "done" || e["state"] == "failed")
            }) {
                return last.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no end of indexing for {upload_id}"
            );
            let frame = self.host.recv_within(Duration::from_secs(120));
            if frame["response_type"] == "Event" {
                self.events.push(frame);
            }
        }
    }

    /// Uploads `bytes` in chunks of `chunk_size` and starts its indexing.
    fn upload(
        &mut self,
        collection: &str,
        filename: &str,
        bytes: &[u8],
        chunk_size: usize,
    ) -> String {
        let sha = hex(&Sha256::digest(bytes));
        let started = self.request(json!({"id": "start", "request_type": "UploadStart",
            "collection": collection, "filename": filename, "size": bytes.len(),
            "chunk_size": chunk_size, "sha256": sha}));
        assert_eq!(started["response_type"], "UploadStarted", "{started}");
        let id = started["upload_id"].as_str().unwrap().to_string();
        let chunks: Vec<&[u8]> = bytes.chunks(chunk_size).collect();
        assert_eq!(started["chunks"], chunks.len());
        // Last chunk first: parts may come in any order.
        for (index, part) in chunks.iter().enumerate().rev() {
            let stored = self.request(json!({"id": "chunk", "request_type": "UploadChunk",
                "upload_id": id, "index": index, "data": B64.encode(part)}));
            assert_eq!(stored["response_type"], "UploadChunkStored", "{stored}");
        }
        let finish =
            self.request(json!({"id": "finish", "request_type": "UploadFinish", "upload_id": id}));
        assert_eq!(finish["response_type"], "IndexingStarted", "{finish}");
        assert_eq!(finish["job_id"].as_str().unwrap().len(), 16);
        id
    }

    fn ask(&mut self, question: &str) -> Value {
        let reply = self.request(json!({"id": "ask", "request_type": "Chat", "stream": false,
            "collections": ["kb"], "temperature": 0, "max_tokens": 48,
            "messages": [{"role": "user", "content": question}]}));
        assert_eq!(reply["response_type"], "ChatComplete", "{reply}");
        reply
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn markdown() -> String {
    let mut text = String::from("# Garden notes\n\n");
    for i in 0..150 {
        text.push_str(&format!(
            "Tomato bed {i} is watered every morning and fed compost each spring; the basil beside it keeps pests away.\n\n"
        ));
    }
    text
}

#[test]
fn uploaded_pdf_and_markdown_are_indexed_with_progress_and_cited_until_deleted() {
    let Some(real) =
        real_models("uploaded_pdf_and_markdown_are_indexed_with_progress_and_cited_until_deleted")
    else {
        return;
    };
    let mut host = Host::start(&real);
    host.host
        .send(&json!({"id": "sub", "request_type": "Subscribe", "events": ["IndexProgress"]}));
    let subscribed = host.host.recv();
    assert_eq!(subscribed["response_type"], "Subscribed", "{subscribed}");

    let pdf = tabagent::extract::minimal_pdf(&[
        "Annual report of the Lakeside Zoo.",
        "The zebras at Lakeside Zoo eat fresh clover hay at noon every day.",
    ]);
    let pdf_upload = host.upload("kb", "zoo-report.pdf", &pdf, 4096);
    let md = markdown();
    assert!(md.len() > 3 * 4096);
    let md_upload = host.upload("kb", "garden.md", md.as_bytes(), 4096);

    for (upload, name) in [(&pdf_upload, "zoo-report.pdf"), (&md_upload, "garden.md")] {
        let end = host.indexed(upload);
        assert_eq!(end["event"], "IndexProgress");
        assert_eq!(end["state"], "done", "{end}");
        assert_eq!(end["filename"], name);
        let progress: Vec<&Value> = host
            .events
            .iter()
            .filter(|e| e["upload_id"] == **upload && e["state"] == "embedding")
            .collect();
        assert!(!progress.is_empty(), "no progress events for {name}");
        let last = progress.last().unwrap();
        assert!(last["chunks"].as_u64().unwrap() >= 1);
        assert_eq!(
            last["chunk"], last["chunks"],
            "the last progress is chunk M of M"
        );
        assert_eq!(end["chunks"], last["chunks"]);
    }
    let md_chunks = host
        .events
        .iter()
        .find(|e| e["upload_id"] == md_upload && e["state"] == "done")
        .unwrap()["chunks"]
        .as_u64()
        .unwrap();
    assert!(
        md_chunks > 1,
        "the Markdown file is cut into several chunks"
    );

    let listed =
        host.request(json!({"id": "ls", "request_type": "ListDocuments", "collection": "kb"}));
    let documents = listed["documents"].as_array().unwrap();
    assert_eq!(documents.len(), 2, "{listed}");
    let pdf_doc = documents
        .iter()
        .find(|d| d["title"] == "zoo-report.pdf")
        .unwrap();
    assert_eq!(pdf_doc["metadata"]["pages"], 2);
    assert_eq!(pdf_doc["metadata"]["content_type"], "application/pdf");

    let answer = host.ask("What do the zebras at the zoo eat at noon?");
    assert!(
        !answer["text"].as_str().unwrap().trim().is_empty(),
        "{answer}"
    );
    let citations = answer["citations"].as_array().unwrap();
    let top = &citations[0];
    assert_eq!(top["title"], "zoo-report.pdf", "{answer}");
    assert_eq!(
        top["page_end"], 2,
        "the passage runs into the PDF's second page: {answer}"
    );
    assert!(top["page"].as_u64().unwrap() <= 2);
    assert!(
        top["text"].as_str().unwrap().contains("clover hay"),
        "{top}"
    );
    assert_eq!(top["index"], 1);
    assert_eq!(top["document_id"], pdf_doc["document_id"]);

    let deleted = host.request(json!({"id": "del", "request_type": "DeleteDocument",
        "collection": "kb", "document_id": pdf_doc["document_id"]}));
    assert_eq!(deleted["response_type"], "DocumentDeleted", "{deleted}");
    let answer = host.ask("What do the zebras at the zoo eat at noon?");
    let citations = answer["citations"].as_array().unwrap();
    assert!(!citations.is_empty());
    assert!(
        citations.iter().all(|c| c["title"] == "garden.md"),
        "the PDF is gone from the answers: {answer}"
    );

    // A file kind the knowledge base does not read is refused up front.
    let refused = host.request(json!({"id": "bad", "request_type": "UploadStart",
        "collection": "kb", "filename": "song.mp3", "size": 10}));
    assert_eq!(refused["error"]["status"], 415, "{refused}");
}

/// Server-sent events' payloads as JSON.
fn sse(reply: &crate::util::HttpReply) -> Vec<Value> {
    reply
        .assert_status(200)
        .events()
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

/// A file sent in parts, put back together and checked against its hash.
fn receive_file(events: &[Value]) -> (Vec<u8>, Value) {
    let mut bytes = Vec::new();
    for (i, part) in events
        .iter()
        .filter(|e| e["response_type"] == "FilePart")
        .enumerate()
    {
        assert_eq!(part["index"], i);
        bytes.extend(B64.decode(part["data"].as_str().unwrap()).unwrap());
    }
    let complete = events.last().unwrap().clone();
    assert_eq!(complete["response_type"], "FileComplete", "{complete}");
    assert_eq!(complete["bytes"], bytes.len());
    assert_eq!(complete["sha256"], hex(&Sha256::digest(&bytes)));
    (bytes, complete)
}

fn upload_restore(server: &HttpServer, bytes: &[u8]) -> Value {
    let started = server
        .post(
            "/api/uploads",
            &json!({"purpose": "restore", "filename": "backup.json",
            "size": bytes.len(), "chunk_size": 4096}),
        )
        .ok_json();
    let id = started["upload_id"].as_str().unwrap();
    for (index, part) in bytes.chunks(4096).enumerate() {
        let body = json!({"data": B64.encode(part)}).to_string();
        let path = format!("/api/uploads/{id}/chunks/{index}");
        let stored = http(server.addr, "PUT", &path, &[], Some(body.as_bytes())).ok_json();
        assert_eq!(stored["index"], index);
    }
    server
        .post("/api/restore", &json!({"upload_id": id}))
        .json()
}

fn history(server: &HttpServer, session: &str) -> Vec<Value> {
    let page = server
        .get(&format!(
            "/api/sessions/{session}/messages?order=oldest&limit=1000"
        ))
        .ok_json();
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| json!([m["role"], m["content"], m["metadata"], m["created_at"]]))
        .collect()
}

#[test]
fn backup_then_restore_round_trips_history_and_a_bad_file_changes_nothing() {
    let server = HttpServer::start();
    let sessions = ["trip-planning", "recipes", "notes-2"];
    let big = "long answer ".repeat(60_000); // the backup takes several parts
    for (i, session) in sessions.iter().enumerate() {
        for turn in 0..3 {
            let content = if i == 1 && turn == 2 {
                big.clone()
            } else {
                format!("{session} turn {turn} ✓")
            };
            let role = if turn % 2 == 0 { "user" } else { "assistant" };
            server
                .post(
                    &format!("/api/sessions/{session}/messages"),
                    &json!({"role": role, "content": content, "metadata": {"turn": turn}}),
                )
                .ok_json();
        }
    }
    http(
        server.addr,
        "PATCH",
        "/api/params",
        &[],
        Some(br#"{"temperature": 0.25}"#),
    )
    .ok_json();
    let before: Vec<Vec<Value>> = sessions.iter().map(|s| history(&server, s)).collect();

    let (markdown, complete) =
        receive_file(&sse(&server.get("/api/sessions/trip-planning/export")));
    assert_eq!(complete["content_type"], "text/markdown");
    let markdown = String::from_utf8(markdown).unwrap();
    assert!(
        markdown.contains("## User · ") && markdown.contains("trip-planning turn 1 ✓"),
        "{markdown}"
    );

    let (backup, complete) = receive_file(&sse(&server.get("/api/backup")));
    assert!(complete["parts"].as_u64().unwrap() > 1, "{complete}");
    assert_eq!(complete["sessions"], 3);
    assert_eq!(complete["messages"], 9);

    for session in sessions {
        http(
            server.addr,
            "DELETE",
            &format!("/api/sessions/{session}"),
            &[],
            None,
        )
        .ok_json();
    }
    http(
        server.addr,
        "PATCH",
        "/api/params",
        &[],
        Some(br#"{"temperature": 0.9}"#),
    )
    .ok_json();
    server
        .post(
            "/api/sessions/recipes/messages",
            &json!({"role": "user", "content": "newer"}),
        )
        .ok_json();

    // A file with one bad message is refused whole: nothing changes.
    let mut bad: Value = serde_json::from_slice(&backup).unwrap();
    bad["sessions"][2]["messages"][1]["role"] = json!("wizard");
    let refused = upload_restore(&server, bad.to_string().as_bytes());
    assert_eq!(refused["status"], 422, "{refused}");
    assert!(
        refused["detail"].as_str().unwrap().contains("wizard"),
        "{refused}"
    );
    assert_eq!(history(&server, "recipes").len(), 1);
    assert_eq!(
        server.get("/api/sessions/trip-planning/messages").status,
        200
    );
    assert!(history(&server, "trip-planning").is_empty());
    let refused = upload_restore(&server, &backup[..backup.len() / 2]);
    assert_eq!(refused["status"], 422, "{refused}");

    let restored = upload_restore(&server, &backup);
    assert_eq!(restored["response_type"], "Restored", "{restored}");
    assert_eq!(restored["sessions"], 3);
    assert_eq!(restored["messages"], 9);
    assert_eq!(restored["settings"], true);
    let after: Vec<Vec<Value>> = sessions.iter().map(|s| history(&server, s)).collect();
    assert_eq!(after, before, "the same sessions and messages");
    let params = server.get("/api/params").ok_json();
    assert_eq!(params["temperature"], 0.25);
    let listed = server.get("/api/sessions").ok_json();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 3);
}

#[test]
fn a_backup_carries_documents_so_a_new_install_finds_them_after_a_restore() {
    let test = "a_backup_carries_documents_so_a_new_install_finds_them_after_a_restore";
    let Some(real) = real_models(test) else {
        return;
    };
    let with_models = |c: &mut std::process::Command| {
        c.arg("--models-dir").arg(&real);
    };
    let old = HttpServer::start_with(TempDir::new("old-install"), with_models);
    let pages = [
        (
            "https://example.com/cats",
            "Cats are small mammals that people keep as pets. \
          A cat sleeps for most of the day and purrs when it is content.",
        ),
        (
            "https://example.com/bread",
            "To bake bread, mix flour, water, salt and yeast. \
          Knead the dough, let it rise, and bake it in a hot oven.",
        ),
    ];
    for (url, text) in pages {
        old.post(
            "/api/collections/web/documents",
            &json!({"text": text, "url": url}),
        )
        .ok_json();
    }
    let (backup, _) = receive_file(&sse(&old.get("/api/backup")));
    drop(old);

    let new = HttpServer::start_with(TempDir::new("new-install"), with_models);
    let restored = upload_restore(&new, &backup);
    assert_eq!(restored["response_type"], "Restored", "{restored}");
    assert_eq!(restored["collections_created"], 1, "{restored}");
    assert_eq!(restored["documents"], 2, "{restored}");
    let listed = new.get("/api/collections").ok_json();
    assert_eq!(listed["collections"][0]["model"], MINILM, "{listed}");
    assert_eq!(listed["collections"][0]["documents"], 2, "{listed}");
    // A paraphrase finds the page: the restored vectors are MiniLM's own.
    let found = new
        .post(
            "/api/collections/web/query",
            &json!({"query": "Which animal likes to nap and makes a humming sound?", "top_k": 1}),
        )
        .ok_json();
    assert_eq!(
        found["hits"][0]["url"], "https://example.com/cats",
        "{found}"
    );
    // Restored again, the documents replace themselves: still two.
    assert_eq!(upload_restore(&new, &backup)["documents"], 2);
    let listed = new.get("/api/collections").ok_json();
    assert_eq!(listed["collections"][0]["documents"], 2, "{listed}");
}
