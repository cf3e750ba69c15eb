//! Hostile HTTP clients against the real binary: stalled heads and bodies,
//! absurd claims, floods of connections, lines and headers. The server must
//! keep answering everyone else, answer the offender (408, 413, 414, 431 as
//! problem JSON) and close its connection, and never grow or die. Timeouts
//! are lowered through the settings so that each test takes a few seconds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::util::{HttpReply, HttpServer, TempDir, command_for, http, parse_response};

/// Seconds for a head and for one body read (the settings' defaults are 10 and 30).
const TIMEOUT: u64 = 2;

fn server() -> HttpServer {
    HttpServer::start_with(TempDir::new("hostile"), |command| {
        command
            .env("TABAGENT_HTTP_HEAD_TIMEOUT", TIMEOUT.to_string())
            .env("TABAGENT_HTTP_BODY_TIMEOUT", TIMEOUT.to_string())
            .env("TABAGENT_HTTP_BODY_DEADLINE", (2 * TIMEOUT).to_string())
            .env("TABAGENT_HTTP_KEEP_ALIVE_TIMEOUT", TIMEOUT.to_string());
    })
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3 * TIMEOUT + 5)))
        .unwrap();
    stream
}

/// Reads until the server closes (a reset after the answer counts as a
/// close); `None` if it had not closed by the read timeout.
fn read_until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(raw),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(raw),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => (),
            Err(_) => return None,
        }
    }
}

/// A refusal: the status, problem JSON in our shape, and a closed connection.
fn assert_problem(reply: &HttpReply, status: u16, code: &str) {
    reply.assert_status(status);
    assert_eq!(
        reply.header("Content-Type"),
        Some("application/problem+json")
    );
    assert_eq!(reply.header("Connection"), Some("close"));
    let body = reply.json();
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], format!("urn:tabagent:problem:{code}"));
    assert_eq!(body["error"]["code"], code);
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

fn health_within(server: &HttpServer, limit: Duration) {
    let started = Instant::now();
    server.get("/health").assert_status(200);
    assert!(
        started.elapsed() < limit,
        "/health took {:?}",
        started.elapsed()
    );
}

/// VmRSS of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn stalled_heads_and_bodies_hold_no_one_up_and_are_closed() {
    let server = server();
    let mut heads: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut stream = connect(server.addr);
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nAcc")
                .unwrap();
            stream
        })
        .collect();
    let mut bodies: Vec<TcpStream> = (0..32)
        .map(|_| {
            let mut stream = connect(server.addr);
            stream
                .write_all(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                      Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":",
                )
                .unwrap();
            stream
        })
        .collect();
    let stalled_at = Instant::now();

    // Everyone else is served meanwhile, quickly.
    for _ in 0..5 {
        health_within(&server, Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(100));
    }

    // Each stalled connection gets its 408 and is closed after the timeout.
    for stream in heads.iter_mut().chain(bodies.iter_mut()) {
        let raw = read_until_closed(stream).expect("the server closed the stalled connection");
        assert_problem(&parse_response(&raw), 408, "request-timeout");
    }
    let elapsed = stalled_at.elapsed();
    assert!(
        elapsed >= Duration::from_secs(TIMEOUT) - Duration::from_millis(300),
        "closed before the timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(TIMEOUT + 3),
        "closed long after the timeout: {elapsed:?}"
    );
    health_within(&server, Duration::from_secs(2));
}

#[test]
fn a_terabyte_claim_gets_413_unread_and_the_process_lives() {
    let mut server = server();
    let before = rss_kib(server.child.id());
    for _ in 0..3 {
        let mut stream = connect(server.addr);
        stream
            .write_all(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                  Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{",
            )
            .unwrap();
        let started = Instant::now();
        let raw = read_until_closed(&mut stream).expect("an answer and a close");
        assert_problem(&parse_response(&raw), 413, "too-large");
        assert!(
            started.elapsed() < Duration::from_secs(TIMEOUT),
            "the refusal waited for the body: {:?}",
            started.elapsed()
        );
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server died"
    );
    server.get("/health").assert_status(200);
    let after = rss_kib(server.child.id());
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn a_chunked_body_past_the_limit_gets_413() {
    let server = HttpServer::start_with(TempDir::new("hostile-chunked"), |command| {
        command.env("TABAGENT_MAX_BODY_BYTES", "1000");
    });
    let mut stream = connect(server.addr);
    let mut request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
        Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for _ in 0..3 {
        request.extend_from_slice(format!("200\r\n{}\r\n", "x".repeat(0x200)).as_bytes());
    }
    stream.write_all(&request).unwrap();
    let raw = read_until_closed(&mut stream).expect("an answer and a close");
    assert_problem(&parse_response(&raw), 413, "too-large");
    // A chunked body within the limit (a trailer field too) reaches the route.
    let mut stream = connect(server.addr);
    stream
        .write_all(
            format!(
                "POST /v1/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{}\
                 Transfer-Encoding: chunked\r\n\r\n8\r\n{{\"id\":1,\r\n\
                 18;ext=1\r\n\"request_type\":\"Health\"}}\r\n0\r\nX-Trailer: 1\r\n\r\n",
                crate::util::auth_line()
            )
            .as_bytes(),
        )
        .unwrap();
    let raw = read_until_closed(&mut stream).expect("an answer and a close");
    let reply = parse_response(&raw);
    assert_eq!(reply.ok_json()["response_type"], "Health");
}

#[test]
fn more_connections_than_descriptors_leave_http_accepting() {
    let data = TempDir::new("hostile-fds");
    let mut command = command_for("prlimit", data.path());
    command
        .arg("--nofile=256")
        .arg("--")
        .arg(crate::util::binary());
    let server = HttpServer::start_command(command, data);
    // Non-blocking connects: once the server's backlog is full, a blocking
    // connect would wait for SYN retries.
    let flood: Vec<socket2::Socket> = (0..1200)
        .map(|_| {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_nonblocking(true).unwrap();
            let _ = socket.connect(&server.addr.into());
            socket
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.logged("os error 24") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        server.logged("os error 24"),
        "the server never ran out of descriptors"
    );
    drop(flood);

    // Accepting goes on: within a few seconds, requests are answered again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = connect(server.addr);
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        if let Some(raw) = read_until_closed(&mut stream).filter(|raw| !raw.is_empty()) {
            parse_response(&raw).assert_status(200);
            break;
        }
        assert!(Instant::now() < deadline, "HTTP stopped accepting");
    }
    for _ in 0..20 {
        health_within(&server, Duration::from_secs(2));
    }
}

#[test]
fn a_200_mib_request_line_gets_414_and_rss_stays_flat() {
    let server = server();
    let before = rss_kib(server.child.id());
    let stream = connect(server.addr);
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'a'; 1 << 20];
        let _ = writer.write_all(b"GET /");
        for _ in 0..200 {
            if writer.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = writer.write_all(b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    });
    let mut reader = stream;
    let raw = read_until_closed(&mut reader).expect("an answer and a close");
    assert_problem(&parse_response(&raw), 414, "uri-too-long");
    drop(reader);
    sender.join().unwrap();
    let after = rss_kib(server.child.id());
    assert!(
        after < before + 4 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    server.get("/health").assert_status(200);
}

#[test]
fn ten_thousand_headers_get_431() {
    let server = server();
    let mut head = String::from("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for i in 0..10_000 {
        head.push_str(&format!("X-Header-{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    let stream = connect(server.addr);
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
    });
    let mut reader = stream;
    let raw = read_until_closed(&mut reader).expect("an answer and a close");
    assert_problem(&parse_response(&raw), 431, "header-fields-too-large");
    sender.join().unwrap();

    // Few but huge header fields hit the byte limit the same way.
    let big = "v".repeat(70 << 10);
    let reply = http(server.addr, "GET", "/health", &[("X-Big", &big)], None);
    assert_problem(&reply, 431, "header-fields-too-large");
    server.get("/health").assert_status(200);
}

#[test]
fn a_stalled_body_gets_408_within_the_body_timeout() {
    let server = server();
    let mut stream = connect(server.addr);
    stream
        .write_all(
            b"POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{\"title\":",
        )
        .unwrap();
    let started = Instant::now();
    let raw = read_until_closed(&mut stream).expect("an answer and a close");
    let elapsed = started.elapsed();
    assert_problem(&parse_response(&raw), 408, "request-timeout");
    assert!(
        elapsed >= Duration::from_secs(TIMEOUT) - Duration::from_millis(300)
            && elapsed < Duration::from_secs(TIMEOUT + 2),
        "408 after {elapsed:?}"
    );
}

#[test]
fn an_idle_kept_alive_connection_is_closed_quietly() {
    let server = server();
    let mut stream = connect(server.addr);
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let raw = read_until_closed(&mut stream).expect("closed after the keep-alive timeout");
    let elapsed = started.elapsed();
    // One answer (the health check), nothing after it, then the close.
    assert_eq!(
        String::from_utf8_lossy(&raw).matches("HTTP/1.1 ").count(),
        1,
        "{}",
        String::from_utf8_lossy(&raw)
    );
    parse_response(&raw).assert_status(200);
    assert!(
        elapsed >= Duration::from_secs(TIMEOUT) - Duration::from_millis(300)
            && elapsed < Duration::from_secs(TIMEOUT + 2),
        "closed after {elapsed:?}"
    );
}
