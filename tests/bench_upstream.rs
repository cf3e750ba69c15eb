//! `make bench`: streamed generation through a tabagent gateway against the
//! same upstream asked directly, side by side in one run. The upstream is a
//! second tabagent on loopback serving Gemma 3 270M (`$TABAGENT_TEST_MODELS`
//! or `target/test-models`); the gateway relays `up/MODEL` to it.
//!
//! Each round asks both sides (in turn first) for the same greedy
//! completion of 128 tokens over `/v1/completions` (SSE), with a prompt that
//! starts differently every round so no side reuses a cached prefix, and
//! measures at the client: time to first token and generation tokens/s
//! (chunks after the first over the time from first to last). Medians, the
//! ratio of the rates (target ≥ 0.97) and the median of the per-round
//! first-token differences (gateway minus direct; target < 5 ms).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_tabagent");
const KEY: &str = "bench-key";
const UPSTREAM_KEY: &str = "bench-upstream-key";
const NEW_TOKENS: u32 = 128;
const ROUNDS: usize = 11;

struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn start(
    name: &str,
    key: &str,
    models: Option<&std::path::Path>,
    config: Option<String>,
) -> Server {
    let dir = std::env::temp_dir().join(format!("tabagent-bench-up-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("models")).unwrap();
    if let Some(model) = models {
        std::os::unix::fs::symlink(model, dir.join("models/model.gguf")).unwrap();
    }
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("HOME", &dir)
        .env("TABAGENT_DATA_DIR", &dir)
        .env("TABAGENT_API_KEY", key)
        .env("TABAGENT_RATE_LIMIT", "0")
        .env("TABAGENT_LOG", "warn")
        .args([
            "--mode",
            "http",
            "--bind",
            "127.0.0.1:0",
            "--log",
            "info,tabagent::access=warn",
        ]);
    if let Some(text) = config {
        let file = dir.join("config.toml");
        std::fs::write(&file, text).unwrap();
        command.arg("--config").arg(file);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(addr) = line.split("HTTP on http://").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(
                    addr.split(' ')
                        .next()
                        .unwrap()
                        .trim()
                        .parse::<SocketAddr>()
                        .unwrap(),
                );
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server starts");
    Server {
        child,
        addr,
        _dir: dir,
    }
}

/// One streamed completion: (time to first token, chunks, first to last).
fn complete(addr: SocketAddr, key: &str, model: &str, prompt: &str) -> (Duration, u32, Duration) {
    let body = json!({"model": model, "prompt": prompt, "stream": true, "temperature": 0,
        "max_tokens": NEW_TOKENS, "ignore_eos": true})
    .to_string();
    let started = Instant::now();
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_nodelay(true).unwrap();
    write!(
        socket,
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(socket);
    let (mut first, mut last, mut chunks) = (None, started, 0u32);
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        if let Some(data) = line.trim_end().strip_prefix("data: ")
            && data != "[DONE]"
            && data.contains("\"text\":\"")
            && !data.contains("\"text\":\"\"")
        {
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
            chunks += 1;
        }
        line.clear();
    }
    let first = first.expect("at least one token");
    (first - started, chunks, last - first)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let dir = std::env::var_os("TABAGENT_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-models"))
        });
    let model = dir.join("gemma-3-270m-q4_k_m.gguf");
    assert!(
        model.is_file(),
        "{} is missing (make models)",
        model.display()
    );
    let upstream = start("upstream", UPSTREAM_KEY, Some(&model), None);
    let config = format!(
        "[[upstreams]]\nname = \"up\"\nurl = \"http://{}/v1\"\napi_key = \"{UPSTREAM_KEY}\"\n",
        upstream.addr
    );
    let gateway = start("gateway", KEY, None, Some(config));
    // Warm up both paths (model load, connections).
    complete(upstream.addr, UPSTREAM_KEY, "model", "Warm up.");
    complete(gateway.addr, KEY, "up/model", "Warm up.");
    let (mut direct_rate, mut gateway_rate, mut ttft_diff) = (Vec::new(), Vec::new(), Vec::new());
    let (mut direct_ttft, mut gateway_ttft) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let prompt = format!("Round {round}: the history of the river valley, told in order.");
        let mut sides = [
            (upstream.addr, UPSTREAM_KEY, "model", false),
            (gateway.addr, KEY, "up/model", true),
        ];
        if round % 2 == 1 {
            sides.reverse();
        }
        let mut ttfts = [Duration::ZERO; 2];
        for (addr, key, model, via_gateway) in sides {
            let (ttft, chunks, span) = complete(addr, key, model, &prompt);
            let rate = f64::from(chunks.saturating_sub(1)) / span.as_secs_f64();
            if via_gateway {
                gateway_rate.push(rate);
                gateway_ttft.push(ttft.as_secs_f64() * 1e3);
                ttfts[1] = ttft;
            } else {
                direct_rate.push(rate);
                direct_ttft.push(ttft.as_secs_f64() * 1e3);
                ttfts[0] = ttft;
            }
        }
        ttft_diff.push((ttfts[1].as_secs_f64() - ttfts[0].as_secs_f64()) * 1e3);
    }
    let (direct, via) = (median(direct_rate), median(gateway_rate));
    println!(
        "upstream relay, Gemma 3 270M, {NEW_TOKENS} tokens, {ROUNDS} rounds, streamed /v1/completions"
    );
    println!(
        "  direct:  {direct:8.1} tok/s, first token {:7.1} ms",
        median(direct_ttft)
    );
    println!(
        "  gateway: {via:8.1} tok/s, first token {:7.1} ms",
        median(gateway_ttft)
    );
    println!(
        "  ratio {:.3} (target >= 0.97); first-token overhead, median of per-round differences: {:.2} ms (target < 5 ms)",
        via / direct,
        median(ttft_diff)
    );
}
