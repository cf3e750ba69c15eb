//! What a pull refuses: plain http and loopback without the allowance,
//! redirects to non-public addresses or away from https, files past the size
//! cap, files with no sha256 to check, and servers that never answer, all
//! without telling a closed port from a silent one. Run in the network
//! namespace like the other downloading tests (see `pull`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{FileServer, fake_gguf, isolated, leftovers, native_host, sha256_hex};
use crate::util::{NativeHost, TempDir};

/// What the scripted server answers for a path.
#[derive(Clone)]
enum Answer {
    /// 302 to this Location.
    Redirect(String),
    /// 200 with GGUF bytes and no Content-Length, until the client hangs up.
    Endless,
    /// 200 declaring this Content-Length (and sending a little of it).
    Declared(u64),
    /// Accepts and never answers.
    Silent,
}

/// A server that answers by script and counts its connections.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Scripted {
    fn start(script: HashMap<&'static str, Answer>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        let script = Arc::new(script);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let script = Arc::clone(&script);
                std::thread::spawn(move || answer(stream, &script));
            }
        });
        Scripted { addr, connections }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn answer(mut stream: TcpStream, script: &HashMap<&'static str, Answer>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut first = String::new();
    let _ = reader.read_line(&mut first);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    let path = first.split(' ').nth(1).unwrap_or("/");
    match script.get(path).cloned() {
        Some(Answer::Redirect(to)) => {
            let _ = write!(
                stream,
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        Some(Answer::Endless) => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = fake_gguf(64 << 10);
            // Bounded: 64 MiB at most, should the client never stop.
            for _ in 0..1024 {
                if stream.write_all(&chunk).is_err() {
                    return;
                }
            }
        }
        Some(Answer::Declared(length)) => {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(&fake_gguf(64 << 10));
        }
        Some(Answer::Silent) => std::thread::sleep(Duration::from_secs(30)),
        None => {
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    }
}

fn pull(host: &mut NativeHost, fields: Value) -> Value {
    let mut message = fields;
    message["id"] = json!("pull");
    message["request_type"] = json!("PullModel");
    host.request(message)
}

fn assert_refused(reply: &Value, status: u16, words: &str) {
    assert_eq!(reply["error"]["status"], status, "{reply}");
    let detail = reply["error"]["detail"].as_str().unwrap();
    assert!(detail.contains(words), "{detail}");
}

#[test]
#[ignore = "run inside unshare --net by pulls_run_in_a_network_namespace_of_their_own"]
fn plain_http_and_loopback_are_refused_by_default_without_connecting() {
    isolated();
    let server = Scripted::start(HashMap::new());
    let models = TempDir::new("models");
    let dir = models.path().to_path_buf();
    let mut host = NativeHost::start_with(TempDir::new("data"), move |c| {
        c.env("TABAGENT_MODELS_DIR", &dir);
    });
    let sha = "0".repeat(64);
    let reply = pull(
        &mut host,
        json!({"url": server.url("/x.gguf"), "sha256": sha}),
    );
    assert_refused(&reply, 422, "only https://");
    let https = format!("https://{}/x.gguf", server.addr);
    let reply = pull(&mut host, json!({"url": https, "sha256": sha}));
    assert_refused(&reply, 403, "127.0.0.1, which is not a public address");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.connections(), 0, "nothing connected to the server");
    assert!(std::fs::read_dir(models.path()).unwrap().next().is_none());
}

#[test]
#[ignore = "run inside unshare --net by pulls_run_in_a_network_namespace_of_their_own"]
fn redirects_to_metadata_private_or_loopback_addresses_are_refused() {
    isolated();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Scripted::start(HashMap::from([
        (
            "/metadata.gguf",
            Answer::Redirect("https://169.254.169.254/latest/meta-data/x.gguf".into()),
        ),
        (
            "/plain.gguf",
            Answer::Redirect("http://169.254.169.254/x.gguf".into()),
        ),
        (
            "/private.gguf",
            Answer::Redirect("https://10.1.2.3/x.gguf".into()),
        ),
        // A name, checked by the address it resolves to.
        (
            "/named.gguf",
            Answer::Redirect(format!("https://localhost:{port}/x.gguf")),
        ),
        ("/relative.gguf", Answer::Redirect("/plain.gguf".into())),
    ]));
    let models = TempDir::new("models");
    let mut host = native_host(models.path());
    for (path, words) in [
        (
            "/metadata.gguf",
            "169.254.169.254, which is not a public address",
        ),
        (
            "/plain.gguf",
            "redirected to http://169.254.169.254/x.gguf, which is not https",
        ),
        ("/private.gguf", "10.1.2.3, which is not a public address"),
        ("/named.gguf", "localhost is at"),
        ("/relative.gguf", "redirected to http://127.0.0.1"),
    ] {
        let reply = pull(
            &mut host,
            json!({"url": server.url(path), "allow_unverified": true}),
        );
        assert_refused(&reply, 403, words);
    }
    assert!(std::fs::read_dir(models.path()).unwrap().next().is_none());
}

#[test]
#[ignore = "run inside unshare --net by pulls_run_in_a_network_namespace_of_their_own"]
fn a_pull_past_the_size_cap_is_stopped_and_nothing_is_left() {
    isolated();
    let server = Scripted::start(HashMap::from([
        ("/endless.gguf", Answer::Endless),
        ("/declared.gguf", Answer::Declared(8 << 20)),
    ]));
    let models = TempDir::new("models");
    let dir = models.path().to_path_buf();
    let mut host = NativeHost::start_with(TempDir::new("data"), move |c| {
        c.env("TABAGENT_MODELS_DIR", &dir)
            .env("TABAGENT_ALLOW_LOOPBACK_PULLS", "true")
            .env("TABAGENT_MAX_PULL_BYTES", (1 << 20).to_string());
    });
    let started = Instant::now();
    let reply = pull(
        &mut host,
        json!({"url": server.url("/endless.gguf"), "allow_unverified": true}),
    );
    assert_refused(&reply, 413, "larger than max_pull_bytes allows");
    assert!(started.elapsed() < Duration::from_secs(20));
    let reply = pull(
        &mut host,
        json!({"url": server.url("/declared.gguf"), "allow_unverified": true}),
    );
    assert_refused(&reply, 413, "8388608 > 1048576");
    let left: Vec<_> = std::fs::read_dir(models.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in the models dir: {left:?}");
    assert!(leftovers(models.path()).is_empty());
}

#[test]
#[ignore = "run inside unshare --net by pulls_run_in_a_network_namespace_of_their_own"]
fn a_pull_without_a_sha256_needs_the_catalog_or_allow_unverified() {
    isolated();
    let body = fake_gguf(256 << 10);
    let server = FileServer::start(
        HashMap::from([("/x.gguf", body.clone()), ("/gemma.gguf", body.clone())]),
        None,
    );
    let models = TempDir::new("models");
    let mut host = native_host(models.path());
    let reply = pull(&mut host, json!({"url": server.url("/x.gguf")}));
    assert_refused(&reply, 422, "allow_unverified");
    assert!(server.ranges().is_empty(), "refused before connecting");
    // A catalog model is checked against the catalog's digest.
    let reply = pull(
        &mut host,
        json!({"url": server.url("/gemma.gguf"), "model": "gemma-3-270m-q4_k_m"}),
    );
    assert_refused(&reply, 422, "sha256 mismatch");
    let reply = pull(
        &mut host,
        json!({"url": server.url("/x.gguf"), "allow_unverified": true}),
    );
    assert_eq!(reply["response_type"], "PullComplete", "{reply}");
    assert_eq!(reply["sha256"], sha256_hex(&body));
}

#[test]
#[ignore = "run inside unshare --net by pulls_run_in_a_network_namespace_of_their_own"]
fn a_silent_server_and_a_closed_port_fail_alike_within_the_timeout() {
    isolated();
    let server = Scripted::start(HashMap::from([("/x.gguf", Answer::Silent)]));
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let models = TempDir::new("models");
    let dir = models.path().to_path_buf();
    let mut host = NativeHost::start_with(TempDir::new("data"), move |c| {
        c.env("TABAGENT_MODELS_DIR", &dir)
            .env("TABAGENT_ALLOW_LOOPBACK_PULLS", "true")
            .env("TABAGENT_PULL_TIMEOUT", "1");
    });
    let started = Instant::now();
    let silent = pull(
        &mut host,
        json!({"url": server.url("/x.gguf"), "allow_unverified": true}),
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let refused = pull(
        &mut host,
        json!({"url": format!("http://{closed}/x.gguf"), "allow_unverified": true}),
    );
    assert_refused(&silent, 502, "could not fetch the model from 127.0.0.1");
    assert_eq!(silent["error"], refused["error"], "the two read the same");
}
