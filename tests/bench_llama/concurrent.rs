//! Concurrent streams, in the same run as the single-stream figures: the
//! aggregate generation rate of 1, 2 and 4 greedy streams (128 tokens each,
//! end-of-sequence ignored) through tabagent over HTTP, against llama-cpp-2
//! driven directly with the same batched loop (one context with 4
//! sequences in a unified KV cache, prompt chunks of 512 tokens, one token
//! per generating sequence a step, one decode a step); then the first-token
//! time of a short request while three long ones generate.
//!
//! The aggregate rate is every stream's tokens after its first over the
//! time from the earliest first token to the latest last one. With a
//! baseline build, its aggregate rates are one more column of each round.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use serde_json::{Value, json};
use tabagent::engine::llama::{backend, sampler_chain, slots_context_params};

use super::{BENCH_KEY, CONTEXT, NEW_TOKENS, THREADS, find, greedy, median, prompt};

/// Slots of the context on both sides, and the prompt chunk of a step.
const SLOTS: u32 = 4;
const CHUNK: u32 = 512;
/// Rounds per concurrency level.
const ROUNDS: usize = 3;

/// When one stream's first and last tokens came, and how many it got.
#[derive(Debug, Clone, Copy)]
struct Stream {
    first: Instant,
    last: Instant,
    tokens: u32,
}

/// Tokens after each stream's first over the span from the earliest first
/// token to the latest last one.
fn aggregate(streams: &[Stream]) -> f64 {
    let first = streams.iter().map(|s| s.first).min().unwrap();
    let last = streams.iter().map(|s| s.last).max().unwrap();
    let tokens: u32 = streams.iter().map(|s| s.tokens.saturating_sub(1)).sum();
    f64::from(tokens) / (last - first).as_secs_f64()
}

/// The batched loop, driven directly: `n` streams on one context.
fn direct(model: &LlamaModel, n: usize, round: usize) -> Vec<Stream> {
    let mut context = model
        .new_context(
            backend().unwrap(),
            slots_context_params(CONTEXT, THREADS, CHUNK, SLOTS),
        )
        .unwrap();
    let vocab = model.vocab();
    let prompts: Vec<Vec<LlamaToken>> = (0..n)
        .map(|k| vocab.tokenize(prompt(round * 10 + k).as_bytes(), true, true))
        .collect();
    let mut samplers: Vec<_> = (0..n)
        .map(|_| sampler_chain(model, &greedy(NEW_TOKENS)))
        .collect();
    let mut batch = LlamaBatch::new((CHUNK + SLOTS) as usize, 1);
    let mut read = vec![0usize; n];
    let mut pending: Vec<Option<LlamaToken>> = vec![None; n];
    let mut runs: Vec<Option<Stream>> = vec![None; n];
    let mut position = vec![0usize; n];
    loop {
        batch.clear();
        let mut logits: Vec<(usize, i32)> = Vec::new();
        for k in 0..n {
            if let Some(token) = pending[k].take() {
                logits.push((k, batch.n_tokens()));
                batch
                    .add(token, position[k] as i32, &[k as i32], true)
                    .unwrap();
                position[k] += 1;
            }
        }
        let mut room = (CHUNK as usize)
            .saturating_sub(batch.n_tokens() as usize)
            .max(1);
        for k in 0..n {
            let remaining = prompts[k].len() - read[k];
            if remaining == 0 || room == 0 {
                continue;
            }
            let take = remaining.min(room);
            for i in read[k]..read[k] + take {
                let last = i + 1 == prompts[k].len();
                if last {
                    logits.push((k, batch.n_tokens()));
                }
                batch
                    .add(prompts[k][i], i as i32, &[k as i32], last)
                    .unwrap();
            }
            read[k] += take;
            position[k] = read[k];
            room -= take;
        }
        if batch.n_tokens() == 0 {
            break;
        }
        context.decode(&mut batch).unwrap();
        let now = Instant::now();
        for (k, at) in logits {
            let token = samplers[k].sample(&context, at);
            let run = runs[k].get_or_insert(Stream {
                first: now,
                last: now,
                tokens: 0,
            });
            run.last = now;
            run.tokens += 1;
            if run.tokens < NEW_TOKENS {
                pending[k] = Some(token);
            }
        }
    }
    runs.into_iter().map(Option::unwrap).collect()
}

/// Opens a streaming Generate over HTTP; returns the socket after its head,
/// with the job id.
fn open(addr: SocketAddr, body: &Value) -> (TcpStream, Vec<u8>, String) {
    let body = body.to_string();
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_nodelay(true).unwrap();
    write!(
        socket,
        "POST /v1/rpc HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {BENCH_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at;
        }
        let n = socket.read(&mut chunk).unwrap();
        assert!(n > 0, "no response head");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let job = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Job-Id: "))
        .unwrap_or("")
        .trim()
        .to_string();
    buffer.drain(..head_end + 4);
    (socket, buffer, job)
}

/// Reads a stream to its final reply; `first` is told at the first token.
fn read(mut socket: TcpStream, mut buffer: Vec<u8>, first: impl FnOnce(Instant)) -> Stream {
    let mut first = Some(first);
    let mut times: Option<(Instant, Instant)> = None;
    let mut chunk = [0u8; 8192];
    loop {
        while let Some(start) = find(&buffer, b"data: ") {
            let Some(len) = find(&buffer[start..], b"\n\n") else {
                break;
            };
            let event: Value = serde_json::from_slice(&buffer[start + 6..start + len]).unwrap();
            buffer.drain(..start + len + 2);
            let now = Instant::now();
            match event["response_type"].as_str() {
                Some("ChatChunk") => {
                    if let Some(tell) = first.take() {
                        tell(now);
                    }
                    let (start, _) = times.get_or_insert((now, now));
                    times = Some((*start, now));
                }
                Some("ChatComplete") => {
                    let (first, last) = times.expect("a chunk before the end");
                    let tokens = event["usage"]["completion_tokens"].as_u64().unwrap() as u32;
                    return Stream {
                        first,
                        last,
                        tokens,
                    };
                }
                _ => panic!("unexpected reply: {event}"),
            }
        }
        let n = socket.read(&mut chunk).unwrap();
        assert!(n > 0, "the stream ended early");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

fn generate(prompt: &str, max_tokens: u32) -> Value {
    json!({"id": "c", "request_type": "Generate", "model": "bench", "prompt": prompt,
        "max_tokens": max_tokens, "temperature": 0, "repeat_penalty": 1.0,
        "ignore_eos": true, "stream": true})
}

/// `n` streams at once through tabagent.
fn through_tabagent(addr: SocketAddr, n: usize, round: usize) -> Vec<Stream> {
    let readers: Vec<_> = (0..n)
        .map(|k| {
            let body = generate(&prompt(round * 10 + k), NEW_TOKENS);
            std::thread::spawn(move || {
                let (socket, buffer, _) = open(addr, &body);
                read(socket, buffer, |_| {})
            })
        })
        .collect();
    readers.into_iter().map(|r| r.join().unwrap()).collect()
}

/// First-token time of a short request while three long ones generate
/// (and alone, for reference).
fn short_while_long(addr: SocketAddr, round: usize) -> (f64, f64) {
    let short = generate(&format!("{round}. Hi."), 1);
    let alone = {
        let started = Instant::now();
        let (socket, buffer, _) = open(addr, &short);
        let run = read(socket, buffer, |_| {});
        (run.first - started).as_secs_f64() * 1000.0
    };
    let (started_tx, started_rx) = mpsc::channel();
    let long: Vec<_> = (0..3)
        .map(|k| {
            let body = generate(&prompt(round * 10 + 5 + k), 2000);
            let tell = started_tx.clone();
            std::thread::spawn(move || {
                let (socket, buffer, job) = open(addr, &body);
                tell.send(job).unwrap();
                read(socket, buffer, |_| {})
            })
        })
        .collect();
    let jobs: Vec<String> = (0..3)
        .map(|_| started_rx.recv_timeout(Duration::from_secs(120)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (socket, buffer, _) = open(addr, &short);
    let run = read(socket, buffer, |_| {});
    let during = (run.first - started).as_secs_f64() * 1000.0;
    for job in jobs {
        super::post(addr, &format!("/api/generations/{job}/stop"), &json!({}));
    }
    for thread in long {
        let _ = thread.join();
    }
    (alone, during)
}

/// Runs the concurrent figures and prints them.
pub fn run(model: &LlamaModel, addr: SocketAddr, baseline: Option<SocketAddr>) {
    println!(
        "\nconcurrent streams: {SLOTS} slots, {NEW_TOKENS} greedy tokens each (eos ignored), median of {ROUNDS} rounds"
    );
    println!(
        "{:<8} {:>16} {:>16} {:>10} {:>16}",
        "streams", "direct t/s", "tabagent t/s", "ratio", "baseline t/s"
    );
    let mut single = (0.0, 0.0);
    let mut four = (0.0, 0.0);
    for n in [1usize, 2, 4] {
        let mut direct_rates = Vec::new();
        let mut ours = Vec::new();
        let mut old = Vec::new();
        for round in 0..=ROUNDS {
            let d = aggregate(&direct(model, n, 100 + round));
            let t = aggregate(&through_tabagent(addr, n, 200 + round));
            let b = baseline.map(|addr| aggregate(&through_tabagent(addr, n, 200 + round)));
            if round > 0 {
                // Round 0 warms up.
                direct_rates.push(d);
                ours.push(t);
                old.extend(b);
            }
        }
        let (d, t) = (median(direct_rates), median(ours));
        let b = if old.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1}", median(old))
        };
        println!("{n:<8} {d:>16.1} {t:>16.1} {:>10.3} {b:>16}", t / d);
        match n {
            1 => single = (d, t),
            4 => four = (d, t),
            _ => {}
        }
    }
    println!(
        "4 streams against 1, same run: direct {:.2}x, tabagent {:.2}x (target >= 1.5x); \
         tabagent at 4 streams {:.3}x direct (target >= 0.95)",
        four.0 / single.0,
        four.1 / single.1,
        four.1 / four.0
    );
    let mut alone = Vec::new();
    let mut during = Vec::new();
    for round in 0..ROUNDS {
        let (a, d) = short_while_long(addr, 300 + round);
        alone.push(a);
        during.push(d);
    }
    println!(
        "first token of a short request: alone {:.0} ms, while three long ones generate {:.0} ms (median of {ROUNDS})",
        median(alone),
        median(during)
    );
}
