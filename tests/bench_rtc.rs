//! `make bench` (WebRTC): the data channel figures, measured at a str0m client
//! in this process talking to the real binary over loopback UDP.
//!
//! - time from the offer POST to an open data channel (median of 30);
//! - Health round trip p50/p99 (one request in flight, 20,000 requests);
//! - throughput of 64 KiB messages, client to server (Health with padding)
//!   and both ways (a 64 KiB request whose 64 KiB error reply echoes it);
//! - the same client-to-server throughput from headless Chromium, the peer
//!   users actually have (median of 5 runs of tests/browser/run.sh; skipped,
//!   saying why, without chromium, node or network namespaces);
//! - server RSS per idle connected session (100 sessions).
//!
//! Both peers share the machine's cores, so the figures include the client's
//! own DTLS/SCTP work.

#[path = "rtc/browser.rs"]
mod browser;
#[path = "rtc/client.rs"]
mod client;
#[allow(dead_code)] // the bench uses only TempDir, command and binary
mod util;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use client::{Client, http_json};

fn main() {
    let data = util::TempDir::new("bench-rtc");
    let (server, http) = start(&data);
    idle_session_memory(&server, http);

    let mut open_ms: Vec<f64> = (0..30)
        .map(|_| {
            let started = Instant::now();
            let mut client = Client::connect(http);
            let elapsed = started.elapsed().as_secs_f64() * 1e3;
            close(http, &client);
            client.drive(Duration::ZERO);
            elapsed
        })
        .collect();
    open_ms.sort_by(f64::total_cmp);
    println!(
        "offer POST to open data channel: median {:.2} ms, max {:.2} ms (30 sessions, one at a time)",
        open_ms[15], open_ms[29]
    );

    let (mut client, _) = Client::signal_with(http, 128 * 1024);
    client.wait_open(Duration::from_secs(10));
    let n = 20_000;
    let mut rtt: Vec<f64> = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        client.send(&json!({"id": i, "request_type": "Health"}));
        let reply = client.recv(Duration::from_secs(10));
        rtt.push(started.elapsed().as_secs_f64() * 1e6);
        assert_eq!(reply["id"], i);
    }
    rtt.sort_by(f64::total_cmp);
    println!(
        "data channel Health round trip: p50 {:.0} µs, p99 {:.0} µs ({n} sequential requests)",
        rtt[n / 2],
        rtt[n * 99 / 100]
    );

    let pad = "x".repeat(64 * 1024 - 60);
    let messages = 1600;
    let started = Instant::now();
    for i in 0..messages {
        client.send(&json!({"id": i, "request_type": "Health", "pad": pad}));
    }
    wait_replies(&mut client, messages, |r| r["response_type"] == "Health");
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "64 KiB messages, client to server: {:.1} MB/s ({messages} messages, {:.0} messages/s)",
        messages as f64 * 65_536.0 / seconds / 1e6,
        messages as f64 / seconds
    );

    let name = "X".repeat(64 * 1024 - 60);
    let messages = 800;
    let started = Instant::now();
    for i in 0..messages {
        client.send(&json!({"id": i, "request_type": name}));
    }
    wait_replies(&mut client, messages, |r| r["response_type"] == "Error");
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "64 KiB messages, echoed both ways: {:.1} MB/s each way ({messages} round trips)",
        messages as f64 * 65_536.0 / seconds / 1e6
    );
    close(http, &client);
    drop(server);
    browser_upload();
}

/// 64 KiB messages from headless Chromium: the real-browser test's page sends
/// 400 Health requests padded to 64 KiB, pausing while `bufferedAmount` is
/// above 4 MiB until `bufferedamountlow`, and times them in the page until
/// the last reply. Each run starts its own server (in the namespace).
fn browser_upload() {
    let runs = 5;
    let mut figures = Vec::with_capacity(runs);
    let mut name = String::new();
    for _ in 0..runs {
        let run = match browser::run_page(&util::binary()) {
            Ok(run) => run,
            Err(why) => {
                println!("64 KiB messages, Chromium to server: skipped ({why})");
                return;
            }
        };
        let Some(figure) = run.figure("upload64KiBMBps").filter(|_| run.passed) else {
            println!(
                "64 KiB messages, Chromium to server: the page failed\n{}\n{}",
                run.stdout, run.stderr
            );
            return;
        };
        figures.push(figure);
        name = run.browser().unwrap_or("chromium").to_string();
    }
    figures.sort_by(f64::total_cmp);
    println!(
        "64 KiB messages, Chromium to server: {:.1} MB/s median, {:.1}-{:.1} ({runs} runs of 400 messages, {name}, measured in the page)",
        figures[runs / 2],
        figures[0],
        figures[runs - 1]
    );
}

/// Server RSS growth per connected, idle session (100 of them, on a fresh
/// server after one warm-up session).
fn idle_session_memory(server: &Server, http: SocketAddr) {
    let mut warm = Client::connect(http);
    warm.call(json!({"id": 0, "request_type": "Health"}));
    close(http, &warm);
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(server);
    let mut clients: Vec<Client> = (0..100).map(|_| Client::signal(http).0).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while clients.iter().any(|c| c.channel.is_none()) {
        assert!(Instant::now() < deadline, "not every channel opened");
        for client in &mut clients {
            client.drive(Duration::ZERO);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for client in &mut clients {
        client.send(&json!({"id": 1, "request_type": "Health"}));
    }
    while clients.iter().any(|c| c.inbox.is_empty()) {
        assert!(Instant::now() < deadline, "not every session answered");
        for client in &mut clients {
            client.drive(Duration::ZERO);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let after = rss_kib(server);
    println!(
        "server RSS per idle connected session: {:.1} KiB ({before} KiB before, {after} KiB with 100 sessions that each answered one request)",
        (after as f64 - before as f64) / 100.0,
    );
    for client in &clients {
        close(http, client);
    }
}

/// Drives until `count` replies matching `is_reply` have arrived.
fn wait_replies(client: &mut Client, count: usize, is_reply: impl Fn(&Value) -> bool) {
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen < count {
        assert!(Instant::now() < deadline, "{seen} of {count} replies");
        match client.inbox.pop_front() {
            Some(reply) => {
                assert!(is_reply(&reply), "{reply}");
                seen += 1;
            }
            None => client.drive(Duration::from_millis(5)),
        }
    }
}

fn close(http: SocketAddr, client: &Client) {
    http_json(
        http,
        "DELETE",
        &format!("/v1/webrtc/session/{}", client.session_id),
        None,
    );
}

/// The server process, killed when dropped (also when the bench panics).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data: &util::TempDir) -> (Server, SocketAddr) {
    let mut child = util::command(data.path())
        .args(["--mode", "webrtc", "--bind", "127.0.0.1:0"])
        .env("TABAGENT_WEBRTC_HOSTS", "127.0.0.1")
        .env(
            "TABAGENT_LOG",
            std::env::var("TABAGENT_BENCH_LOG")
                .map(|log| format!("{log},tabagent::transport::http=info"))
                .unwrap_or_else(|_| "warn,tabagent::transport::http=info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(addr) = line.split("HTTP on http://").nth(1) {
                let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
            } else {
                eprintln!("server: {line}");
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server starts");
    (Server(child), addr)
}

fn rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.0.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
