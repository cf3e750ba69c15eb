//! One WebRTC session: its str0m `Rtc`, where negotiation and the link
//! stand, its counters, the replies the loop made for each open data channel
//! and the outboxes of its requests' streams.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use str0m::change::SdpPendingOffer;
use str0m::channel::ChannelId;
use str0m::{Event, IceConnectionState, Output, Rtc, RtcError};

use super::framing::Joiner;
use super::net::Sockets;
use super::sink::Stream;
use crate::jobs::ConnectionId;
use crate::outbox::Offered;

/// A session's id: 128 random bits in hex, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(Arc<str>);

impl SessionId {
    /// A fresh, unguessable id.
    pub fn random() -> SessionId {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let half = || {
            // RandomState is seeded from the OS once per thread and stepped
            // on every call, so each hasher is keyed differently.
            let mut hasher = std::hash::RandomState::new().build_hasher();
            hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            hasher.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            hasher.finish()
        };
        SessionId(format!("{:016x}{:016x}", half(), half()).into())
    }

    /// The id a client gave.
    pub fn from_client(text: &str) -> SessionId {
        SessionId(text.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the connection to the peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Signaled; no check from the peer yet.
    New,
    /// ICE checks or the DTLS handshake under way.
    Connecting,
    /// DTLS is up; data channels can open.
    Connected,
    /// The peer stopped answering (it may come back until the idle timeout).
    Disconnected,
}

impl Link {
    /// Its name in GetWebRtcSession.
    pub fn name(self) -> &'static str {
        match self {
            Link::New => "new",
            Link::Connecting => "connecting",
            Link::Connected => "connected",
            Link::Disconnected => "disconnected",
        }
    }
}

/// Where SDP negotiation stands.
pub enum Negotiation {
    /// tabagent offered and waits for the answer.
    Offered(Box<SdpPendingOffer>),
    /// Offer and answer are both applied.
    Done,
}

/// Traffic on the session's data channels.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Messages received.
    pub messages_in: u64,
    /// Messages sent (frames count one each).
    pub messages_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
}

impl Counters {
    /// Counts one message handed to SCTP.
    fn sent(&mut self, bytes: usize) {
        self.messages_out += 1;
        self.bytes_out += bytes as u64;
    }
}

/// One peer.
pub struct Session {
    /// Its id.
    pub id: SessionId,
    /// The connection its requests' client ids are scoped to.
    pub connection: ConnectionId,
    /// The client's own name for it.
    pub peer_id: Option<String>,
    /// The str0m peer.
    pub rtc: Rtc,
    /// SDP state.
    pub negotiation: Negotiation,
    /// Connection state.
    pub link: Link,
    /// When it was created.
    pub created: Instant,
    /// When the peer last sent a packet (or signaling touched it).
    pub last_activity: Instant,
    /// Traffic so far.
    pub counters: Counters,
    /// Replies made on the loop thread, waiting for SCTP, per open channel.
    pub direct: HashMap<ChannelId, VecDeque<Vec<u8>>>,
    /// The streams of its running requests, written in turn.
    pub streams: Vec<Stream>,
    /// The largest message the peer takes (its SDP's max-message-size).
    pub frame_limit: usize,
    /// Incoming Partial frames being joined.
    pub joiner: Joiner,
    /// When str0m next wants `Input::Timeout`.
    pub next_timeout: Instant,
}

impl Session {
    /// A session around a configured `Rtc`.
    pub fn new(
        id: SessionId,
        peer_id: Option<String>,
        rtc: Rtc,
        negotiation: Negotiation,
        frame_limit: usize,
        now: Instant,
    ) -> Session {
        Session {
            id,
            connection: ConnectionId::next(),
            peer_id,
            rtc,
            negotiation,
            link: Link::New,
            created: now,
            last_activity: now,
            counters: Counters::default(),
            direct: HashMap::new(),
            streams: Vec::new(),
            frame_limit,
            joiner: Joiner::default(),
            next_timeout: now,
        }
    }

    /// Queues frames the loop made for a channel (dropped if it is not
    /// open); false when more than `limit` bytes would wait there: a peer
    /// that sends requests but reads no replies.
    pub fn enqueue(&mut self, channel: ChannelId, frames: Vec<Vec<u8>>, limit: usize) -> bool {
        let Some(queue) = self.direct.get_mut(&channel) else {
            return true;
        };
        queue.extend(frames);
        queue.iter().map(Vec::len).sum::<usize>() <= limit
    }

    /// Hands queued frames to SCTP while it takes them: the loop's own
    /// replies first, then each stream in turn.
    pub fn flush(&mut self, now: Instant) {
        let Session {
            rtc,
            direct,
            streams,
            counters,
            ..
        } = self;
        for (&channel, queue) in direct.iter_mut() {
            let Some(mut writer) = rtc.channel(channel) else {
                queue.clear();
                continue;
            };
            while let Some(frame) = queue.front() {
                match writer.write(false, frame) {
                    Ok(true) => {
                        counters.sent(frame.len());
                        queue.pop_front();
                    }
                    // SCTP's buffer is full: the rest waits for the peer's acks.
                    Ok(false) => break,
                    Err(e) => {
                        log::warn!("data channel write failed: {e}; its queue is dropped");
                        queue.clear();
                    }
                }
            }
        }
        streams.retain(|stream| {
            let Some(mut writer) = rtc.channel(stream.channel) else {
                stream.outbox.close();
                return false;
            };
            loop {
                let mut failed = false;
                let offered =
                    stream
                        .outbox
                        .offer_front(now, |frame| match writer.write(false, frame) {
                            Ok(true) => {
                                counters.sent(frame.len());
                                true
                            }
                            Ok(false) => false,
                            Err(e) => {
                                log::warn!("data channel write failed: {e}; the stream ends");
                                failed = true;
                                false
                            }
                        });
                if failed {
                    stream.outbox.close();
                    return false;
                }
                match offered {
                    Offered::Taken(false) => continue,
                    Offered::Taken(true) => return false,
                    Offered::Empty | Offered::Refused => return !stream.outbox.is_done(),
                }
            }
        });
    }

    /// Ends streams whose reader stalled; returns the earliest time one may.
    pub fn check_stalls(&mut self, now: Instant) -> Option<Instant> {
        self.streams
            .retain(|stream| !stream.outbox.check_stall(now));
        self.streams
            .iter()
            .filter_map(|stream| stream.outbox.stall_deadline())
            .min()
    }

    /// The session is gone: its running requests see their client gone.
    pub fn close_streams(&mut self) {
        for stream in self.streams.drain(..) {
            stream.outbox.close();
        }
    }

    /// A channel closed: its queue and streams go.
    pub fn close_channel(&mut self, channel: ChannelId) {
        self.direct.remove(&channel);
        self.streams.retain(|stream| {
            let keep = stream.channel != channel;
            if !keep {
                stream.outbox.close();
            }
            keep
        });
    }

    /// Drains `poll_output` to its timeout: transmits go out on `sockets`,
    /// events are collected for the server.
    pub fn poll(&mut self, sockets: &Sockets, events: &mut Vec<Event>) -> Result<(), RtcError> {
        loop {
            if !self.rtc.is_alive() {
                return Ok(());
            }
            match self.rtc.poll_output()? {
                Output::Timeout(at) => {
                    self.next_timeout = at;
                    return Ok(());
                }
                Output::Transmit(transmit) => sockets.send(&transmit),
                Output::Event(event) => {
                    self.note(&event);
                    events.push(event);
                }
            }
        }
    }

    /// Updates the link state from an event.
    fn note(&mut self, event: &Event) {
        match event {
            Event::IceConnectionStateChange(state) => {
                self.link = match state {
                    IceConnectionState::New => Link::New,
                    IceConnectionState::Checking => Link::Connecting,
                    IceConnectionState::Connected | IceConnectionState::Completed => {
                        if self.rtc.is_connected() {
                            Link::Connected
                        } else {
                            Link::Connecting
                        }
                    }
                    IceConnectionState::Disconnected => Link::Disconnected,
                };
            }
            Event::Connected => self.link = Link::Connected,
            _ => {}
        }
    }
}
