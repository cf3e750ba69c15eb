//! OpenAI-compatible upstreams on the real binary: a second tabagent on
//! loopback (the tiny GGUF) as the upstream of a gateway, and small fake
//! OpenAI servers (`fake`: threads with a std TcpListener) for the failure
//! cases, the contexts upstreams report (`context`), `upstream_fallback`
//! (`fallback`) and `n` > 1 (`choices`). The upstream's key never appears
//! in a reply or a log line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{HttpServer, NativeHost, TempDir, http, tiny_gguf};

mod choices;
mod context;
mod fake;
mod fallback;

use fake::{Fake, FakeServer};

/// The key upstreams require; it must never reach a client or a log.
const UPSTREAM_KEY: &str = "sk-upstream-secret-4242";

/// A tabagent serving `model` (a GGUF path) as `id`, with its own key.
fn upstream_with(model: &std::path::Path, id: &str) -> HttpServer {
    let data = TempDir::new("upstream");
    std::fs::create_dir_all(data.path().join("models")).unwrap();
    std::os::unix::fs::symlink(model, data.path().join(format!("models/{id}.gguf"))).unwrap();
    HttpServer::start_with(data, |c| {
        c.env("TABAGENT_API_KEY", UPSTREAM_KEY);
    })
}

/// The `[[upstreams]]` tables of a config file.
fn tables(upstreams: &[(&str, SocketAddr, i32, u64)]) -> String {
    upstreams
        .iter()
        .map(|(name, addr, priority, timeout)| {
            format!(
                "[[upstreams]]\nname = \"{name}\"\nurl = \"http://{addr}/v1\"\napi_key = \"{UPSTREAM_KEY}\"\n\
                 priority = {priority}\ntimeout = {timeout}\nhealth_interval = 1\n\n"
            )
        })
        .collect()
}

/// A config file in a new data dir.
fn config_dir(text: &str) -> TempDir {
    let data = TempDir::new("gateway");
    std::fs::write(data.path().join("gateway.toml"), text).unwrap();
    data
}

/// A gateway over HTTP with `config` (its own models dir is empty).
fn gateway(config: &str) -> HttpServer {
    let data = config_dir(config);
    let file = data.path().join("gateway.toml");
    HttpServer::start_with(data, |c| {
        c.arg("--config").arg(file);
    })
}

/// Polls the gateway's /v1/models until `id` is listed (bounded).
fn wait_listed(gateway: &HttpServer, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = gateway.get("/v1/models").ok_json();
        if list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == id)
        {
            return list;
        }
        assert!(Instant::now() < deadline, "{id} never listed: {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The text of an OpenAI chat event stream, and whether it ended in an error.
fn stream_text(events: &[String]) -> (String, Option<Value>) {
    let mut text = String::new();
    let mut error = None;
    for event in events.iter().filter(|e| *e != "[DONE]") {
        let value: Value = serde_json::from_str(event).unwrap();
        if value.get("error").is_some() {
            error = Some(value);
            continue;
        }
        if let Some(piece) = value
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            text.push_str(piece);
        }
    }
    (text, error)
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "stream": true, "temperature": 0, "seed": 1, "max_tokens": 24,
        "messages": [{"role": "user", "content": "Say hello."}]})
}

fn assert_no_key(what: &str, text: &str) {
    assert!(
        !text.contains(UPSTREAM_KEY),
        "the upstream key leaked in {what}: {text}"
    );
}

#[test]
fn a_second_tabagent_is_relayed_over_http_native_messaging_and_webrtc() {
    let upstream = upstream_with(tiny_gguf(), "tiny");
    let config = tables(&[("a", upstream.addr, 0, 30)]);
    let gateway = gateway(&config);
    let list = wait_listed(&gateway, "a/tiny");
    let tiny = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "tiny");
    assert_eq!(tiny.unwrap()["owned_by"], "a", "the bare id too: {list}");
    let info = gateway.get("/api/models/a%2Ftiny").ok_json();
    assert_eq!(
        (&info["upstream"], &info["format"]),
        (&json!("a"), &json!("upstream")),
        "{info}"
    );
    // Its context: what the upstream tabagent's own ModelInfo says.
    let own = http(
        upstream.addr,
        "GET",
        "/api/models/tiny",
        &[("Authorization", &format!("Bearer {UPSTREAM_KEY}"))],
        None,
    )
    .ok_json();
    assert!(own["context_length"].as_u64().unwrap() > 0, "{own}");
    assert_eq!(
        (&info["context_length"], &info["context_source"]),
        (&own["context_length"], &json!("model_info")),
        "{info}"
    );

    // What the upstream says when asked directly (greedy).
    let direct = http(
        upstream.addr,
        "POST",
        "/v1/chat/completions",
        &[("Authorization", &format!("Bearer {UPSTREAM_KEY}"))],
        Some(chat_body("tiny").to_string().as_bytes()),
    );
    let (expected, error) = stream_text(&direct.assert_status(200).events());
    assert!(error.is_none() && !expected.is_empty(), "{direct:?}");

    // HTTP, with a field tabagent's own models refuse (the upstream judges it).
    let mut body = chat_body("a/tiny");
    body["stream_options"] = json!({"include_usage": true});
    let relayed = gateway.post("/v1/chat/completions", &body);
    let events = relayed.assert_status(200).events();
    let (text, error) = stream_text(&events);
    assert_eq!(text, expected, "{events:?}");
    assert!(error.is_none());
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(
        usage["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );
    assert_no_key("an HTTP reply", &String::from_utf8_lossy(&relayed.body));
    let bare = gateway.post("/v1/chat/completions", &chat_body("tiny"));
    assert_eq!(
        stream_text(&bare.events()).0,
        expected,
        "the bare id goes upstream too"
    );

    // Native messaging: the same config, the same text.
    let data = config_dir(&config);
    let file = data.path().join("gateway.toml");
    // Chrome starts a host with the extension's origin only: the config
    // comes from the environment.
    let mut host = NativeHost::start_with(data, |c| {
        c.env("TABAGENT_CONFIG", file);
    });
    let replies = {
        host.send(
            &json!({"id": 1, "request_type": "Chat", "model": "a/tiny", "stream": true,
            "temperature": 0, "seed": 1, "max_tokens": 24,
            "messages": [{"role": "user", "content": "Say hello."}]}),
        );
        host.recv_until_done(&json!(1))
    };
    let native: String = replies
        .iter()
        .filter(|r| r["response_type"] == "ChatChunk")
        .map(|r| r["delta"].as_str().unwrap().to_string())
        .collect();
    let last = replies.last().unwrap();
    assert_eq!(last["response_type"], "ChatComplete", "{last}");
    assert_eq!(
        (&last["upstream"], &last["model"]),
        (&json!("a"), &json!("a/tiny"))
    );
    assert!(
        last["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{last}"
    );
    assert_eq!(native, expected);
    for reply in &replies {
        assert_no_key("a native reply", &reply.to_string());
    }

    #[cfg(feature = "webrtc")]
    {
        let server = crate::rtc::TestServer::start();
        let list: tabagent::upstream::UpstreamList =
            format!("a=http://{}/v1", upstream.addr).parse().unwrap();
        let mut list = list;
        list.0[0].api_key = tabagent::config::Secret(UPSTREAM_KEY.into());
        let upstreams = tabagent::upstream::Upstreams::new(&list, "").unwrap();
        server.handler.set_upstreams(std::sync::Arc::new(upstreams));
        let mut client = crate::rtc::client::Client::connect(server.http);
        let replies = client.request(json!({"id": "c", "request_type": "Chat", "model": "a/tiny",
            "stream": true, "temperature": 0, "seed": 1, "max_tokens": 24,
            "messages": [{"role": "user", "content": "Say hello."}]}));
        let rtc: String = replies
            .iter()
            .filter(|r| r["response_type"] == "ChatChunk")
            .map(|r| r["delta"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(rtc, expected, "{replies:?}");
    }

    let system = gateway.get("/api/system").ok_json();
    assert_eq!(system["upstreams"][0]["health"], "healthy", "{system}");
    let metrics =
        String::from_utf8(gateway.get("/metrics").assert_status(200).body.clone()).unwrap();
    assert!(
        metrics.contains("tabagent_upstream_up{upstream=\"a\"}"),
        "{metrics}"
    );
    for line in gateway.log.lock().unwrap().iter() {
        assert_no_key("the gateway's log", line);
    }
}

fn ask(gateway: &HttpServer, model: &str) -> crate::util::HttpReply {
    gateway.post(
        "/v1/chat/completions",
        &json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
}

#[test]
fn failures_fail_over_or_end_with_a_clear_error() {
    let failing = FakeServer::start(Fake::Fails);
    let first = FakeServer::start(Fake::Streams);
    let second = FakeServer::start(Fake::Streams);
    let cuts = FakeServer::start(Fake::Cuts);
    let silent = FakeServer::start(Fake::Silent);
    let config = tables(&[
        ("failing", failing.addr, 30, 30),
        ("first", first.addr, 20, 30),
        ("second", second.addr, 10, 30),
        ("cuts", cuts.addr, 0, 30),
        ("silent", silent.addr, 0, 2),
    ]);
    let gateway = gateway(&config);
    wait_listed(&gateway, "failing/m");
    wait_listed(&gateway, "silent/m");

    // 500 before any token: the next upstream (by priority) answers.
    let reply = ask(&gateway, "m");
    let (text, error) = stream_text(&reply.assert_status(200).events());
    assert_eq!((text.as_str(), error), ("abc", None));
    let done = gateway
        .post("/api/chat", &json!({"model": "m", "stream": false, "messages": [{"role": "user", "content": "hi"}]}))
        .ok_json();
    assert_eq!(
        (&done["upstream"], &done["text"]),
        (&json!("first"), &json!("abc")),
        "{done}"
    );
    assert_eq!(done["usage"]["completion_tokens"], 3);

    // A pinned upstream does not fail over, and its problem names it.
    let pinned = ask(&gateway, "failing/m");
    let problem = pinned.assert_status(502).json();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("upstream failing"),
        "{problem}"
    );

    // Killed between requests: the next one goes to the second.
    first.kill();
    let done = gateway
        .post("/api/chat", &json!({"model": "m", "stream": false, "messages": [{"role": "user", "content": "hi"}]}))
        .ok_json();
    assert_eq!(done["upstream"], "second", "{done}");

    // Killed mid-stream: the stream ends with an error event naming it.
    let reply = ask(&gateway, "cuts/m");
    let events = reply.assert_status(200).events();
    let (text, error) = stream_text(&events);
    assert_eq!(text, "ab");
    let error = error.expect("an error event");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream cuts"),
        "{error}"
    );
    assert_eq!(events.last().unwrap(), "[DONE]");

    // Never answers: a timeout error within the configured 2 s (and some slack).
    let started = Instant::now();
    let reply = ask(&gateway, "silent/m");
    let took = started.elapsed();
    let problem = reply.assert_status(504).json();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("upstream silent"),
        "{problem}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );

    // The key went upstream, and nowhere else.
    assert!(
        failing
            .keys
            .lock()
            .unwrap()
            .iter()
            .any(|k| k.contains(UPSTREAM_KEY))
    );
    for (what, text) in [
        (
            "a problem",
            String::from_utf8_lossy(&pinned.body).to_string(),
        ),
        (
            "/api/system",
            gateway.get("/api/system").ok_json().to_string(),
        ),
    ] {
        assert_no_key(what, &text);
    }
    for line in gateway.log.lock().unwrap().iter() {
        assert_no_key("the gateway's log", line);
    }
}

#[test]
fn a_local_model_refuses_what_an_upstream_would_judge() {
    let gateway = gateway("");
    let reply = gateway.post(
        "/v1/chat/completions",
        &json!({"model": "x", "messages": [{"role": "user", "content": "hi"}], "made_up": 1}),
    );
    let problem = reply.assert_status(400).json();
    assert!(
        problem["detail"].as_str().unwrap().contains("`made_up`"),
        "{problem}"
    );
}

/// StopGeneration on the gateway closes the upstream request, and the
/// upstream's generation stops (its metrics show no job running and far
/// fewer tokens than asked for). SmolLM2 generates slowly enough to see it.
#[test]
fn stop_on_the_gateway_stops_the_upstream_job() {
    let Some(real) = crate::inference::real_models("stop_on_the_gateway_stops_the_upstream_job")
    else {
        return;
    };
    let upstream = upstream_with(&real.join("smollm2-135m-instruct-q4_1.gguf"), "smol");
    let gateway = gateway(&tables(&[("a", upstream.addr, 0, 60)]));
    let mut socket = TcpStream::connect(gateway.addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = json!({"model": "a/smol", "stream": true, "max_tokens": 2000, "ignore_eos": true,
        "messages": [{"role": "user", "content": "Write a long story."}]})
    .to_string();
    write!(
        socket,
        "POST /api/chat HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        gateway.addr,
        crate::util::auth_line(),
        body.len()
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("ChatChunk") {
        let n = socket.read(&mut buffer).unwrap();
        assert!(
            n > 0,
            "the stream ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buffer[..n]);
    }
    let head = String::from_utf8_lossy(&seen).to_string();
    let job = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("X-Job-Id: ")
                .or_else(|| l.strip_prefix("x-job-id: "))
        })
        .expect("the job id header")
        .trim()
        .to_string();
    gateway
        .post(&format!("/api/generations/{job}/stop"), &json!({}))
        .assert_status(200);
    let running = |metrics: &str| metrics.contains("tabagent_jobs_running{lane=\"model\"} 1");
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let scrape = http(
            upstream.addr,
            "GET",
            "/metrics",
            &[("Authorization", &format!("Bearer {UPSTREAM_KEY}"))],
            None,
        );
        let text = String::from_utf8(scrape.body).unwrap();
        if !running(&text) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the upstream job still runs: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let generated: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tabagent_generated_tokens_total "))
        .map_or(0.0, |v| v.trim().parse().unwrap());
    assert!(
        generated < 1500.0,
        "the upstream generated {generated} tokens"
    );
}
