use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Read, Write};

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{HTTPVersion, Header, Method};
use crate::limits::Limits;
use crate::util::RefinedTcpStream;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

// Patched: the whole of this file's reading side. The head is read with
// bounded lines and a deadline, the body is read whole (within its limits)
// on this connection's thread before the request is handed out, early
// answers are RFC 7807 problem JSON, and a connection refused while the
// client is still sending closes lingering (as nginx does), so that the
// client reads the answer instead of a reset.

/// How long a refused connection keeps reading (and discarding) what the
/// client still sends after the answer, at most.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How long one read of that may wait.
const LINGER_READ: Duration = Duration::from_millis(500);
/// Bytes of a chunk-size line (with extensions) of a chunked body.
const MAX_CHUNK_LINE: usize = 1024;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // Patched: what a client may cost.
    limits: Arc<Limits>,

    // Patched: set by a response with `Connection: close`.
    close_after: Arc<AtomicBool>,

    // Patched: false until the first request head has been read.
    served: bool,
}

/// An answer given before the request reaches the application; the
/// connection closes after it.
#[derive(Debug)]
struct Refusal {
    status: u16,
    slug: &'static str,
    title: &'static str,
    detail: String,
}

impl Refusal {
    fn new(status: u16, slug: &'static str, title: &'static str, detail: String) -> Refusal {
        Refusal {
            status,
            slug,
            title,
            detail,
        }
    }

    /// The same problem JSON as tabagent's own errors (`type`, `title`,
    /// `status`, `detail`, plus an OpenAI-style `error` object). The details
    /// are built here from numbers, never from what the client sent, so
    /// they need no escaping.
    fn write(&self, writer: &mut dyn Write, version: &HTTPVersion) -> IoResult<()> {
        let body = format!(
            "{{\"type\":\"urn:tabagent:problem:{slug}\",\"title\":\"{title}\",\"status\":{status},\"detail\":\"{detail}\",\"error\":{{\"message\":\"{detail}\",\"type\":\"invalid_request_error\",\"code\":\"{slug}\"}}}}",
            slug = self.slug,
            title = self.title,
            status = self.status,
            detail = self.detail,
        );
        let reason = crate::StatusCode(self.status).default_reason_phrase();
        write!(
            writer,
            "HTTP/{}.{} {} {}\r\nContent-Type: application/problem+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            version.0,
            version.1,
            self.status,
            reason,
            body.len(),
            body
        )?;
        writer.flush()
    }
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    /// Patched: answer, then close.
    Refused(HTTPVersion, Refusal),
    /// Patched: no request began in time, or the client closed: close quietly.
    Idle,
    ReadIoError(IoError),
}

/// A line too long, or the socket failing (a timeout included).
enum LineError {
    TooLong,
    Io(IoError),
}

impl From<IoError> for LineError {
    fn from(e: IoError) -> LineError {
        LineError::Io(e)
    }
}

/// On Unix an expired SO_RCVTIMEO reads as `WouldBlock`, not `TimedOut`
/// (which upstream tested for, so its 408 never fired on Linux).
fn is_timeout(e: &IoError) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

/// When reads must end: each may wait `per_read`, and all of them together
/// must be done by `deadline`.
#[derive(Clone, Copy)]
struct Timer {
    per_read: Option<Duration>,
    deadline: Option<Instant>,
}

impl Timer {
    fn new(per_read: Option<Duration>, total: Option<Duration>) -> Timer {
        Timer {
            per_read,
            deadline: total.map(|t| Instant::now() + t),
        }
    }

    /// Sets the socket's read timeout for the next read from it.
    fn arm(&self, stream: &RefinedTcpStream) -> IoResult<()> {
        let left = match self.deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left < Duration::from_millis(1) {
                    return Err(IoError::new(ErrorKind::TimedOut, "deadline passed"));
                }
                Some(left)
            }
            None => None,
        };
        let timeout = match (self.per_read, left) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        stream.set_read_timeout(timeout)
    }
}

/// The buffered bytes, reading more from the socket (under `timer`) when
/// there are none; empty at end of stream.
fn fill<'a>(reader: &'a mut BufReader<RefinedTcpStream>, timer: &Timer) -> IoResult<&'a [u8]> {
    if reader.buffer().is_empty() {
        timer.arm(reader.get_ref())?;
    }
    reader.fill_buf()
}

/// Reads one line ending in LF (a CR before it is dropped) of at most `max`
/// bytes before its end, never holding more than that.
fn read_line(
    reader: &mut BufReader<RefinedTcpStream>,
    max: usize,
    timer: &Timer,
) -> Result<Vec<u8>, LineError> {
    let mut line = Vec::new();
    loop {
        let available = fill(reader, timer)?;
        if available.is_empty() {
            return Err(LineError::Io(IoError::new(
                ErrorKind::ConnectionAborted,
                "Unexpected EOF",
            )));
        }
        let (taken, done) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (end + 1, true),
            None => (available.len(), false),
        };
        // +2: the CR LF that ends a line of exactly `max` bytes
        if line.len() + taken > max.saturating_add(2) {
            return Err(LineError::TooLong);
        }
        line.extend_from_slice(&available[..taken]);
        reader.consume(taken);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > max {
                return Err(LineError::TooLong);
            }
            return Ok(line);
        }
    }
}

/// Appends exactly `len` bytes to `body`, growing it only as they arrive.
fn read_exact_into(
    reader: &mut BufReader<RefinedTcpStream>,
    mut len: u64,
    timer: &Timer,
    body: &mut Vec<u8>,
) -> IoResult<()> {
    while len > 0 {
        let available = fill(reader, timer)?;
        if available.is_empty() {
            return Err(IoError::new(
                ErrorKind::ConnectionAborted,
                "Connection has been closed before we received enough data",
            ));
        }
        let taken = len.min(available.len() as u64) as usize;
        body.extend_from_slice(&available[..taken]);
        reader.consume(taken);
        len -= taken as u64;
    }
    Ok(())
}

/// How the body of a request is framed.
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// `Connection: upgrade`: the application gets the raw stream.
    Upgrade,
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
        limits: Arc<Limits>,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            limits,
            close_after: Arc::new(AtomicBool::new(false)),
            served: false,
        }
    }

    /// Reads a request head from the stream, then (patched) its whole body.
    fn read(&mut self) -> Result<Request, ReadError> {
        let limits = Arc::clone(&self.limits);
        let reader = self.next_header_source.get_mut();

        // Until a request begins: a new connection gets the head timeout,
        // a kept-alive one the keep-alive timeout.
        let idle = if self.served {
            limits.keep_alive_timeout
        } else {
            limits.head_timeout
        };
        // The idle time counts from the end of the previous response: while
        // that is still being written, waiting goes on.
        loop {
            match fill(reader, &Timer::new(idle, None)) {
                Ok([]) => return Err(ReadError::Idle),
                Ok(_) => break,
                Err(e) if is_timeout(&e) && !self.sink.last_done() => self.sink.wait_for_last(),
                Err(e) if is_timeout(&e) => return Err(ReadError::Idle),
                Err(e) => return Err(ReadError::ReadIoError(e)),
            }
            if self.close_after.load(Ordering::SeqCst) {
                return Err(ReadError::Idle);
            }
        }
        self.served = true;

        let v11 = HTTPVersion(1, 1);
        let timer = Timer::new(None, limits.head_timeout);
        let head_error = |version: &HTTPVersion, e: LineError, too_long: Refusal| match e {
            LineError::TooLong => ReadError::Refused(version.clone(), too_long),
            LineError::Io(e) if is_timeout(&e) => ReadError::Refused(
                version.clone(),
                Refusal::new(
                    408,
                    "request-timeout",
                    "Request timeout",
                    format!(
                        "the request head did not arrive within {} s",
                        limits.head_timeout.map_or(0, |t| t.as_secs())
                    ),
                ),
            ),
            LineError::Io(e) => ReadError::ReadIoError(e),
        };
        let bad_request =
            |detail: &str| Refusal::new(400, "bad-request", "Bad request", detail.to_string());

        // the request line
        let line = read_line(reader, limits.max_request_line, &timer).map_err(|e| {
            head_error(
                &v11,
                e,
                Refusal::new(
                    414,
                    "uri-too-long",
                    "URI too long",
                    format!(
                        "the request line is longer than the {} bytes allowed",
                        limits.max_request_line
                    ),
                ),
            )
        })?;
        let (method, path, version) = AsciiString::from_ascii(line)
            .ok()
            .and_then(|line| parse_request_line(line.as_str().trim()))
            .ok_or_else(|| {
                ReadError::Refused(
                    v11.clone(),
                    bad_request("the request line is not METHOD TARGET HTTP/VERSION"),
                )
            })?;

        // the headers
        let too_large = |detail: String| {
            Refusal::new(
                431,
                "header-fields-too-large",
                "Request header fields too large",
                detail,
            )
        };
        let mut headers = Vec::new();
        let mut header_bytes = 0usize;
        loop {
            let budget = limits.max_header_bytes.saturating_sub(header_bytes);
            let line = read_line(reader, budget, &timer).map_err(|e| {
                head_error(
                    &version,
                    e,
                    too_large(format!(
                        "the header fields are larger than the {} bytes allowed",
                        limits.max_header_bytes
                    )),
                )
            })?;
            header_bytes += line.len() + 2;
            if line.is_empty() {
                break;
            }
            if headers.len() >= limits.max_headers {
                return Err(ReadError::Refused(
                    version,
                    too_large(format!(
                        "a request may have at most {} header fields",
                        limits.max_headers
                    )),
                ));
            }
            let header = AsciiString::from_ascii(line)
                .ok()
                .and_then(|line| Header::from_str(line.as_str().trim()).ok())
                .ok_or_else(|| {
                    ReadError::Refused(
                        version.clone(),
                        bad_request("a header line is not NAME: VALUE in ASCII"),
                    )
                })?;
            headers.push(header);
        }

        let (framing, expects_continue) =
            framing(&headers).map_err(|r| ReadError::Refused(version.clone(), r))?;
        if let Framing::Length(len) = framing {
            if len > limits.max_body_bytes {
                return Err(ReadError::Refused(
                    version,
                    Refusal::new(
                        413,
                        "too-large",
                        "Payload too large",
                        format!(
                            "the body of {} bytes is larger than the {} bytes allowed",
                            len, limits.max_body_bytes
                        ),
                    ),
                ));
            }
        }

        // A response with `Connection: close` ends the connection: a request
        // sent before it was complete (pipelined) is not served.
        self.sink.wait_for_last();
        if self.close_after.load(Ordering::SeqCst) {
            return Err(ReadError::Idle);
        }

        // building the writer for the request
        let mut writer = self.sink.next().unwrap();
        let remote_addr = *self.remote_addr.as_ref().unwrap();

        if let Framing::Upgrade = framing {
            // as upstream: the application gets the raw stream, and the
            // next request waits until it gives it back
            let mut data_source = self.source.next().unwrap();
            std::mem::swap(&mut self.next_header_source, &mut data_source);
            return crate::request::new_request(
                self.secure,
                method,
                path,
                version.clone(),
                headers,
                remote_addr,
                data_source,
                writer,
            )
            .map_err(|e| match e {
                crate::request::RequestCreationError::CreationIoError(e) => {
                    ReadError::ReadIoError(e)
                }
                crate::request::RequestCreationError::ExpectationFailed => {
                    ReadError::Refused(version, expectation_failed())
                }
            });
        }

        let mut body = Vec::new();
        if !matches!(framing, Framing::Empty) {
            if expects_continue {
                write!(
                    writer,
                    "HTTP/{}.{} 100 Continue\r\n\r\n",
                    version.0, version.1
                )
                .and_then(|_| writer.flush())
                .map_err(ReadError::ReadIoError)?;
            }
            let timer = Timer::new(limits.body_timeout, limits.body_deadline);
            let read = match framing {
                Framing::Length(len) => {
                    read_exact_into(reader, len, &timer, &mut body).map_err(LineError::Io)
                }
                _ => read_chunked(reader, &limits, &timer, &mut body, header_bytes),
            };
            read.map_err(|e| match e {
                LineError::TooLong => ReadError::Refused(
                    version.clone(),
                    Refusal::new(
                        413,
                        "too-large",
                        "Payload too large",
                        format!(
                            "the body is larger than the {} bytes allowed, or malformed",
                            limits.max_body_bytes
                        ),
                    ),
                ),
                LineError::Io(e) if is_timeout(&e) => ReadError::Refused(
                    version.clone(),
                    Refusal::new(
                        408,
                        "request-timeout",
                        "Request timeout",
                        format!(
                            "the body did not arrive in time ({} s without data, or {} s in all)",
                            limits.body_timeout.map_or(0, |t| t.as_secs()),
                            limits.body_deadline.map_or(0, |t| t.as_secs())
                        ),
                    ),
                ),
                LineError::Io(e) if e.kind() == ErrorKind::InvalidData => ReadError::Refused(
                    version.clone(),
                    bad_request("the chunked body is malformed"),
                ),
                LineError::Io(e) => ReadError::ReadIoError(e),
            })?;
        }

        let body_length = match framing {
            Framing::Length(len) => Some(len as usize),
            _ => None,
        };
        Ok(crate::request::new_request_with_body(
            method,
            path,
            version,
            headers,
            remote_addr,
            body,
            body_length,
            writer,
            Arc::clone(&self.close_after),
        ))
    }

    /// Patched: after a refusal, stop sending and read (and drop) what the
    /// client still sends for a short while, so that the close does not reset
    /// the connection before the client has read the answer.
    fn linger(&mut self) {
        let reader = self.next_header_source.get_mut();
        let _ = reader.get_mut().shutdown_write();
        let buffered = reader.buffer().len();
        reader.consume(buffered);
        let timer = Timer::new(Some(LINGER_READ), Some(LINGER_TIME));
        let mut scratch = [0u8; 8192];
        loop {
            let stream = reader.get_mut();
            if timer.arm(stream).is_err() {
                return;
            }
            match stream.read(&mut scratch) {
                Ok(0) | Err(_) => return,
                Ok(_) => (),
            }
        }
    }
}

/// `100 Continue` is the only expectation served.
fn expectation_failed() -> Refusal {
    Refusal::new(
        417,
        "expectation-failed",
        "Expectation failed",
        "the only Expect value served is 100-continue".to_string(),
    )
}

/// The body's framing from the headers (upstream's rules: `Connection:
/// upgrade` first, then any `Transfer-Encoding` is chunked, then
/// `Content-Length`), and whether the client awaits `100 Continue`.
/// Patched: a `Content-Length` that is not a number is refused (upstream
/// took it for no body and read the body as the next request).
fn framing(headers: &[Header]) -> Result<(Framing, bool), Refusal> {
    let find = |name: &'static str| {
        headers
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str())
    };
    let expects_continue = match find("Expect") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("100-continue") => true,
        Some(_) => return Err(expectation_failed()),
    };
    let framing = if find("Connection").is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"))
    {
        Framing::Upgrade
    } else if find("Transfer-Encoding").is_some() {
        Framing::Chunked
    } else if let Some(len) = find("Content-Length") {
        match len.trim().parse::<u64>() {
            Ok(0) => Framing::Empty,
            Ok(len) => Framing::Length(len),
            Err(_) => {
                return Err(Refusal::new(
                    400,
                    "bad-request",
                    "Bad request",
                    "Content-Length is not a number of bytes".to_string(),
                ))
            }
        }
    } else {
        Framing::Empty
    };
    Ok((framing, expects_continue))
}

/// Decodes a chunked body into `body`, at most `limits.max_body_bytes` of
/// it; trailer fields count against the head's limits. `TooLong` when it is
/// too large; `InvalidData` when malformed.
fn read_chunked(
    reader: &mut BufReader<RefinedTcpStream>,
    limits: &Limits,
    timer: &Timer,
    body: &mut Vec<u8>,
    mut header_bytes: usize,
) -> Result<(), LineError> {
    let malformed = || LineError::Io(IoError::new(ErrorKind::InvalidData, "malformed chunk"));
    let mut trailers = 0usize;
    loop {
        let line = read_line(reader, MAX_CHUNK_LINE, timer).map_err(|e| match e {
            LineError::TooLong => malformed(),
            other => other,
        })?;
        let size = std::str::from_utf8(&line)
            .ok()
            .and_then(|l| l.split(';').next())
            .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
            .ok_or_else(malformed)?;
        if size == 0 {
            // trailer fields, then the empty line
            loop {
                let budget = limits.max_header_bytes.saturating_sub(header_bytes);
                let line = read_line(reader, budget, timer)?;
                header_bytes += line.len() + 2;
                if line.is_empty() {
                    return Ok(());
                }
                trailers += 1;
                if trailers > limits.max_headers {
                    return Err(LineError::TooLong);
                }
            }
        }
        if (body.len() as u64).saturating_add(size) > limits.max_body_bytes {
            return Err(LineError::TooLong);
        }
        read_exact_into(reader, size, timer, body)?;
        match read_line(reader, 0, timer) {
            Ok(_) => (),
            Err(LineError::TooLong) => return Err(malformed()),
            Err(e) => return Err(e),
        }
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        use crate::{Response, StatusCode};

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        loop {
            let rq = match self.read() {
                Err(ReadError::Refused(version, refusal)) => {
                    log::debug!("refused a request: {} {}", refusal.status, refusal.detail);
                    let mut writer = self.sink.next().unwrap();
                    refusal.write(&mut writer, &version).ok();
                    drop(writer);
                    self.linger();
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                Err(ReadError::Idle) => return None,
                Err(ReadError::ReadIoError(e)) => {
                    log::debug!("a connection ended: {}", e);
                    return None;
                }

                Ok(rq) => rq,
            };

            // checking HTTP version
            if *rq.http_version() > (1, 1) {
                let writer = self.sink.next().unwrap();
                let response = Response::from_string(
                    "This server only supports HTTP versions 1.0 and 1.1".to_owned(),
                )
                .with_status_code(StatusCode(505));
                response
                    .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                    .ok();
                continue;
            }

            // updating the status of the connection
            let connection_header = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Connection"))
                .map(|h| h.value.as_str());

            let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

            match lowercase {
                Some(ref val) if val.contains("close") => self.no_more_requests = true,
                Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
                Some(ref val)
                    if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
                {
                    self.no_more_requests = true
                }
                None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
    }
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Option<HTTPVersion> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return None,
    };

    Some(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Option<(Method, String, HTTPVersion)> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(parse_http_version);

    method.and_then(|method| Some((method, path?, version?)))
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_none());
        assert!(super::parse_request_line("qsd qsd qsd").is_none());
    }
}
