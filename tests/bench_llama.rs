//! `make bench`: GGUF generation through tabagent against llama.cpp driven
//! directly through llama-cpp-2, side by side in one run, on the same model,
//! prompt (~200 tokens), context settings and thread count (2).
//!
//! Each round runs the direct path, then tabagent over HTTP (SSE) and over
//! native messaging, all measured at the client: time to first token, prompt
//! tokens/s (prompt tokens over the time to first token) and generation
//! tokens/s (tokens after the first over the time from first to last), each
//! side going first in turn. Every
//! round's prompt starts differently, so no side reuses a cached prefix.
//! Sampling is greedy on every side. Medians over the rounds, and ratios.
//!
//! Time to first token is then measured on its own: many more rounds of the
//! same prompts with one new token, so that the median of the per-round
//! differences (tabagent minus direct) is not lost in the machine's noise.
//!
//! The model: `$TABAGENT_BENCH_MODEL`, else `gemma-3-270m-q4_k_m.gguf` in
//! `$TABAGENT_TEST_MODELS` or `target/test-models`.
//!
//! Then concurrent streams (`concurrent.rs`): aggregate generation rates
//! at 1, 2 and 4 streams through tabagent against the same batched loop
//! driven directly, and a short request's first token behind three long ones.
//!
//! With `TABAGENT_BENCH_BASELINE` set to another build of tabagent (the
//! previous commit's, say), that build over HTTP is one more side of every
//! round, so the two builds are compared in the same run.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use serde_json::{Value, json};
use tabagent::engine::llama::{backend, context_params, sampler_chain};
use tabagent::engine::text::SamplingConfig;

#[path = "bench_llama/concurrent.rs"]
mod concurrent;

const BINARY: &str = env!("CARGO_BIN_EXE_tabagent");
const THREADS: u32 = 2;
const CONTEXT: u32 = 2048;
const NEW_TOKENS: u32 = 128;
const ROUNDS: usize = 9;
/// Rounds of the time-to-first-token pass (one new token each).
const TTFT_ROUNDS: usize = 31;

/// What one run measured.
#[derive(Debug, Clone, Copy)]
struct Run {
    prompt_tokens: u32,
    completion_tokens: u32,
    ttft: Duration,
    first_to_last: Duration,
}

impl Run {
    fn prompt_rate(&self) -> f64 {
        f64::from(self.prompt_tokens) / self.ttft.as_secs_f64()
    }
    fn gen_rate(&self) -> f64 {
        f64::from(self.completion_tokens.saturating_sub(1)) / self.first_to_last.as_secs_f64()
    }
}

fn model_path() -> PathBuf {
    if let Some(path) = std::env::var_os("TABAGENT_BENCH_MODEL") {
        return PathBuf::from(path);
    }
    let dir = std::env::var_os("TABAGENT_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-models"))
        });
    dir.join("gemma-3-270m-q4_k_m.gguf")
}

fn prompt(round: usize) -> String {
    let body = "The browser extension keeps a small model on the user's own machine, so that every \
        page they read can be summarised, searched and discussed without any text leaving the \
        computer. It talks to a native host over a pipe, to a local web server over HTTP, or to a \
        peer over a WebRTC data channel, and all three end in the same handler. ";
    format!("{round}. {}Here is a story about it.", body.repeat(3))
}

fn greedy(new_tokens: u32) -> SamplingConfig {
    SamplingConfig::greedy(new_tokens)
}

/// llama.cpp through llama-cpp-2, in this process, with tabagent's settings;
/// one context for all rounds (cleared before each), as tabagent keeps one.
fn direct_run(
    model: &LlamaModel,
    context: &mut LlamaContext<'_>,
    prompt: &str,
    new_tokens: u32,
) -> Run {
    context.clear_kv_cache();
    let started = Instant::now();
    let tokens = model.vocab().tokenize(prompt.as_bytes(), true, true);
    let mut batch = LlamaBatch::new(CONTEXT as usize, 1);
    for (i, token) in tokens.iter().enumerate() {
        batch
            .add(*token, i as i32, &[0], i + 1 == tokens.len())
            .unwrap();
    }
    context.decode(&mut batch).unwrap();
    let mut sampler = sampler_chain(model, &greedy(new_tokens));
    let vocab = model.vocab();
    let mut token = sampler.sample(&context, -1);
    let mut piece = Vec::new();
    vocab.token_to_piece_into(token, &mut piece, false, None);
    let first = Instant::now();
    let mut generated = 1;
    let mut last = first;
    while generated < new_tokens && !vocab.is_eog(token) {
        batch.clear();
        batch
            .add(
                token,
                (tokens.len() + generated as usize - 1) as i32,
                &[0],
                true,
            )
            .unwrap();
        context.decode(&mut batch).unwrap();
        token = sampler.sample(&context, -1);
        if vocab.is_eog(token) {
            break;
        }
        piece.clear();
        vocab.token_to_piece_into(token, &mut piece, false, None);
        generated += 1;
        last = Instant::now();
    }
    Run {
        prompt_tokens: tokens.len() as u32,
        completion_tokens: generated,
        ttft: first - started,
        first_to_last: last - first,
    }
}

fn request(round: usize, id: &str, new_tokens: u32) -> Value {
    json!({"id": id, "request_type": "Generate", "model": "bench", "prompt": prompt(round),
        "max_tokens": new_tokens, "temperature": 0, "repeat_penalty": 1.0, "stream": true})
}

/// Times a stream of reply envelopes: first non-empty chunk, last chunk, final.
struct Timer {
    started: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Timer {
    fn new() -> Timer {
        Timer {
            started: Instant::now(),
            first: None,
            last: None,
        }
    }

    /// Takes one envelope; Some(run) at the final one.
    fn take(&mut self, envelope: &Value, at: Instant) -> Option<Run> {
        match envelope["response_type"].as_str() {
            Some("ChatChunk") => {
                if !envelope["delta"].as_str().unwrap_or("").is_empty() {
                    self.first.get_or_insert(at);
                    self.last = Some(at);
                }
                None
            }
            Some("ChatComplete") => {
                let first = self.first.expect("a chunk with text");
                Some(Run {
                    prompt_tokens: envelope["usage"]["prompt_tokens"].as_u64().unwrap() as u32,
                    completion_tokens: envelope["usage"]["completion_tokens"].as_u64().unwrap()
                        as u32,
                    ttft: first - self.started,
                    first_to_last: self.last.unwrap() - first,
                })
            }
            _ => panic!("unexpected reply: {envelope}"),
        }
    }
}

fn http_run(addr: SocketAddr, round: usize, new_tokens: u32) -> Run {
    let body = request(round, &format!("h{round}"), new_tokens).to_string();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let head = format!(
        "POST /v1/rpc HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {BENCH_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut timer = Timer::new();
    stream
        .write_all(format!("{head}{body}").as_bytes())
        .unwrap();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the stream ended early");
        let at = Instant::now();
        buffer.extend_from_slice(&chunk[..n]);
        // One event per HTTP chunk: `data: <json>\n\n` between chunk headers.
        while let Some(start) = find(&buffer, b"data: ") {
            let Some(len) = find(&buffer[start..], b"\n\n") else {
                break;
            };
            let event: Value = serde_json::from_slice(&buffer[start + 6..start + len]).unwrap();
            buffer.drain(..start + len + 2);
            if let Some(run) = timer.take(&event, at) {
                return run;
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

struct Native {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Native {
    fn send(&mut self, message: &Value) {
        let body = message.to_string();
        let mut frame = (body.len() as u32).to_ne_bytes().to_vec();
        frame.extend_from_slice(body.as_bytes());
        self.stdin.write_all(&frame).unwrap();
        self.stdin.flush().unwrap();
    }

    fn recv(&mut self) -> Value {
        let mut header = [0u8; 4];
        self.stdout.read_exact(&mut header).unwrap();
        let mut body = vec![0u8; u32::from_ne_bytes(header) as usize];
        self.stdout.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    fn run(&mut self, round: usize, new_tokens: u32) -> Run {
        let mut timer = Timer::new();
        self.send(&request(round, &format!("n{round}"), new_tokens));
        loop {
            let envelope = self.recv();
            if let Some(run) = timer.take(&envelope, Instant::now()) {
                return run;
            }
        }
    }
}

/// The API key the servers under test get.
const BENCH_KEY: &str = "bench-key";

fn command(binary: &str, models: &std::path::Path, data: &std::path::Path) -> Command {
    let mut command = Command::new(binary);
    command
        .env("TABAGENT_DATA_DIR", data)
        .env("TABAGENT_MODELS_DIR", models)
        .env("TABAGENT_API_KEY", BENCH_KEY)
        // Every request comes from one address: no rate limits.
        .env("TABAGENT_RATE_LIMIT", "0")
        .env("TABAGENT_GENERATIONS_PER_CLIENT", "1000")
        .env("TABAGENT_LOG", "warn");
    command
}

fn load_message() -> Value {
    json!({"id": "load", "request_type": "LoadModel", "model": "bench",
        "context_size": CONTEXT, "threads": THREADS, "parallel": 4})
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let path = model_path();
    if !path.is_file() {
        eprintln!(
            "bench_llama: no model at {} (run make test's model fetch, or set TABAGENT_BENCH_MODEL)",
            path.display()
        );
        std::process::exit(1);
    }
    let scratch = std::env::temp_dir().join(format!("tabagent-bench-llama-{}", std::process::id()));
    let models = scratch.join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(&path, models.join("bench.gguf")).unwrap();

    // tabagent over HTTP, and over native messaging: model preloaded with the same settings.
    let (server, addr) = http_server(BINARY, &models, &scratch.join("http"));
    let baseline = std::env::var("TABAGENT_BENCH_BASELINE")
        .ok()
        .map(|binary| http_server(&binary, &models, &scratch.join("baseline")));

    let data_native = scratch.join("native");
    let mut child = command(BINARY, &models, &data_native)
        .args(["--mode", "native"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut native = Native {
        stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()),
        child,
    };
    native.send(&load_message());
    let reply = native.recv();
    assert_eq!(reply["response_type"], "ModelLoaded", "{reply}");

    let model = LlamaModel::load_from_file(backend().unwrap(), &path, &LlamaModelParams::default())
        .unwrap();
    let mut context = model
        .new_context(backend().unwrap(), context_params(CONTEXT, THREADS))
        .unwrap();

    // One warm-up round per side, then the measured ones, interleaved.
    let sides = if baseline.is_some() { 4 } else { 3 };
    let baseline_addr = baseline.as_ref().map(|(_, addr)| *addr);
    let mut rounds = |rounds: std::ops::RangeInclusive<usize>, new_tokens: u32| {
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); sides];
        for round in rounds {
            // Each side goes first in turn: no side always follows another.
            for side in (0..sides).map(|k| (round + k) % sides) {
                let run = match (side, baseline_addr) {
                    (0, _) => direct_run(&model, &mut context, &prompt(round), new_tokens),
                    (1, _) => http_run(addr, round, new_tokens),
                    (3, Some(baseline)) => http_run(baseline, round, new_tokens),
                    _ => native.run(round, new_tokens),
                };
                runs[side].push(run);
            }
        }
        runs
    };
    let _ = rounds(0..=0, NEW_TOKENS);
    let runs = rounds(1..=ROUNDS, NEW_TOKENS);
    let ttft_runs = rounds(ROUNDS + 1..=ROUNDS + TTFT_ROUNDS, 1);

    let prompt_tokens = runs[0][0].prompt_tokens;
    println!(
        "GGUF generation: {} , {THREADS} threads, context {CONTEXT}, {prompt_tokens}-token prompt, {NEW_TOKENS} new tokens, greedy, median of {ROUNDS}",
        path.file_name().unwrap().to_string_lossy()
    );
    println!(
        "{:<22} {:>10} {:>12} {:>12} {:>10}",
        "path", "TTFT ms", "prompt t/s", "gen t/s", "tokens"
    );
    let names = [
        "llama-cpp-2 direct",
        "tabagent HTTP SSE",
        "tabagent native",
        "baseline HTTP SSE",
    ];
    let mut medians = Vec::new();
    for (name, side) in names.iter().zip(&runs) {
        let ttft = median(side.iter().map(|r| r.ttft.as_secs_f64() * 1000.0).collect());
        let prompt_rate = median(side.iter().map(Run::prompt_rate).collect());
        let gen_rate = median(side.iter().map(Run::gen_rate).collect());
        let tokens = median(
            side.iter()
                .map(|r| f64::from(r.completion_tokens))
                .collect(),
        );
        println!("{name:<22} {ttft:>10.1} {prompt_rate:>12.1} {gen_rate:>12.1} {tokens:>10.0}");
        medians.push((ttft, prompt_rate, gen_rate));
    }
    let (_, _, d_gen) = medians[0];
    // Paired by round (same prompt, adjacent in time), then the median.
    let overhead = |runs: &[Vec<Run>], side: usize| {
        median(
            runs[side]
                .iter()
                .zip(&runs[0])
                .map(|(ours, direct)| {
                    (ours.ttft.as_secs_f64() - direct.ttft.as_secs_f64()) * 1000.0
                })
                .collect(),
        )
    };
    let direct_ttft = median(
        ttft_runs[0]
            .iter()
            .map(|r| r.ttft.as_secs_f64() * 1000.0)
            .collect(),
    );
    println!(
        "time to first token alone ({TTFT_ROUNDS} more rounds, 1 new token): direct median {direct_ttft:.1} ms"
    );
    for (side, (name, (_, _, gen_rate))) in names.iter().zip(&medians).enumerate().skip(1) {
        println!(
            "{name}: generation {:.3}x direct (target >= 0.98), TTFT overhead {:+.1} ms \
             (median of per-round differences; target < 5; {:+.1} ms in the {ROUNDS} rounds above)",
            gen_rate / d_gen,
            overhead(&ttft_runs, side),
            overhead(&runs, side),
        );
    }

    if let [_, http, _, old] = &medians[..] {
        println!(
            "this build against the baseline, HTTP SSE generation: {:.3}x",
            http.2 / old.2
        );
    }
    concurrent::run(&model, addr, baseline_addr);
    for (mut server, _) in [Some((server, addr)), baseline].into_iter().flatten() {
        let _ = server.kill();
        let _ = server.wait();
    }
    drop(native.stdin);
    let _ = native.child.wait();
    let _ = std::fs::remove_dir_all(&scratch);
}

/// `binary` serving HTTP on a free port, the bench model loaded.
fn http_server(
    binary: &str,
    models: &std::path::Path,
    data: &std::path::Path,
) -> (Child, SocketAddr) {
    let mut server = command(binary, models, data)
        .args(["--mode", "http", "--bind", "127.0.0.1:0"])
        .env("TABAGENT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = server_address(&mut server);
    let loaded = post(addr, "/v1/rpc", &load_message());
    assert!(loaded.contains("ModelLoaded"), "{loaded}");
    (server, addr)
}

fn server_address(server: &mut Child) -> SocketAddr {
    use std::io::BufRead;
    let stderr = BufReader::new(server.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("server: {line}");
            }
            if let Some(addr) = line.split("HTTP on http://").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30)).unwrap()
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> String {
    let body = body.to_string();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {BENCH_KEY}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}
