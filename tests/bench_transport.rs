//! `make bench`: the transports' figures, measured at the client, side by side
//! with a bare tiny_http server in the same run (tiny_http's own ceiling).
//!
//! - native messaging Health round trip p50/p99 (one client, one request in flight);
//! - HTTP `/health` requests/s and p99 at 1 and 32 connections (wrk, 5 s each);
//! - idle RSS of the server, of this (full) build and of the transport-only
//!   build (`TABAGENT_BENCH_SLIM`: `make bench` builds it with `--profile
//!   slim --no-default-features`), and both binaries' stripped sizes;
//! - HTTP requests/s on a route that needs the key, with the key check on
//!   and off (`require_key = false`), two servers at once, runs alternating;
//! - time from exec to the first answered request (native and HTTP).
//!
//! With `TABAGENT_BENCH_BASELINE` set to another build of tabagent (the
//! previous commit's, say), the native round trip and the HTTP figures are
//! measured for it too, in the same run, one binary after the other.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_tabagent");

fn main() {
    let data = std::env::temp_dir().join(format!("tabagent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let baseline = std::env::var("TABAGENT_BENCH_BASELINE").ok();
    if let Some(baseline) = &baseline {
        compare(&data, baseline);
    }

    let (p50, p99) = native_round_trip(BINARY, &data, 20_000);
    println!(
        "native messaging Health round trip: p50 {p50:.1} µs, p99 {p99:.1} µs (20,000 sequential requests)"
    );

    let (exec_native, exec_http) = (
        median(time_to_first_native(&data, 21)),
        median(time_to_first_http(&data, 21)),
    );
    println!(
        "exec to first answer: native {exec_native:.2} ms, HTTP {exec_http:.2} ms (median of 21)"
    );

    footprint(&data);
    key_check_cost(&data);

    let (mut server, addr) = start_http(BINARY, &data);
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "idle RSS (HTTP mode, after start-up): {:.1} MiB",
        rss_mib(server.id())
    );
    let baseline = bare_tiny_http();
    for connections in [1, 32] {
        let ours = wrk(addr, connections);
        let bare = wrk(baseline, connections);
        println!(
            "HTTP /health, {connections:>2} connection(s): tabagent {:.0} req/s (p99 {}, errors {}); bare tiny_http {:.0} req/s (p99 {}) — ratio {:.2}",
            ours.requests_per_second,
            ours.p99,
            ours.errors,
            bare.requests_per_second,
            bare.p99,
            ours.requests_per_second / bare.requests_per_second
        );
    }
    println!("idle RSS (after the load): {:.1} MiB", rss_mib(server.id()));
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data);
}

/// This build against `baseline`, each figure measured for both in turn.
fn compare(data: &std::path::Path, baseline: &str) {
    let binaries = [("this build", BINARY), ("baseline", baseline)];
    for round in 0..2 {
        for (name, binary) in binaries {
            let (p50, p99) = native_round_trip(binary, data, 20_000);
            println!(
                "[{name}, round {round}] native Health round trip: p50 {p50:.1} µs, p99 {p99:.1} µs"
            );
        }
        for (name, binary) in binaries {
            let (mut server, addr) = start_http(binary, data);
            std::thread::sleep(Duration::from_millis(300));
            for connections in [1, 32] {
                let run = wrk(addr, connections);
                println!(
                    "[{name}, round {round}] HTTP /health, {connections:>2} connection(s): {:.0} req/s (p99 {})",
                    run.requests_per_second, run.p99
                );
            }
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

/// Idle RSS and stripped size of this build and of the transport-only one.
fn footprint(data: &std::path::Path) {
    let slim = std::env::var("TABAGENT_BENCH_SLIM").ok();
    let builds = [("full", Some(BINARY.to_string())), ("transport-only", slim)];
    for (name, binary) in builds {
        let Some(binary) = binary else {
            println!(
                "{name} build: not measured (TABAGENT_BENCH_SLIM unset; `make bench` builds it)"
            );
            continue;
        };
        let size = stripped_size(&binary, data);
        // The median of 5 starts: the resident pages of a fresh process vary
        // a little with what the page cache holds.
        let mut rss = Vec::new();
        for _ in 0..5 {
            let (mut server, _) = start_http(&binary, data);
            std::thread::sleep(Duration::from_millis(500));
            rss.push(rss_mib(server.id()));
            let _ = server.kill();
            let _ = server.wait();
        }
        println!(
            "{name} build: idle RSS {:.1} MiB (HTTP mode, after start-up, median of 5), {:.2} MB stripped ({binary})",
            median(rss),
            size as f64 / 1e6
        );
    }
}

/// The size of a `strip`ped copy (profile slim keeps its symbol table).
fn stripped_size(binary: &str, data: &std::path::Path) -> u64 {
    let copy = data.join("stripped");
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&copy)
        .arg(binary)
        .status()
        .is_ok_and(|s| s.success());
    let path = if stripped {
        copy.as_path()
    } else {
        std::path::Path::new(binary)
    };
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Requests/s on `GET /api/stats` (needs the key) with the key check on
/// and off (`require_key = false`): both servers run at once and 1-second wrk
/// runs alternate between them, ten each, so that the machine's other load
/// falls on both alike; the medians.
fn key_check_cost(data: &std::path::Path) {
    let key = "bench-key-0123456789abcdefghijklmnopqrstuvwxyz";
    let mut servers = Vec::new();
    for required in [true, false] {
        let dir = data.join(if required { "key-on" } else { "key-off" });
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = command(BINARY, &dir);
        command.env("TABAGENT_API_KEY", key);
        if !required {
            command.env("TABAGENT_REQUIRE_KEY", "false");
        }
        servers.push(start_command(command));
    }
    std::thread::sleep(Duration::from_millis(300));
    for connections in [1, 32] {
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            for (i, (_, addr)) in servers.iter().enumerate() {
                let run = wrk_for(*addr, connections, "/api/stats", Some(key), "1s");
                assert_eq!(run.errors, "0", "wrk saw errors: {}", run.errors);
                if i == 0 { &mut on } else { &mut off }.push(run.requests_per_second);
            }
        }
        let (on, off) = (median(on), median(off));
        println!(
            "HTTP /api/stats, {connections:>2} connection(s): key check on {on:.0} req/s, off {off:.0} req/s — cost {:.1}% (medians of 10 alternating 1 s runs)",
            (off - on) / off * 100.0
        );
    }
    for (mut server, _) in servers {
        let _ = server.kill();
        let _ = server.wait();
    }
}

fn command(binary: &str, data: &std::path::Path) -> Command {
    let mut command = Command::new(binary);
    command
        .env("TABAGENT_DATA_DIR", data)
        .env("TABAGENT_LOG", "warn")
        // Thousands of requests a second from one address: no rate limit.
        .env("TABAGENT_RATE_LIMIT", "0")
        .stderr(Stdio::null());
    command
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_ne_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn read_frame(stdout: &mut impl Read) -> Vec<u8> {
    let mut header = [0u8; 4];
    stdout.read_exact(&mut header).unwrap();
    let mut body = vec![0u8; u32::from_ne_bytes(header) as usize];
    stdout.read_exact(&mut body).unwrap();
    body
}

fn native_host(binary: &str, data: &std::path::Path) -> Child {
    command(binary, data)
        .arg("chrome-extension://abcdefghijklmnopabcdefghijklmnop/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn native_round_trip(binary: &str, data: &std::path::Path, count: usize) -> (f64, f64) {
    let mut child = native_host(binary, data);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let request = frame(br#"{"id":1,"request_type":"Health"}"#);
    let mut samples = Vec::with_capacity(count);
    for i in 0..count + 1000 {
        let started = Instant::now();
        stdin.write_all(&request).unwrap();
        let reply = read_frame(&mut stdout);
        if i >= 1000 {
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
        assert!(reply.windows(6).any(|w| w == b"Health"));
    }
    drop(stdin);
    let _ = child.wait();
    (
        percentile(&mut samples, 0.50),
        percentile(&mut samples, 0.99),
    )
}

fn time_to_first_native(data: &std::path::Path, runs: usize) -> Vec<f64> {
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            let mut child = native_host(BINARY, data);
            let mut stdin = child.stdin.take().unwrap();
            stdin
                .write_all(&frame(br#"{"id":1,"request_type":"Health"}"#))
                .unwrap();
            read_frame(child.stdout.as_mut().unwrap());
            let elapsed = started.elapsed().as_secs_f64() * 1e3;
            drop(stdin);
            let _ = child.wait();
            elapsed
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_http(binary: &str, data: &std::path::Path) -> (Child, SocketAddr) {
    start_command(command(binary, data))
}

fn start_command(mut command: Command) -> (Child, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = command
        .args(["--mode", "http", "--bind", &addr.to_string()])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_health(addr).is_none() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    (child, addr)
}

fn get_health(addr: SocketAddr) -> Option<()> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).ok()?;
    reply.starts_with(b"HTTP/1.1 200").then_some(())
}

fn time_to_first_http(data: &std::path::Path, runs: usize) -> Vec<f64> {
    (0..runs)
        .map(|_| {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let started = Instant::now();
            let mut child = command(BINARY, data)
                .args(["--mode", "http", "--bind", &addr.to_string()])
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = started + Duration::from_secs(10);
            // Retrying a refused connect costs a few µs: this polls tightly.
            while get_health(addr).is_none() {
                assert!(Instant::now() < deadline, "the server did not start");
            }
            let elapsed = started.elapsed().as_secs_f64() * 1e3;
            let _ = child.kill();
            let _ = child.wait();
            elapsed
        })
        .collect()
}

/// A bare tiny_http server answering `/health` inline on one thread: the
/// ceiling of the HTTP library we build on.
fn bare_tiny_http() -> SocketAddr {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let addr = server.server_addr().to_ip().unwrap();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let header =
                tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
                    .unwrap();
            let _ = request.respond(
                tiny_http::Response::from_data(&b"{\"status\":\"ok\"}"[..]).with_header(header),
            );
        }
    });
    addr
}

struct WrkResult {
    requests_per_second: f64,
    p99: String,
    errors: String,
}

fn wrk(addr: SocketAddr, connections: usize) -> WrkResult {
    wrk_for(addr, connections, "/health", None, "5s")
}

fn wrk_for(
    addr: SocketAddr,
    connections: usize,
    path: &str,
    key: Option<&str>,
    duration: &str,
) -> WrkResult {
    let mut wrk = Command::new("wrk");
    wrk.args([
        "-t",
        &connections.min(2).to_string(),
        "-c",
        &connections.to_string(),
        "-d",
        duration,
        "--latency",
    ]);
    if let Some(key) = key {
        wrk.args(["-H", &format!("Authorization: Bearer {key}")]);
    }
    let output = wrk
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("wrk is installed (make deps)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines().find_map(|l| {
            l.trim()
                .strip_prefix(prefix)
                .map(|rest| rest.trim().to_string())
        })
    };
    let errors: Vec<String> = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(|l| l.trim().to_string())
        .collect();
    WrkResult {
        requests_per_second: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        p99: field("99%").unwrap_or_else(|| "?".into()),
        errors: if errors.is_empty() {
            "0".into()
        } else {
            errors.join("; ")
        },
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)]
}

fn median(mut samples: Vec<f64>) -> f64 {
    percentile(&mut samples, 0.5)
}
