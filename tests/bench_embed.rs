//! `make bench`: embedding throughput at batch 32 on all-MiniLM-L6-v2 (int8),
//! tabagent against the Python `onnxruntime` + `tokenizers` pipeline
//! (tests/bench_embed.py), same model, same 1,024 sentences of 5–60 words,
//! same machine, one run.
//!
//! tabagent is measured three ways: the engine given all 1,024 sentences (it
//! sorts them by length and runs batches of 32), the engine given 32 at a
//! time (what one request of 32 gets), and `POST /v1/embeddings` with 32
//! sentences per request through the real binary, timed at the client.
//! Needs `$TABAGENT_TEST_MODELS`, `$ORT_DYLIB_PATH` and
//! `python3 -m pip install onnxruntime tokenizers numpy`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tabagent::engine::onnx::OnnxModel;

const SENTENCES: usize = 1024;
const BATCH: usize = 32;
const ROUNDS: usize = 3;

/// The API key the server under test gets.
const BENCH_KEY: &str = "bench-key";

fn main() {
    let models = PathBuf::from(
        std::env::var_os("TABAGENT_TEST_MODELS")
            .expect("set TABAGENT_TEST_MODELS (make bench does)"),
    );
    assert!(
        std::env::var_os("ORT_DYLIB_PATH").is_some(),
        "set ORT_DYLIB_PATH (make bench does)"
    );
    let model_dir = models.join("all-minilm-l6-v2");
    let sentences = sentences(SENTENCES, 7);
    let file = std::env::temp_dir().join(format!(
        "tabagent-bench-sentences-{}.txt",
        std::process::id()
    ));
    std::fs::write(&file, sentences.join("\n")).unwrap();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "embeddings: all-minilm-l6-v2 int8, {SENTENCES} sentences of 5-60 words, batch {BATCH}, {threads} threads, best of {ROUNDS}"
    );

    // The machine is shared and noisy: the four measurements take turns,
    // round by round, and each keeps its best round.
    let model = OnnxModel::load(&model_dir).expect("the model loads");
    let _ = model.embed(&sentences[..BATCH]).unwrap(); // warm-up
    let server = Server::start(&models);
    let bodies: Vec<String> = sentences
        .chunks(BATCH)
        .map(|batch| serde_json::json!({"model": "all-minilm-l6-v2", "input": batch}).to_string())
        .collect();
    post(server.addr, &bodies[0]); // loads the model in the server
    let (mut whole, mut chunked, mut http) = (Duration::MAX, Duration::MAX, Duration::MAX);
    let (mut python, mut padding) = (0f64, 0f64);
    for _ in 0..ROUNDS {
        whole = whole.min(timed(|| {
            model.embed(&sentences).unwrap();
        }));
        chunked = chunked.min(timed(|| {
            for batch in sentences.chunks(BATCH) {
                model.embed(batch).unwrap();
            }
        }));
        http = http.min(timed(|| {
            for body in &bodies {
                post(server.addr, body);
            }
        }));
        let (rate, pad) = python_rate(&model_dir, &file);
        (python, padding) = (python.max(rate), pad);
    }
    drop(server);
    let _ = std::fs::remove_file(&file);

    let rate = |d: Duration| SENTENCES as f64 / d.as_secs_f64();
    println!(
        "  python onnxruntime + tokenizers (pad per batch, input order): {python:.0} sentences/s ({:.0}% of each batch is padding)",
        padding * 100.0
    );
    println!(
        "  tabagent engine, 1,024 at once (sorted, batches of 32):       {:.0} sentences/s — {:.2}x",
        rate(whole),
        rate(whole) / python
    );
    println!(
        "  tabagent engine, 32 per call:                                 {:.0} sentences/s — {:.2}x",
        rate(chunked),
        rate(chunked) / python
    );
    println!(
        "  tabagent POST /v1/embeddings, 32 per request (client-timed):  {:.0} sentences/s — {:.2}x",
        rate(http),
        rate(http) / python
    );
}

/// Deterministic sentences of 5 to 60 words.
fn sentences(count: usize, seed: u64) -> Vec<String> {
    const WORDS: &[&str] = &[
        "the",
        "a",
        "browser",
        "tab",
        "page",
        "reads",
        "quickly",
        "summary",
        "of",
        "an",
        "article",
        "about",
        "weather",
        "markets",
        "cats",
        "music",
        "history",
        "science",
        "model",
        "local",
        "private",
        "search",
        "finds",
        "notes",
        "from",
        "yesterday",
        "meeting",
        "with",
        "team",
        "and",
        "city",
        "council",
        "votes",
        "on",
        "new",
        "park",
        "budget",
        "while",
        "rain",
        "falls",
        "over",
        "northern",
        "hills",
        "engineers",
        "ship",
        "small",
        "fast",
        "binary",
        "that",
        "answers",
        "questions",
        "offline",
        "users",
        "keep",
        "their",
        "data",
        "at",
        "home",
        "because",
        "privacy",
        "matters",
        "more",
        "than",
        "ever",
        "in",
        "modern",
        "life",
        "students",
        "learn",
        "chemistry",
        "through",
        "simple",
        "experiments",
        "kitchen",
    ];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count)
        .map(|_| {
            let len = 5 + (next() % 56) as usize;
            let words: Vec<&str> = (0..len)
                .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                .collect();
            let mut sentence = words.join(" ");
            sentence.push('.');
            sentence
        })
        .collect()
}

fn timed(run: impl FnOnce()) -> Duration {
    let start = Instant::now();
    run();
    start.elapsed()
}

/// The Python pipeline's best rate and padding share.
fn python_rate(model_dir: &Path, sentences: &Path) -> (f64, f64) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bench_embed.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(model_dir)
        .arg(sentences)
        .args(["--batch", &BATCH.to_string(), "--rounds", "1"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "bench_embed.py failed (python3 -m pip install onnxruntime tokenizers numpy):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        line["sentences_per_s"].as_f64().unwrap(),
        line["padding"].as_f64().unwrap(),
    )
}

/// The real binary serving HTTP.
struct Server {
    child: std::process::Child,
    addr: SocketAddr,
    data: PathBuf,
}

impl Server {
    fn start(models: &Path) -> Server {
        let data =
            std::env::temp_dir().join(format!("tabagent-bench-embed-{}", std::process::id()));
        std::fs::create_dir_all(&data).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tabagent"))
            .args([
                "--mode",
                "http",
                "--bind",
                "127.0.0.1:0",
                "--log",
                "warn,tabagent::transport::http=info",
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg("--models-dir")
            .arg(models)
            .env("TABAGENT_API_KEY", BENCH_KEY)
            // Every request comes from one address: no rate limit.
            .env("TABAGENT_RATE_LIMIT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr: SocketAddr = loop {
            let line = lines.next().expect("the server starts").unwrap();
            if let Some(addr) = line.split("HTTP on http://").nth(1) {
                break addr.trim().parse().unwrap();
            }
        };
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("server: {line}");
            }
        });
        Server { child, addr, data }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// One POST on its own connection (tiny_http chunks large replies; reading
/// to the close is simplest); connecting costs microseconds against the
/// ~100 ms a batch takes.
fn post(addr: SocketAddr, body: &str) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {BENCH_KEY}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    assert!(
        reply.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&reply[..reply.len().min(300)])
    );
}
