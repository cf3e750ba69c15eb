//! A small fake OpenAI server (a thread with a std TcpListener on
//! loopback) for the failure cases, the contexts an upstream reports, and
//! `n` > 1: it lists one model, `m`, and answers chats by [`Fake`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A fake OpenAI server: `/v1/models` lists `m`; a chat POST gets `answer`.
#[derive(Clone, Copy, PartialEq)]
pub enum Fake {
    /// Three chunks, `abc`, then the finish, usage and [DONE]; with `n` > 1,
    /// choice `i` says `a{i}bc`.
    Streams,
    /// 500 before any token.
    Fails,
    /// Two chunks, then the connection closes.
    Cuts,
    /// Reads the request and never answers.
    Silent,
    /// Streams, and is llama-server-like: `/props` gives a 256-token
    /// context and `/tokenize` counts a text's words.
    Props,
    /// Streams, and lists `m` with vLLM's `max_model_len` of 300 (no
    /// `/props`, no `/tokenize`).
    MaxLen,
}

pub struct FakeServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Authorization headers it received.
    pub keys: Arc<Mutex<Vec<String>>>,
    /// The requests it received: method and path, and the body.
    requests: Arc<Mutex<Vec<(String, Value)>>>,
}

impl FakeServer {
    pub fn start(kind: Fake) -> FakeServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), kind)
    }

    /// A server on `addr` (a killed one's port, retried for a while).
    pub fn start_on(addr: SocketAddr, kind: Fake) -> FakeServer {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(addr) {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot bind {addr}: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let keys = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (flag, seen, asked) = (Arc::clone(&stop), Arc::clone(&keys), Arc::clone(&requests));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((socket, _)) => {
                        let (seen, flag, asked) =
                            (Arc::clone(&seen), Arc::clone(&flag), Arc::clone(&asked));
                        std::thread::spawn(move || serve(socket, kind, &seen, &asked, &flag));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // The listener is dropped here: the port refuses from now on.
        });
        FakeServer {
            addr,
            stop,
            keys,
            requests,
        }
    }

    pub fn kill(&self) {
        self.stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
    }

    /// The bodies of the requests it got for `path` (e.g. `POST /tokenize`).
    pub fn bodies(&self, path: &str) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, body)| body.clone())
            .collect()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One event of a chat stream: `text` for choice `index`.
fn chunk(index: u64, text: &str) -> String {
    format!(
        "data: {{\"choices\":[{{\"index\":{index},\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n"
    )
}

/// Answers one connection's requests (keep-alive) until `stop`: a killed
/// server closes its kept-alive connections too.
fn serve(
    socket: TcpStream,
    kind: Fake,
    keys: &Mutex<Vec<String>>,
    requests: &Mutex<Vec<(String, Value)>>,
    stop: &AtomicBool,
) {
    socket.set_nonblocking(false).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(socket.try_clone().unwrap());
    let mut writer = socket;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        // "POST /v1/chat/completions HTTP/1.1" -> "POST /v1/chat/completions"
        let target: String = line.split(' ').take(2).collect::<Vec<_>>().join(" ");
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("authorization:") {
                keys.lock().unwrap().push(header.trim().to_string());
            }
            if header == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() || stop.load(Ordering::Relaxed) {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        requests
            .lock()
            .unwrap()
            .push((target.clone(), body.clone()));
        let reply = |w: &mut TcpStream, status: &str, kind: &str, body: &str| {
            let _ = write!(
                w,
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        };
        let not_found = |w: &mut TcpStream| {
            reply(
                w,
                "404 Not Found",
                "application/json",
                r#"{"error":{"message":"no such route"}}"#,
            )
        };
        match target.as_str() {
            "GET /v1/models" if kind == Fake::MaxLen => reply(
                &mut writer,
                "200 OK",
                "application/json",
                r#"{"object":"list","data":[{"id":"m","object":"model","max_model_len":300}]}"#,
            ),
            "GET /v1/models" => reply(
                &mut writer,
                "200 OK",
                "application/json",
                r#"{"object":"list","data":[{"id":"m","object":"model"}]}"#,
            ),
            "GET /props" if kind == Fake::Props => reply(
                &mut writer,
                "200 OK",
                "application/json",
                r#"{"default_generation_settings":{"n_ctx":256},"total_slots":1}"#,
            ),
            "POST /tokenize" if kind == Fake::Props => {
                let words = body["content"]
                    .as_str()
                    .unwrap_or("")
                    .split_whitespace()
                    .count();
                reply(
                    &mut writer,
                    "200 OK",
                    "application/json",
                    &json!({"tokens": vec![7; words]}).to_string(),
                );
            }
            "POST /v1/chat/completions" => match kind {
                Fake::Fails => reply(
                    &mut writer,
                    "500 Internal Server Error",
                    "application/json",
                    r#"{"error":{"message":"boom"}}"#,
                ),
                Fake::Silent => {
                    std::thread::sleep(Duration::from_secs(20));
                    return;
                }
                Fake::Streams | Fake::Cuts | Fake::Props | Fake::MaxLen => {
                    let n = body["n"].as_u64().unwrap_or(1);
                    let _ = write!(
                        writer,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
                    );
                    for i in 0..n {
                        let first = if i == 0 {
                            "a".to_string()
                        } else {
                            format!("a{i}")
                        };
                        let _ = write!(writer, "{}", chunk(i, &first));
                    }
                    for i in 0..n {
                        let _ = write!(writer, "{}", chunk(i, "b"));
                    }
                    let _ = writer.flush();
                    if kind == Fake::Cuts {
                        std::thread::sleep(Duration::from_millis(100));
                        return;
                    }
                    for i in 0..n {
                        let _ = write!(
                            writer,
                            "{}data: {{\"choices\":[{{\"index\":{i},\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n",
                            chunk(i, "c")
                        );
                    }
                    let _ = write!(
                        writer,
                        "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":{}}}}}\n\ndata: [DONE]\n\n",
                        3 * n
                    );
                    return;
                }
            },
            _ => not_found(&mut writer),
        }
    }
}
