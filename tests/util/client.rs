//! A minimal HTTP/1.1 client for the tests: any header may be set (Host,
//! Origin, none at all), chunked bodies are undone, and a streamed reply is
//! read event by event. Requests carry the key [`TEST_KEY`] unless told not to.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use super::auth_line;

/// An HTTP response as a test sees it.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the status, showing the body when it differs.
    pub fn assert_status(&self, status: u16) -> &HttpReply {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }

    /// The JSON body of a reply that must be 200.
    pub fn ok_json(&self) -> Value {
        self.assert_status(200).json()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `data:` payloads of an event stream.
    pub fn events(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.body)
            .split("\n\n")
            .filter_map(|event| event.trim().strip_prefix("data: ").map(String::from))
            .collect()
    }
}

/// One request on a fresh connection (`Connection: close`); the headers given
/// override the defaults (Host, Content-Type, the key's Authorization).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpReply {
    request(addr, method, path, headers, body, true)
}

/// [`http`] without the key.
pub fn http_without_key(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpReply {
    request(addr, method, path, headers, body, false)
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    with_key: bool,
) -> HttpReply {
    parse_response(&raw_request(addr, method, path, headers, body, with_key))
}

/// Sends one request and reads everything until the server closes.
pub(crate) fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    with_key: bool,
) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    let has_key = |(n, _): &&(&str, &str)| {
        n.eq_ignore_ascii_case("authorization") || n.eq_ignore_ascii_case("x-api-key")
    };
    if with_key && !headers.iter().any(|h| has_key(&h)) {
        head.push_str(&auth_line());
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    if let Some(body) = body {
        stream.write_all(body).unwrap();
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    raw
}

/// Parses one raw response (head and body) as read from a socket.
pub fn parse_response(raw: &[u8]) -> HttpReply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpReply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
}

/// A streamed request on a connection of its own, read event by event (the
/// response head, with `X-Job-Id`, comes with the first event).
pub struct EventStream {
    socket: TcpStream,
    buffered: Vec<u8>,
    /// The job id from the head, once read.
    pub job: Option<String>,
}

impl EventStream {
    /// Sends `body` to `path` (POST, with the key) and returns at once.
    pub fn send(addr: SocketAddr, path: &str, body: &Value) -> EventStream {
        let mut socket = TcpStream::connect(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let body = body.to_string();
        write!(
            socket,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{}Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            auth_line(),
            body.len()
        )
        .unwrap();
        EventStream {
            socket,
            buffered: Vec::new(),
            job: None,
        }
    }

    /// Waits for the head; returns the job id it names.
    pub fn head(&mut self) -> String {
        if let Some(job) = &self.job {
            return job.clone();
        }
        let head = self.read_until(b"\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let job = head
            .lines()
            .find_map(|line| line.strip_prefix("X-Job-Id: "))
            .unwrap_or_else(|| panic!("no X-Job-Id in {head}"))
            .trim()
            .to_string();
        self.job = Some(job.clone());
        job
    }

    fn read_until(&mut self, end: &[u8]) -> String {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(at) = self.buffered.windows(end.len()).position(|w| w == end) {
                let taken: Vec<u8> = self.buffered.drain(..at + end.len()).collect();
                return String::from_utf8_lossy(&taken).to_string();
            }
            let n = self.socket.read(&mut buf).expect("the stream goes on");
            assert!(n > 0, "the stream ended early");
            self.buffered.extend_from_slice(&buf[..n]);
        }
    }

    /// The next `data:` event's JSON (chunk framing lines and comments are skipped).
    pub fn next_event(&mut self) -> Value {
        self.head();
        loop {
            let event = self.read_until(b"\n\n");
            if let Some(data) = event.split("data: ").nth(1) {
                return serde_json::from_str(data.trim()).unwrap();
            }
        }
    }

    /// Every event up to and including the final one (`done: true`).
    pub fn until_done(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let event = self.next_event();
            let done = event["done"] == true;
            events.push(event);
            if done {
                return events;
            }
        }
    }
}
