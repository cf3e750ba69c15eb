//! A WebRTC client for tests and benches: a second str0m peer (full ICE,
//! controlling) on its own loopback UDP socket, signaling over HTTP, that
//! sends request envelopes on one data channel and joins `Partial` frames.

#![allow(dead_code)] // the tests and the bench use different parts

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// Installs the crypto provider once per process.
pub fn init_crypto() {
    str0m::crypto::from_feature_flags().install_process_default();
}

/// One client peer.
pub struct Client {
    pub rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    blocking: bool,
    /// The socket's read timeout as last set (a syscall per change).
    read_timeout: Duration,
    pub channel: Option<ChannelId>,
    pending: Option<SdpPendingOffer>,
    /// Whole replies received, in order.
    pub inbox: VecDeque<Value>,
    partial: HashMap<String, String>,
    next_timeout: Instant,
    pub session_id: String,
    pub frames_received: u64,
    /// The SCTP send buffer, in bytes.
    sctp_buffer: usize,
    /// False after a write found SCTP's buffer full, until str0m reports the
    /// buffered amount low again (a browser waits for `bufferedamountlow`).
    writable: bool,
}

impl Client {
    /// A peer with a data channel in its offer; returns it and the offer SDP.
    pub fn offer() -> (Client, String) {
        // Large enough for the tests' 300 kB messages.
        Client::offer_with(1 << 20)
    }

    /// Same, with `sctp_buffer` bytes of SCTP send buffer (sctp-proto slows
    /// down as more data waits in it: the bench uses 128 KiB).
    pub fn offer_with(sctp_buffer: usize) -> (Client, String) {
        init_crypto();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20);
        let local = socket.local_addr().unwrap();
        let mut rtc = Rtc::builder()
            .set_sctp_max_buffered_amount(sctp_buffer)
            .set_sctp_max_message_size(256 * 1024)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut change = rtc.sdp_api();
        change.add_channel("tabagent".into());
        let (offer, pending) = change.apply().unwrap();
        let client = Client {
            rtc,
            socket,
            local,
            blocking: true,
            read_timeout: Duration::ZERO,
            channel: None,
            pending: Some(pending),
            inbox: VecDeque::new(),
            partial: HashMap::new(),
            next_timeout: Instant::now(),
            session_id: String::new(),
            frames_received: 0,
            sctp_buffer,
            writable: true,
        };
        (client, offer.to_sdp_string())
    }

    /// A client around a peer that already has its remote description.
    pub fn adopt(rtc: Rtc, socket: UdpSocket, session_id: &str) -> Client {
        let local = socket.local_addr().unwrap();
        Client {
            rtc,
            socket,
            local,
            blocking: true,
            read_timeout: Duration::ZERO,
            channel: None,
            pending: None,
            inbox: VecDeque::new(),
            partial: HashMap::new(),
            next_timeout: Instant::now(),
            session_id: session_id.to_string(),
            frames_received: 0,
            // str0m's default (RtcConfig::sctp_max_buffered_amount).
            sctp_buffer: 128 * 1024,
            writable: true,
        }
    }

    /// Applies the server's answer.
    pub fn accept(&mut self, session_id: &str, answer_sdp: &str) {
        let answer = SdpAnswer::from_sdp_string(answer_sdp).unwrap();
        let pending = self.pending.take().expect("an offer is pending");
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
        self.session_id = session_id.to_string();
    }

    /// Offers through `POST /v1/webrtc/offer` on `http`; returns the signal reply.
    pub fn signal(http: SocketAddr) -> (Client, Value) {
        Client::signal_with(http, 1 << 20)
    }

    /// Same, with an SCTP send buffer of `sctp_buffer` bytes.
    pub fn signal_with(http: SocketAddr, sctp_buffer: usize) -> (Client, Value) {
        let (mut client, sdp) = Client::offer_with(sctp_buffer);
        let reply = post(
            http,
            "/v1/webrtc/offer",
            &json!({"sdp": sdp, "peer_id": "test"}),
        );
        assert_eq!(reply["type"], "answer", "{reply}");
        client.accept(
            reply["session_id"].as_str().unwrap(),
            reply["sdp"].as_str().unwrap(),
        );
        (client, reply)
    }

    /// Offers and waits for the data channel to open.
    pub fn connect(http: SocketAddr) -> Client {
        let (mut client, _) = Client::signal(http);
        client.wait_open(Duration::from_secs(10));
        client
    }

    /// Drives until the channel is open; panics after `timeout`.
    pub fn wait_open(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.channel.is_none() {
            assert!(Instant::now() < deadline, "the data channel did not open");
            self.drive(Duration::from_millis(20));
        }
    }

    /// One round: drain str0m's output, then wait at most `wait` for a
    /// datagram (zero: do not wait) and feed it, or a timeout, in.
    pub fn drive(&mut self, wait: Duration) {
        self.drain();
        let mut buf = [0u8; 2048];
        let now = Instant::now();
        let wait = wait.min(self.next_timeout.saturating_duration_since(now));
        let blocking = !wait.is_zero();
        if blocking != self.blocking {
            self.socket.set_nonblocking(!blocking).unwrap();
            self.blocking = blocking;
        }
        if blocking && wait != self.read_timeout {
            self.socket.set_read_timeout(Some(wait)).unwrap();
            self.read_timeout = wait;
        }
        match self.socket.recv_from(&mut buf) {
            Ok((n, source)) => {
                let Ok(contents) = buf[..n].try_into() else {
                    return;
                };
                let input = Input::Receive(
                    Instant::now(),
                    Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.local,
                        contents,
                    },
                );
                self.rtc.handle_input(input).unwrap();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                self.rtc
                    .handle_input(Input::Timeout(Instant::now()))
                    .unwrap();
            }
            Err(e) => panic!("client UDP: {e}"),
        }
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(at) => {
                    self.next_timeout = at;
                    return;
                }
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Event(event) => self.on_event(event),
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::ChannelOpen(id, _) => self.channel = Some(id),
            Event::ChannelBufferedAmountLow(_) => self.writable = true,
            Event::ChannelData(data) => {
                self.frames_received += 1;
                let value: Value =
                    serde_json::from_slice(&data.data).expect("the server sends JSON");
                if value["response_type"] == "Partial" {
                    let key = value["id"].to_string();
                    let text = self.partial.entry(key.clone()).or_default();
                    text.push_str(value["data"].as_str().unwrap());
                    if value["last"] == true {
                        let whole = self.partial.remove(&key).unwrap();
                        self.inbox.push_back(serde_json::from_str(&whole).unwrap());
                    }
                } else {
                    self.inbox.push_back(value);
                }
            }
            _ => {}
        }
    }

    /// Sends raw bytes on the channel, driving while SCTP's buffer is full.
    ///
    /// Like a browser page, it writes while the channel takes messages and,
    /// once one is refused, waits for the buffered-amount-low event instead of
    /// retrying: every write arms str0m's whole output pass, and sctp-proto's
    /// pass walks all unacknowledged chunks, so retrying after each datagram
    /// doubled the sender's work.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let channel = self.channel.expect("the channel is open");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.writable {
                let mut writer = self.rtc.channel(channel).unwrap();
                let accepted = writer.write(false, bytes).unwrap();
                if !accepted {
                    // The event fires when the buffered amount falls to this
                    // level, which is when the message fits (it is above it
                    // now, or the write would have been taken).
                    let low = self.sctp_buffer.saturating_sub(bytes.len());
                    writer.set_buffered_amount_low_threshold(low);
                    self.writable = false;
                }
                self.drain();
                if accepted {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the channel never took the message"
            );
            self.drive(Duration::from_millis(1));
        }
    }

    pub fn send(&mut self, message: &Value) {
        self.send_raw(message.to_string().as_bytes());
    }

    /// The next whole reply; panics after `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = self.inbox.pop_front() {
                return value;
            }
            assert!(Instant::now() < deadline, "no reply within {timeout:?}");
            self.drive(Duration::from_millis(5));
        }
    }

    /// Sends a request and collects replies until the final one for its id.
    pub fn request(&mut self, message: Value) -> Vec<Value> {
        let id = message["id"].clone();
        self.send(&message);
        let mut replies = Vec::new();
        loop {
            let reply = self.recv(Duration::from_secs(20));
            let done = reply["id"] == id && reply["done"] == true;
            replies.push(reply);
            if done {
                return replies;
            }
        }
    }

    /// Sends a message and returns the first reply (for requests that stream).
    pub fn recv_after_send(&mut self, message: Value) -> Value {
        self.send(&message);
        self.recv(Duration::from_secs(20))
    }

    /// The final reply of a request.
    pub fn call(&mut self, message: Value) -> Value {
        self.request(message).pop().unwrap()
    }
}

/// A POST with a JSON body; returns the JSON reply (any status).
pub fn post(addr: SocketAddr, path: &str, body: &Value) -> Value {
    http_json(addr, "POST", path, Some(body))
}

/// One HTTP request; the reply body as JSON.
pub fn http_json(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Value {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{}Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        crate::util::auth_line(),
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let status: u16 = String::from_utf8_lossy(&raw[..split])
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut value: Value = serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.entry("http_status").or_insert(json!(status));
    }
    value
}
