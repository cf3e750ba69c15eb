//! Operations against the real binary: `/metrics` read by Prometheus' own
//! Python text parser, rate limits (429 with Retry-After), the request id on
//! every log line of a request and its last line's fields, preload, and
//! SIGHUP reloading the config file (and refusing a broken one), the last
//! three in [`logs`].

mod logs;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{HttpServer, TempDir};

/// One sample as `prometheus_client.parser` read it.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses a scrape with `prometheus_client`'s text parser (the one
/// Prometheus' Python tooling uses): the families by name with their type,
/// and every sample. Fails the test when the parser refuses the text.
fn parse_metrics(text: &[u8]) -> (BTreeMap<String, String>, Vec<Sample>) {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = {}
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = family.type
    for s in family.samples:
        samples.append({"name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps({"families": families, "samples": samples}))
"#;
    let mut child = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics (make pip installs it): {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(text)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let families = parsed["families"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let samples = parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_string(),
            labels: s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect();
    (families, samples)
}

/// The value of the sample `name` whose labels include `labels` (0 if none).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

fn scrape(server: &HttpServer) -> (BTreeMap<String, String>, Vec<Sample>) {
    let reply = server.get("/metrics");
    reply.assert_status(200);
    assert!(
        reply
            .header("Content-Type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        reply.headers
    );
    parse_metrics(&reply.body)
}

#[test]
fn metrics_parse_and_count_exactly_the_requests_made() {
    let server = HttpServer::start();
    let (families, before) = scrape(&server);
    for (name, kind) in [
        ("tabagent_requests", "counter"),
        ("tabagent_request_duration_seconds", "histogram"),
        ("tabagent_time_to_first_token_seconds", "histogram"),
        ("tabagent_generation_tokens_per_second", "histogram"),
        ("tabagent_prompt_tokens", "counter"),
        ("tabagent_generated_tokens", "counter"),
        ("tabagent_queue_depth", "gauge"),
        ("tabagent_slots", "gauge"),
        ("tabagent_models_loaded", "gauge"),
        ("tabagent_model_memory_bytes", "gauge"),
        ("tabagent_webrtc_sessions", "gauge"),
        ("tabagent_store_writes", "counter"),
        ("tabagent_store_commit_seconds", "histogram"),
        ("tabagent_process_resident_memory_bytes", "gauge"),
        ("tabagent_process_cpu_seconds", "counter"),
    ] {
        assert_eq!(
            families.get(name).map(String::as_str),
            Some(kind),
            "{name}: {families:?}"
        );
    }
    assert!(
        families
            .values()
            .all(|kind| kind != "unknown" && kind != "untyped"),
        "every family is typed: {families:?}"
    );
    assert!(value(&before, "tabagent_process_resident_memory_bytes", &[]) > 1e6);

    let params = [
        ("transport", "http"),
        ("route", "/api/params"),
        ("status", "200"),
    ];
    let missing = [
        ("transport", "http"),
        ("route", "invalid"),
        ("status", "404"),
    ];
    let saved = [
        ("transport", "http"),
        ("route", "/api/sessions/{session_id}/messages"),
        ("status", "200"),
    ];
    for _ in 0..3 {
        server.get("/api/params").assert_status(200);
    }
    for _ in 0..2 {
        server.get("/no/such/route").assert_status(404);
    }
    server
        .post(
            "/api/sessions/s1/messages",
            &json!({"role": "user", "content": "hello"}),
        )
        .assert_status(200);
    let (_, after) = scrape(&server);
    let moved = |labels: &[(&str, &str)]| {
        value(&after, "tabagent_requests_total", labels)
            - value(&before, "tabagent_requests_total", labels)
    };
    assert_eq!(moved(&params), 3.0);
    assert_eq!(moved(&missing), 2.0);
    assert_eq!(moved(&saved), 1.0);
    assert_eq!(
        moved(&[("transport", "http")]),
        6.0,
        "scrapes are not counted"
    );
    let count = "tabagent_request_duration_seconds_count";
    assert_eq!(
        value(&after, count, &[("transport", "http")])
            - value(&before, count, &[("transport", "http")]),
        6.0
    );
    let writes = "tabagent_store_writes_total";
    assert_eq!(
        value(&after, writes, &[("outcome", "committed")])
            - value(&before, writes, &[("outcome", "committed")]),
        1.0
    );
    assert!(
        value(&after, "tabagent_store_commit_seconds_count", &[])
            > value(&before, "tabagent_store_commit_seconds_count", &[])
    );
}

#[cfg(feature = "llama")]
fn data_with_tiny_model(name: &str) -> TempDir {
    let data = TempDir::new(name);
    let models = data.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(crate::util::tiny_gguf(), models.join("tiny.gguf")).unwrap();
    data
}

#[cfg(feature = "llama")]
fn chat(server: &HttpServer, max_tokens: u32) -> crate::util::HttpReply {
    server.post(
        "/v1/chat/completions",
        &json!({"model": "tiny", "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": "hello"}]}),
    )
}

#[cfg(feature = "llama")]
#[test]
fn metrics_count_the_tokens_of_a_generation_and_its_model() {
    let server = HttpServer::start_with(data_with_tiny_model("ops-metrics-llama"), |_| {});
    let (_, before) = scrape(&server);
    let reply = chat(&server, 8).ok_json();
    let usage = &reply["usage"];
    let (_, after) = scrape(&server);
    let moved = |name: &str| value(&after, name, &[]) - value(&before, name, &[]);
    assert_eq!(
        moved("tabagent_generated_tokens_total"),
        usage["completion_tokens"].as_f64().unwrap()
    );
    assert_eq!(
        moved("tabagent_prompt_tokens_total"),
        usage["prompt_tokens"].as_f64().unwrap()
    );
    assert_eq!(moved("tabagent_time_to_first_token_seconds_count"), 1.0);
    assert_eq!(value(&after, "tabagent_models_loaded", &[]), 1.0);
    assert!(value(&after, "tabagent_model_memory_bytes", &[("model", "tiny")]) > 0.0);
    // Every slot /api/loaded shows is idle again once the reply is in.
    let loaded = server.get("/api/loaded").ok_json();
    let slots = loaded["models"][0]["slots"].as_array().unwrap().len();
    assert!(slots >= 1, "{loaded}");
    assert_eq!(
        value(
            &after,
            "tabagent_slots",
            &[("model", "tiny"), ("state", "idle")]
        ),
        slots as f64
    );
    let chats = [
        ("route", "/v1/chat/completions"),
        ("status", "200"),
        ("transport", "http"),
    ];
    assert_eq!(value(&after, "tabagent_requests_total", &chats), 1.0);
}

#[test]
fn over_the_rate_limit_a_client_gets_429_with_retry_after() {
    let data = TempDir::new("ops-rate");
    let server = HttpServer::start_with(data, |command| {
        command.env("TABAGENT_RATE_LIMIT", "5");
    });
    // Bursts of twice the rate: ten at once pass, the eleventh waits.
    for i in 0..10 {
        assert_eq!(server.get("/api/params").status, 200, "request {i}");
    }
    let reply = server.get("/api/params");
    assert_eq!(
        reply.status,
        429,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let retry: u64 = reply.header("Retry-After").unwrap().parse().unwrap();
    assert_eq!(retry, 1);
    let problem = reply.json();
    assert_eq!(problem["type"], "urn:tabagent:problem:rate-limited");
    assert!(
        problem["detail"].as_str().unwrap().contains("rate_limit"),
        "{problem}"
    );
    // A token comes back every 200 ms.
    std::thread::sleep(Duration::from_millis(450));
    server.get("/api/params").assert_status(200);
}

#[cfg(feature = "llama")]
#[test]
fn a_client_may_not_run_more_generations_than_its_cap() {
    let test = "a_client_may_not_run_more_generations_than_its_cap";
    let Some(real) = crate::inference::real_models(test) else {
        return;
    };
    let models = crate::inference::gemma_models(&real);
    let server =
        crate::inference::http_server(&models, &[("TABAGENT_GENERATIONS_PER_CLIENT", "1")]);
    // A generation of Gemma's (seconds long) held open: its client reads
    // the head and stops reading.
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    let body = json!({"model": crate::inference::GEMMA, "max_tokens": 400, "stream": true,
                      "messages": [{"role": "user", "content": "Tell me a long story."}]})
    .to_string();
    write!(
        stream,
        "POST /api/chat HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr,
        crate::util::auth_line(),
        body.len()
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut stream, &mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let tiny = |max_tokens: u32| {
        server.post(
            "/v1/chat/completions",
            &json!({"model": "tiny", "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": "hello"}]}),
        )
    };
    let second = tiny(4);
    assert_eq!(
        second.status,
        429,
        "{}",
        String::from_utf8_lossy(&second.body)
    );
    assert!(second.header("Retry-After").is_some());
    assert!(
        String::from_utf8_lossy(&second.body).contains("generations_per_client"),
        "{}",
        String::from_utf8_lossy(&second.body)
    );
    // Other requests are not generations.
    server.get("/api/params").assert_status(200);
    drop(stream);
    // Once the first one has ended (its client left), the next one runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = tiny(4);
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 429);
        assert!(
            Instant::now() < deadline,
            "the first generation never ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
