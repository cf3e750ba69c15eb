//! Patched: tests of the patch's behaviour on a real server and socket.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::{Header, Limits, Response, Server};

fn server(limits: Limits) -> (Server, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (
        Server::from_listener_with_limits(listener, limits).unwrap(),
        addr,
    )
}

fn small() -> Limits {
    Limits {
        head_timeout: Some(Duration::from_millis(500)),
        body_timeout: Some(Duration::from_millis(500)),
        body_deadline: Some(Duration::from_secs(1)),
        keep_alive_timeout: Some(Duration::from_millis(300)),
        max_request_line: 32,
        max_headers: 3,
        max_header_bytes: 100,
        max_body_bytes: 10,
        ..Limits::default()
    }
}

/// Sends `request`, then reads until the server closes (at most 5 s).
fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    String::from_utf8(raw).unwrap()
}

fn assert_refused(answer: &str, status: u16) {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {} ", status)),
        "{}",
        answer
    );
    assert!(answer.contains("\r\nConnection: close\r\n"), "{}", answer);
    assert!(answer.contains("application/problem+json"), "{}", answer);
    assert!(
        answer.contains(&format!("\"status\":{},", status)),
        "{}",
        answer
    );
}

#[test]
fn limits_are_answered_before_the_application_sees_a_request() {
    let (server, addr) = server(small());
    let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(40));
    assert_refused(&exchange(addr, long_line.as_bytes()), 414);
    let many = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    assert_refused(&exchange(addr, many), 431);
    let big = format!("GET / HTTP/1.1\r\nA: {}\r\n\r\n", "v".repeat(120));
    assert_refused(&exchange(addr, big.as_bytes()), 431);
    let claim = b"POST / HTTP/1.1\r\nContent-Length: 1000000000000\r\n\r\n";
    assert_refused(&exchange(addr, claim), 413);
    let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n";
    assert_refused(&exchange(addr, chunked), 413);
    let garbled = b"POST / HTTP/1.1\r\nContent-Length: ten\r\n\r\n";
    assert_refused(&exchange(addr, garbled), 400);
    let started = Instant::now();
    assert_refused(&exchange(addr, b"GET / HTTP/1.1\r\nHost: a"), 408);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(server.try_recv().unwrap().is_none());
}

#[test]
fn a_request_is_handed_out_only_with_its_whole_body() {
    let (server, addr) = server(small());
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab")
        .unwrap();
    assert!(server
        .recv_timeout(Duration::from_millis(200))
        .unwrap()
        .is_none());
    stream.write_all(b"cde").unwrap();
    let mut request = server
        .recv_timeout(Duration::from_secs(2))
        .unwrap()
        .unwrap();
    let mut body = String::new();
    request.as_reader().read_to_string(&mut body).unwrap();
    assert_eq!(body, "abcde");
}

#[test]
fn a_response_with_connection_close_ends_the_connection() {
    let (server, addr) = server(small());
    let answering = std::thread::spawn(move || {
        while let Ok(Some(request)) = server.recv_timeout(Duration::from_secs(2)) {
            let close = Header::from_bytes(&b"Connection"[..], &b"close"[..]).unwrap();
            request
                .respond(Response::from_string("a").with_header(close))
                .unwrap();
        }
    });
    let answer = exchange(addr, b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 1, "{}", answer);
    assert!(answer.contains("\r\nConnection: close\r\n"), "{}", answer);
    answering.join().unwrap();
}

#[test]
fn the_keep_alive_time_counts_from_the_end_of_the_response() {
    let (server, addr) = server(small());
    let answering = std::thread::spawn(move || {
        let mut answered = 0;
        while let Ok(Some(request)) = server.recv_timeout(Duration::from_secs(3)) {
            if answered == 0 {
                // longer than the keep-alive timeout
                std::thread::sleep(Duration::from_millis(800));
            }
            request.respond(Response::from_string("a")).unwrap();
            answered += 1;
        }
        answered
    });
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 1024];
    for _ in 0..2 {
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let n = stream.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        std::thread::sleep(Duration::from_millis(100));
    }
    // idle past the keep-alive timeout: closed without an answer
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert_eq!(answering.join().unwrap(), 2);
}
