//! Patched (not in tiny_http 0.12.0): HTTPS on rustls 0.23, driven by hand.
//!
//! Upstream's `ssl-rustls` feature pinned rustls 0.20 (RUSTSEC-2024-0336:
//! its `complete_io` loop, which upstream reached through `StreamOwned`,
//! spins forever on a close during the handshake) and shared one
//! `Mutex<StreamOwned>` between the read and write halves of a connection, so
//! a read blocked on the socket (waiting for the next request, for up to the
//! keep-alive timeout) held up the response being written on the same
//! connection. Here no lock is held across socket I/O, and nothing loops
//! without a bound:
//!
//! - the read half reads ciphertext from its own handle of the socket, then
//!   locks the rustls connection only to feed it (`read_tls`,
//!   `process_new_packets`) and take plaintext out; the handshake happens
//!   there, lazily, on the connection's own thread;
//! - every socket read waits at most what is left of the read timeout the
//!   caller set (`set_read_timeout`), counted from the start of the whole
//!   `read` call, so a client that sends a record a byte at a time, or stalls
//!   a handshake, runs into the same head and body timeouts as a plain one
//!   (the timeout reads as `WouldBlock`, as a plain socket's does);
//! - TLS records leave through one `send` lock that is taken before the
//!   connection's lock and held while they are written, so records reach the
//!   socket in the order rustls made them, whichever half made them;
//! - a client that speaks plain HTTP to this port gets a 400 problem in plain
//!   HTTP saying so, instead of a TLS alert it cannot read.

use std::convert::TryFrom;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection};

use crate::connection::Connection;

/// Ciphertext read from the socket at once: one full TLS record and its header.
const READ_CHUNK: usize = 16 * 1024 + 256;
/// `read_timeout` value for "no timeout".
const NO_TIMEOUT: u64 = u64::MAX;
/// How long plain HTTP refused on this port is read (and dropped) after the
/// answer, at most, and how long one read of it may wait.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_READ: Duration = Duration::from_millis(500);
/// The first byte of a TLS handshake record.
const HANDSHAKE_RECORD: u8 = 0x16;

/// What both halves of one connection share.
struct Shared {
    tls: Mutex<ServerConnection>,
    /// Held while records are taken out of `tls` and written to the socket
    /// (always locked before `tls`); the buffer they pass through.
    send: Mutex<Vec<u8>>,
}

/// One half (read or write) of a TLS connection.
pub(crate) struct TlsStream {
    socket: Connection,
    shared: Arc<Shared>,
    /// Ciphertext read but not yet taken by rustls: `inbuf[start..end]`.
    inbuf: Vec<u8>,
    start: usize,
    end: usize,
    /// Nanoseconds a whole `read` may wait ([`NO_TIMEOUT`]: no limit).
    read_timeout: AtomicU64,
    /// Nothing has been read from the socket yet.
    first: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a lock was held cannot leave rustls' state half written
    // in a way that matters more than the connection: go on with it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn invalid(error: impl std::fmt::Display) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, error.to_string())
}

/// Writes whatever rustls has queued for the peer, in its order.
fn send_pending(shared: &Shared, socket: &mut Connection) -> io::Result<()> {
    let mut out = lock(&shared.send);
    out.clear();
    {
        let mut tls = lock(&shared.tls);
        while tls.wants_write() {
            tls.write_tls(&mut *out)?;
        }
    }
    if !out.is_empty() {
        socket.write_all(&out)?;
    }
    Ok(())
}

impl TlsStream {
    /// A server side TLS connection over an accepted socket.
    pub(crate) fn new(socket: Connection, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
        let tls = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsStream {
            socket,
            shared: Arc::new(Shared {
                tls: Mutex::new(tls),
                send: Mutex::new(Vec::new()),
            }),
            inbuf: Vec::new(),
            start: 0,
            end: 0,
            read_timeout: AtomicU64::new(NO_TIMEOUT),
            first: true,
        })
    }

    /// The other half: its own handle of the socket, the same TLS state.
    pub(crate) fn try_clone(&self) -> io::Result<TlsStream> {
        Ok(TlsStream {
            socket: self.socket.try_clone()?,
            shared: Arc::clone(&self.shared),
            inbuf: Vec::new(),
            start: 0,
            end: 0,
            read_timeout: AtomicU64::new(self.read_timeout.load(Ordering::Relaxed)),
            first: self.first,
        })
    }

    pub(crate) fn peer_addr(&mut self) -> io::Result<Option<SocketAddr>> {
        self.socket.peer_addr()
    }

    /// How long a whole `read` may wait from now on.
    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let nanos = timeout.map_or(NO_TIMEOUT, |t| {
            u64::try_from(t.as_nanos()).unwrap_or(NO_TIMEOUT - 1)
        });
        self.read_timeout.store(nanos, Ordering::Relaxed);
        self.socket.set_read_timeout(timeout)
    }

    /// Ends a direction; the sending one with a `close_notify` first, once
    /// the handshake is done (a refused handshake already sent its alert).
    pub(crate) fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            let handshaking = {
                let mut tls = lock(&self.shared.tls);
                let handshaking = tls.is_handshaking();
                if !handshaking {
                    tls.send_close_notify();
                }
                handshaking
            };
            if !handshaking {
                let _ = send_pending(&self.shared, &mut self.socket);
            }
        }
        self.socket.shutdown(how)
    }

    /// Hands rustls the ciphertext already read, as far as it takes it, and
    /// processes it; then the plaintext it holds, if any.
    fn take_plaintext(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let mut tls = lock(&self.shared.tls);
        let mut stuck = None;
        while self.start < self.end {
            let mut rest = &self.inbuf[self.start..self.end];
            match tls.read_tls(&mut rest) {
                // a close_notify came: nothing after it is read
                Ok(0) => {
                    self.start = self.end;
                    break;
                }
                Ok(n) => self.start += n,
                // its plaintext buffer is full: that plaintext goes first
                // (any other refusal ends the connection below)
                Err(e) => {
                    stuck = Some(e);
                    break;
                }
            }
            if let Err(e) = tls.process_new_packets() {
                // the alert rustls queued goes out before the connection closes
                drop(tls);
                let _ = send_pending(&self.shared, &mut self.socket);
                return Err(invalid(e));
            }
        }
        let taken = match tls.reader().read(buf) {
            Ok(n) => Some(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => None,
            // TCP closed without close_notify: HTTP frames its own messages,
            // so this is an end like any other
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Some(0),
            Err(e) => return Err(e),
        };
        if let (None, Some(e)) = (taken, stuck) {
            return Err(invalid(e));
        }
        let wants_write = tls.wants_write();
        drop(tls);
        if wants_write {
            send_pending(&self.shared, &mut self.socket)?;
        }
        Ok(taken)
    }

    /// A client that sent plain HTTP is told so in plain HTTP (a problem
    /// in tabagent's shape, as the other early answers in `client.rs`).
    fn refuse_plain_http(&mut self) -> io::Error {
        let detail = "this port speaks HTTPS: use https://";
        let body = format!(
            "{{\"type\":\"urn:tabagent:problem:tls-required\",\"title\":\"TLS required\",\"status\":400,\"detail\":\"{detail}\",\"error\":{{\"message\":\"{detail}\",\"type\":\"invalid_request_error\",\"code\":\"tls-required\"}}}}"
        );
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/problem+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _order = lock(&self.shared.send);
        let _ = self.socket.write_all(answer.as_bytes());
        // A lingering close, as client.rs does after its early answers: what
        // the client still sends is read and dropped for a short while, so
        // that closing with it unread does not reset the connection before
        // the client has read the answer.
        let _ = self.socket.shutdown(Shutdown::Write);
        let until = Instant::now() + LINGER_TIME;
        let mut scratch = [0u8; 4096];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left < Duration::from_millis(1)
                || self
                    .socket
                    .set_read_timeout(Some(left.min(LINGER_READ)))
                    .is_err()
            {
                break;
            }
            match self.socket.read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(_) => (),
            }
        }
        invalid("plain HTTP on the TLS port")
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let timeout = self.read_timeout.load(Ordering::Relaxed);
        let deadline =
            (timeout != NO_TIMEOUT).then(|| Instant::now() + Duration::from_nanos(timeout));
        loop {
            if let Some(n) = self.take_plaintext(buf)? {
                return Ok(n);
            }
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left < Duration::from_millis(1) {
                    return Err(io::Error::new(ErrorKind::WouldBlock, "read timed out"));
                }
                self.socket.set_read_timeout(Some(left))?;
            }
            if self.inbuf.len() < READ_CHUNK {
                self.inbuf.resize(READ_CHUNK, 0);
            }
            let n = self.socket.read(&mut self.inbuf)?;
            if n == 0 {
                return Ok(0);
            }
            if self.first {
                self.first = false;
                if self.inbuf[0] != HANDSHAKE_RECORD && self.inbuf[0].is_ascii_uppercase() {
                    return Err(self.refuse_plain_http());
                }
            }
            self.start = 0;
            self.end = n;
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = lock(&self.shared.tls).writer().write(buf)?;
        send_pending(&self.shared, &mut self.socket)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        send_pending(&self.shared, &mut self.socket)
    }
}
