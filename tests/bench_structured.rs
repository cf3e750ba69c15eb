//! `make bench`: what structured output costs, through tabagent over HTTP,
//! on the default instruct model (SmolLM2-135M-Instruct) with 2 threads.
//!
//! 1. Generation tokens/s under a `json_schema` grammar (a small object with
//!    a long string field, so there are tokens to time) against the same
//!    model unconstrained, rounds alternating, both streamed and timed at the
//!    client from the first token to the last. Target: constrained ≥ 0.8×.
//! 2. Time to first token of a chat offering 5 tools (`tool_choice: auto`:
//!    the lazy grammar waits for a tool-call opener) against the same chat
//!    without tools; the tool definitions lengthen the prompt, which is most
//!    of the difference. Every round's prompt starts differently, so no
//!    cached prefix is reused.
//!
//! The model: `$TABAGENT_BENCH_CHAT_MODEL`, else
//! `smollm2-135m-instruct-q4_1.gguf` in `$TABAGENT_TEST_MODELS` or
//! `target/test-models`. Medians over the rounds.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_tabagent");
const ROUNDS: usize = 7;
const MODEL: &str = "smollm2-135m-instruct-q4_1";
/// The API key the bench's server is started with and its requests send.
const BENCH_KEY: &str = "bench-structured-key";

fn model_path() -> PathBuf {
    if let Some(path) = std::env::var_os("TABAGENT_BENCH_CHAT_MODEL") {
        return PathBuf::from(path);
    }
    let dir = std::env::var_os("TABAGENT_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-models"))
        });
    dir.join(format!("{MODEL}.gguf"))
}

/// What one streamed request measured at the client.
struct Timing {
    first_token: Duration,
    tokens_per_second: f64,
    prompt_tokens: u64,
}

/// Posts a streamed OpenAI chat and times its chunks.
fn stream(addr: SocketAddr, body: &Value) -> Timing {
    let body = body.to_string();
    let mut socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    let started = Instant::now();
    write!(
        socket,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {BENCH_KEY}\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let reader = BufReader::new(socket);
    let (mut first, mut last, mut usage) = (None, None, Value::Null);
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        assert!(chunk.get("error").is_none(), "{chunk}");
        let delta = &chunk["choices"][0]["delta"];
        let shows = ["content", "tool_calls", "reasoning_content"]
            .iter()
            .any(|k| delta.get(*k).is_some_and(|v| v != "" && !v.is_null()));
        if shows {
            first.get_or_insert(started.elapsed());
            last = Some(started.elapsed());
        }
        if !chunk["usage"].is_null() {
            usage = chunk["usage"].clone();
        }
    }
    let first = first.expect("a token arrived");
    let tokens = usage["completion_tokens"].as_u64().unwrap_or(0);
    let span = last.unwrap_or(first).saturating_sub(first).as_secs_f64();
    Timing {
        first_token: first,
        tokens_per_second: tokens.saturating_sub(1) as f64 / span.max(1e-9),
        prompt_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0),
    }
}

/// A plain POST; the whole raw response.
fn post(addr: SocketAddr, path: &str, body: &Value) -> String {
    use std::io::Read;
    let body = body.to_string();
    let mut socket = TcpStream::connect(addr).unwrap();
    write!(
        socket,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {BENCH_KEY}\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    socket.read_to_string(&mut out).unwrap();
    out
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn five_tools() -> Value {
    let tool = |name: &str, what: &str, field: &str| {
        json!({"type": "function", "function": {"name": name, "description": what,
            "parameters": {"type": "object", "additionalProperties": false, "required": [field],
                "properties": {field: {"type": "string", "maxLength": 80}}}}})
    };
    json!([
        tool("open_tab", "Open a web page in a new tab", "url"),
        tool(
            "search_history",
            "Search the user's browsing history",
            "query"
        ),
        tool(
            "summarize_page",
            "Summarize the page in the current tab",
            "focus"
        ),
        tool("fill_form", "Fill the form on the current page", "values"),
        tool(
            "translate_selection",
            "Translate the selected text",
            "language"
        ),
    ])
}

fn main() {
    let model = model_path();
    assert!(
        model.is_file(),
        "{} is missing: run make models",
        model.display()
    );
    let scratch =
        std::env::temp_dir().join(format!("tabagent-bench-structured-{}", std::process::id()));
    let models = scratch.join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(&model, models.join(format!("{MODEL}.gguf"))).unwrap();
    let mut server = start(&scratch, &models);
    let addr = address(&mut server);

    let schema = json!({"type": "object", "additionalProperties": false,
        "required": ["summary", "keywords"],
        "properties": {"summary": {"type": "string", "maxLength": 600},
                       "keywords": {"type": "array", "maxItems": 8,
                                    "items": {"type": "string", "maxLength": 24}}}});
    let ask = |round: usize, extra: Value| {
        let mut body = json!({"model": MODEL, "stream": true, "temperature": 0, "max_tokens": 128,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": format!(
                "Request {round}. Describe honeybees, their colonies and the crops they pollinate, as JSON with a summary and keywords.")}]});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    // Load with the benches' settings (2 threads), then warm up.
    let loaded = post(
        addr,
        &format!("/api/models/{MODEL}/load"),
        &json!({"threads": 2, "context_size": 4096}),
    );
    assert!(loaded.starts_with("HTTP/1.1 200"), "{loaded}");
    stream(addr, &ask(100, json!({"max_tokens": 2})));
    let (mut free, mut held) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let unconstrained = ask(round, json!({}));
        let constrained = ask(
            round + 1000,
            json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "page", "schema": schema}}}),
        );
        if round % 2 == 0 {
            free.push(stream(addr, &unconstrained).tokens_per_second);
            held.push(stream(addr, &constrained).tokens_per_second);
        } else {
            held.push(stream(addr, &constrained).tokens_per_second);
            free.push(stream(addr, &unconstrained).tokens_per_second);
        }
    }
    let (free, held) = (median(free), median(held));
    println!("generation, unconstrained:      {free:7.1} tok/s (median of {ROUNDS})");
    println!("generation, json_schema object: {held:7.1} tok/s");
    println!(
        "constrained / unconstrained:    {:7.3}x (target >= 0.8)",
        held / free
    );

    let (mut plain, mut tooled, mut plain_tokens, mut tooled_tokens) = (vec![], vec![], 0, 0);
    for round in 0..ROUNDS {
        let without = ask(round + 2000, json!({"max_tokens": 1}));
        let with = ask(
            round + 3000,
            json!({"max_tokens": 1, "tools": five_tools(), "tool_choice": "auto"}),
        );
        let a = stream(addr, &without);
        let b = stream(addr, &with);
        plain.push(a.first_token.as_secs_f64() * 1000.0);
        tooled.push(b.first_token.as_secs_f64() * 1000.0);
        plain_tokens = a.prompt_tokens;
        tooled_tokens = b.prompt_tokens;
    }
    println!(
        "first token, no tools:          {:7.1} ms ({plain_tokens} prompt tokens)",
        median(plain)
    );
    println!(
        "first token, 5 tools (auto):    {:7.1} ms ({tooled_tokens} prompt tokens)",
        median(tooled)
    );
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&scratch);
}

fn start(scratch: &std::path::Path, models: &std::path::Path) -> Child {
    Command::new(BINARY)
        .args(["--mode", "http", "--bind", "127.0.0.1:0"])
        .env("TABAGENT_MODELS_DIR", models)
        .env("TABAGENT_DATA_DIR", scratch.join("data"))
        .env("TABAGENT_LOG", "info")
        .env("TABAGENT_API_KEY", BENCH_KEY)
        // Every request comes from one address: no rate limits.
        .env("TABAGENT_RATE_LIMIT", "0")
        .env("TABAGENT_GENERATIONS_PER_CLIENT", "1000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn address(server: &mut Child) -> SocketAddr {
    let stderr = server.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("the server logs its address").unwrap();
        if let Some(at) = line.find("HTTP on http://") {
            let rest = &line[at + "HTTP on http://".len()..];
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/')
                .parse()
                .unwrap();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    addr
}
