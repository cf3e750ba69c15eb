//! The store against the real binary: history over HTTP and native
//! messaging, both transports writing at once, and retrieval (with the real
//! MiniLM model when `TABAGENT_TEST_MODELS` is set); a data dir gone wrong
//! in [`disk`], the SIGKILL crash test in [`crash`].

mod crash;
mod disk;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::util::{HttpServer, NativeHost, TempDir, command, frame, http, skip};

const ORIGIN: &str = "chrome-extension://abcdefghijklmnopabcdefghijklmnop/";

fn delete(server: &HttpServer, path: &str) -> crate::util::HttpReply {
    http(server.addr, "DELETE", path, &[], None)
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join("tabagent.db")
}

fn integrity(path: &Path) -> String {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn history_over_http() {
    let server = HttpServer::start();
    for (i, role) in ["user", "assistant", "user"].iter().enumerate() {
        let reply = server.post(
            "/api/sessions/tab%201/messages",
            &json!({"role": role, "content": format!("message {i} ✓"), "metadata": {"url": "https://x"}}),
        );
        let body = reply.ok_json();
        assert_eq!(body["response_type"], "MessageSaved");
        assert_eq!(body["message"]["session_id"], "tab 1");
    }
    let page = server.get("/api/sessions/tab%201/messages?limit=2").json();
    assert_eq!(page["messages"][0]["content"], "message 2 ✓");
    assert_eq!(page["messages"][1]["metadata"]["url"], "https://x");
    let before = page["next_before"].as_i64().unwrap();
    let rest = server
        .get(&format!(
            "/api/sessions/tab%201/messages?limit=2&before={before}"
        ))
        .json();
    assert_eq!(rest["messages"].as_array().unwrap().len(), 1);
    assert!(rest["next_before"].is_null());
    let oldest = server
        .get("/api/sessions/tab%201/messages?order=oldest&limit=1")
        .json();
    assert_eq!(oldest["messages"][0]["content"], "message 0 ✓");

    let sessions = server.get("/api/sessions?search=MESSAGE%202").json();
    assert_eq!(sessions["sessions"][0]["session_id"], "tab 1");
    assert_eq!(sessions["sessions"][0]["messages"], 3);
    assert_eq!(sessions["sessions"][0]["title"], "message 0 ✓");

    let bad = server.post(
        "/api/sessions/s/messages",
        &json!({"role": "robot", "content": "x"}),
    );
    assert_eq!(bad.status, 422);
    assert!(bad.json()["detail"].as_str().unwrap().contains("role"));
    let bad = server.get("/api/sessions/s/messages?limit=0");
    assert_eq!(bad.status, 422);

    assert_eq!(delete(&server, "/api/sessions/tab%201").status, 200);
    assert_eq!(delete(&server, "/api/sessions/tab%201").status, 404);
    let empty = server.get("/api/sessions/tab%201/messages").json();
    assert_eq!(empty["messages"], json!([]));
}

#[test]
fn history_over_native_messaging_survives_a_restart() {
    let data = TempDir::new("native-history");
    let start = || {
        NativeHost::start_with(TempDir::new("native-home"), |c| {
            c.env("TABAGENT_DATA_DIR", data.path());
        })
    };
    let mut host = start();
    let saved = host.request(json!({"id": 1, "request_type": "SaveMessage",
        "session_id": "s", "role": "user", "content": "日本語 🙂", "metadata": {"title": "Tab"}}));
    assert_eq!(saved["response_type"], "MessageSaved", "{saved}");
    assert_eq!(host.close_and_wait(), Some(0));

    let mut host = start();
    let page = host.request(json!({"id": 2, "request_type": "ChatHistory", "session_id": "s"}));
    assert_eq!(page["response_type"], "History", "{page}");
    assert_eq!(page["messages"][0]["content"], "日本語 🙂");
    assert_eq!(page["messages"][0]["metadata"]["title"], "Tab");
    let listed = host.request(json!({"id": 3, "request_type": "ListSessions", "search": "本語"}));
    assert_eq!(listed["sessions"][0]["session_id"], "s", "{listed}");
    let deleted =
        host.request(json!({"id": 4, "request_type": "DeleteSession", "session_id": "s"}));
    assert_eq!(deleted["response_type"], "SessionDeleted", "{deleted}");
    assert_eq!(host.close_and_wait(), Some(0));
}

/// A host serving native messaging and HTTP at once.
struct Both {
    child: Child,
    addr: SocketAddr,
    stdin: Option<std::process::ChildStdin>,
    frames: mpsc::Receiver<Value>,
}

impl Both {
    fn start(dir: &Path) -> Both {
        let mut child = command(dir)
            .args(["--mode", "all", "--bind", "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let frames = read_frames(child.stdout.take().unwrap());
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(addr) = line.split("HTTP on http://").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the host says where HTTP listens");
        Both {
            child,
            addr,
            stdin,
            frames,
        }
    }
}

impl Drop for Both {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_frames(mut stdout: impl Read + Send + 'static) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        loop {
            let mut header = [0u8; 4];
            if stdout.read_exact(&mut header).is_err() {
                return;
            }
            let mut body = vec![0u8; u32::from_ne_bytes(header) as usize];
            if stdout.read_exact(&mut body).is_err() {
                return;
            }
            let Ok(value) = serde_json::from_slice::<Value>(&body) else {
                return;
            };
            if tx.send(value).is_err() {
                return;
            }
        }
    });
    rx
}

#[test]
fn native_and_http_writers_at_once() {
    let dir = TempDir::new("both");
    let mut host = Both::start(dir.path());
    const NATIVE: usize = 400;
    const HTTP_THREADS: usize = 4;
    const PER_THREAD: usize = 60;
    let addr = host.addr;
    let http_writers: Vec<_> = (0..HTTP_THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let body = json!({"role": "user", "content": format!("h{t}-{i}")}).to_string();
                    let reply = http(
                        addr,
                        "POST",
                        &format!("/api/sessions/http-{t}/messages"),
                        &[],
                        Some(body.as_bytes()),
                    );
                    reply.assert_status(200);
                }
            })
        })
        .collect();
    let mut bytes = Vec::new();
    for i in 0..NATIVE {
        let message = json!({"id": i, "request_type": "SaveMessage", "session_id": "native",
            "role": "assistant", "content": format!("n-{i}")});
        bytes.extend(frame(message.to_string().as_bytes()));
    }
    // In slices, so that the queue (64 per lane) never overflows.
    let stdin = host.stdin.as_mut().unwrap();
    let mut acked = 0;
    for slice in bytes.chunks(bytes.len() / 20 + 1) {
        stdin.write_all(slice).unwrap();
        stdin.flush().unwrap();
        while let Ok(reply) = host.frames.recv_timeout(Duration::from_millis(20)) {
            assert_eq!(reply["response_type"], "MessageSaved", "{reply}");
            acked += 1;
        }
    }
    while acked < NATIVE {
        let reply = host.frames.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(reply["response_type"], "MessageSaved", "{reply}");
        acked += 1;
    }
    for writer in http_writers {
        writer.join().unwrap();
    }
    let native = http(
        addr,
        "GET",
        "/api/sessions/native/messages?order=oldest&limit=1000",
        &[],
        None,
    )
    .json();
    let contents: Vec<String> = native["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect();
    // Frames of one connection are handled in parallel, so only the set is fixed.
    let mut sorted = contents.clone();
    sorted.sort();
    let mut expected: Vec<String> = (0..NATIVE).map(|i| format!("n-{i}")).collect();
    expected.sort();
    assert_eq!(sorted, expected);
    for t in 0..HTTP_THREADS {
        let page = http(
            addr,
            "GET",
            &format!("/api/sessions/http-{t}/messages?order=oldest&limit=1000"),
            &[],
            None,
        )
        .json();
        let got: Vec<&str> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        let want: Vec<String> = (0..PER_THREAD).map(|i| format!("h{t}-{i}")).collect();
        assert_eq!(got, want, "one HTTP writer's messages keep their order");
    }
    let sessions = http(addr, "GET", "/api/sessions", &[], None).json();
    assert_eq!(
        sessions["sessions"].as_array().unwrap().len(),
        HTTP_THREADS + 1
    );
}

#[test]
fn retrieval_without_an_embedding_model_says_what_is_missing() {
    let server = HttpServer::start();
    let reply = server.post(
        "/api/collections/kb/documents",
        &json!({"text": "Some text."}),
    );
    let problem = reply.json();
    let detail = problem["detail"].as_str().unwrap();
    if cfg!(feature = "onnx") {
        assert_eq!(reply.status, 404, "{problem}");
        assert!(detail.contains("embedding"), "{detail}");
    } else {
        assert_eq!(reply.status, 501, "{problem}");
        assert!(
            detail.contains("ONNX Runtime") && detail.contains("not enabled"),
            "{detail}"
        );
    }
    let listed = server.get("/api/collections").json();
    assert_eq!(listed["collections"], json!([]));
    assert_eq!(
        server.post("/api/collections/kb/clear", &json!({})).status,
        404
    );
    assert_eq!(
        delete(&server, "/api/collections/kb/documents/1").status,
        404
    );
}

/// The models dir of the tests, when the Makefile provides it.
fn test_models() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("TABAGENT_TEST_MODELS")?);
    dir.join("all-minilm-l6-v2").is_dir().then_some(dir)
}

#[test]
fn retrieval_with_the_real_embedding_model() {
    let Some(models) = test_models().filter(|_| cfg!(feature = "onnx")) else {
        skip(
            "retrieval_with_the_real_embedding_model",
            "needs the onnx feature and TABAGENT_TEST_MODELS",
        );
        return;
    };
    let server = HttpServer::start_with(TempDir::new("rag"), |c| {
        c.arg("--models-dir").arg(&models);
    });
    let pages = [
        (
            "https://example.com/cats",
            "Cats",
            "Cats are small carnivorous mammals that people keep as pets. \
          A cat sleeps for most of the day and purrs when it is content.",
        ),
        (
            "https://example.com/rust",
            "Rust",
            "Rust is a systems programming language focused on safety. \
          Its borrow checker prevents data races at compile time.",
        ),
        (
            "https://example.com/bread",
            "Bread",
            "To bake bread, mix flour, water, salt and yeast. \
          Knead the dough, let it rise, and bake it in a hot oven.",
        ),
    ];
    let started = Instant::now();
    for (url, title, text) in pages {
        let reply = server.post(
            "/api/collections/web/documents",
            &json!({"text": text, "url": url, "title": title, "metadata": {"tab": 3}}),
        );
        assert_eq!(reply.ok_json()["chunks"], 1);
    }
    eprintln!(
        "indexed 3 pages in {:?} (model load included)",
        started.elapsed()
    );
    let ask = |query: &str, extra: Value| {
        let mut body = json!({"query": query, "top_k": 2});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let reply = server.post("/api/collections/web/query", &body);
        reply.ok_json()
    };
    // A paraphrase with no shared keyword still finds the right page.
    let found = ask(
        "Which animal likes to nap and makes a humming sound?",
        json!({}),
    );
    assert_eq!(
        found["hits"][0]["url"], "https://example.com/cats",
        "{found}"
    );
    assert_eq!(found["hits"][0]["metadata"]["tab"], 3);
    let hit = &found["hits"][0];
    assert!(hit["similarity"].as_f64().unwrap() > 0.2, "{hit}");
    let found = ask("memory safety compiler", json!({"rerank": true}));
    assert_eq!(found["hits"][0]["title"], "Rust", "{found}");
    let strict = ask("how do I make a loaf", json!({"min_score": 0.99}));
    assert_eq!(strict["hits"], json!([]));

    // Re-adding a URL replaces its chunks.
    let reply = server.post(
        "/api/collections/web/documents",
        &json!({"text": "Dogs are loyal animals that love to play fetch.", "url": "https://example.com/cats"}),
    );
    assert_eq!(reply.json()["replaced"], true);
    let listed = server.get("/api/collections").json();
    assert_eq!(listed["collections"][0]["documents"], 3);
    assert_eq!(listed["collections"][0]["chunks"], 3);
    assert_eq!(listed["collections"][0]["model"], "all-minilm-l6-v2");
    let found = ask("a loyal pet that fetches", json!({}));
    assert_eq!(found["hits"][0]["url"], "https://example.com/cats");
    assert!(found["hits"][0]["text"].as_str().unwrap().contains("Dogs"));
}
