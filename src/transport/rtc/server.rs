//! [`RtcServer`]: the sessions, the UDP sockets, and the entry points the
//! event loop calls (`handle_*`, `poll_timeout`). Everything here runs on the
//! loop thread; other threads reach it with [`RtcMessage`]s.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::{Registry, Token};
use str0m::channel::ChannelId;
use str0m::config::DtlsCert;
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::{Event, Input};

use super::super::serve::{self, Origin};
use super::RtcSettings;
use super::framing::{self, Incoming};
use super::net::{self, Sockets};
use super::session::{Link, Session, SessionId};
use super::sink::{self, RtcSink};
use crate::api::{Reply, RequestId, Response, RtcCommand};
use crate::error::ApiError;
use crate::handler::{Handler, LoopPort};
use crate::jobs::{ReplySink, panic_message};
use crate::mailbox::Mailbox;
use crate::outbox::OutboxLimits;
use crate::stats::Transport;

/// Largest UDP datagram read.
const DATAGRAM: usize = 2048;
/// SCTP's send buffer per session. Bigger is slower: sctp-proto's work per
/// acknowledgement grows with the data queued (measured on loopback: 128 KiB
/// gives 5x the throughput of 1 MiB). Our own queue in front of it is cheap.
pub(super) const SCTP_BUFFER: usize = 256 * 1024;
/// The largest message we write: a frame must fit SCTP's buffer with room.
pub(super) const MAX_FRAME: usize = SCTP_BUFFER / 2;
/// A session the peer never reached is dropped after this (or the idle
/// timeout, if shorter), so abandoned offers do not hold session slots.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What other threads send the WebRTC side of the loop.
pub enum RtcMessage {
    /// A signaling request; the reply goes to `sink`.
    Command {
        /// The request's id.
        id: RequestId,
        /// What to do.
        command: RtcCommand,
        /// Where the reply goes.
        sink: Arc<dyn ReplySink>,
        /// The request's tag, for the lines the loop logs for it.
        tag: Option<crate::logging::RequestTag>,
    },
    /// A stream of this session has frames to send.
    Ready(SessionId),
}

/// The WebRTC sessions and their sockets.
pub struct RtcServer {
    pub(super) settings: RtcSettings,
    pub(super) sockets: Sockets,
    pub(super) sessions: HashMap<SessionId, Session>,
    /// The session that last accepted a source address (a demux shortcut).
    by_source: HashMap<SocketAddr, SessionId>,
    pub(super) handler: Arc<Handler>,
    pub(super) mailbox: Mailbox<RtcMessage>,
    /// The bounds of every request stream's outbox.
    limits: OutboxLimits,
    /// One DTLS certificate for every session (making one per session costs
    /// a key generation on the loop).
    pub(super) cert: DtlsCert,
    /// Wall-clock time at `clock.0`, for the Unix times clients see.
    clock: (Instant, SystemTime),
    buffer: Vec<u8>,
}

impl RtcServer {
    /// Binds the sockets (from token `first_token` on) and connects the
    /// handler's signaling requests to this loop.
    pub fn start(
        settings: RtcSettings,
        handler: Arc<Handler>,
        mailbox: Mailbox<RtcMessage>,
        limits: OutboxLimits,
        registry: &Registry,
        first_token: Token,
    ) -> io::Result<RtcServer> {
        str0m::crypto::from_feature_flags().install_process_default();
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| io::Error::other("cannot make a DTLS certificate"))?;
        let hosts = net::host_addresses(&settings.hosts);
        let sockets = Sockets::bind(&hosts, settings.ports, registry, first_token)?;
        log::info!("WebRTC on UDP {:?}", sockets.addresses());
        handler.attach_loop(Arc::new(Port(mailbox.clone())));
        Ok(RtcServer {
            settings,
            sockets,
            sessions: HashMap::new(),
            by_source: HashMap::new(),
            handler,
            mailbox,
            limits,
            cert,
            clock: (Instant::now(), SystemTime::now()),
            buffer: vec![0; DATAGRAM],
        })
    }

    /// The bound UDP addresses.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.sockets.addresses()
    }

    /// Reads every datagram waiting on the socket of `token` (if it is ours).
    pub fn handle_readable(&mut self, token: Token, now: Instant) {
        let Some(index) = self.sockets.index(token) else {
            return;
        };
        loop {
            let (n, source, destination) = match self.sockets.recv(index, &mut self.buffer) {
                Ok(datagram) => datagram,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors (a peer's port closed) surface here; not fatal.
                    log::debug!("UDP receive failed: {e}");
                    continue;
                }
            };
            // A bug in one peer's input must not take the loop down.
            let handled = catch_unwind(AssertUnwindSafe(|| {
                self.handle_datagram(n, source, destination, now)
            }));
            if let Err(panic) = handled {
                log::error!(
                    "a datagram from {source} panicked: {}",
                    panic_message(&panic)
                );
            }
        }
    }

    fn handle_datagram(
        &mut self,
        n: usize,
        source: SocketAddr,
        destination: SocketAddr,
        now: Instant,
    ) {
        let Ok(contents) = DatagramRecv::try_from(&self.buffer[..n]) else {
            log::debug!("ignored {n} bytes from {source}: not STUN, DTLS, RTP or RTCP");
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        let cached = self.by_source.get(&source).filter(|id| {
            self.sessions
                .get(*id)
                .is_some_and(|s| s.rtc.accepts(&input))
        });
        let id = match cached {
            Some(id) => id.clone(),
            None => match self.sessions.values().find(|s| s.rtc.accepts(&input)) {
                Some(session) => {
                    self.by_source.insert(source, session.id.clone());
                    session.id.clone()
                }
                None => {
                    log::debug!("no session accepts {n} bytes from {source}");
                    return;
                }
            },
        };
        // The session was found just above.
        let session = self.sessions.get_mut(&id).expect("session exists");
        session.last_activity = now;
        if let Err(e) = session.rtc.handle_input(input) {
            log::debug!("session {id}: input rejected: {e}");
        }
        self.drive(&id, now);
    }

    /// Serves a message from another thread.
    pub fn handle_message(&mut self, message: RtcMessage, now: Instant) {
        match message {
            RtcMessage::Command {
                id,
                command,
                sink,
                tag,
            } => crate::logging::RequestTag::scope(tag, || {
                let ran = catch_unwind(AssertUnwindSafe(|| self.run_command(command, now)));
                let response = match ran {
                    Ok(result) => result.unwrap_or_else(Response::error),
                    Err(panic) => {
                        let what = panic_message(&panic);
                        log::error!("a signaling request panicked: {what}");
                        Response::error(ApiError::internal(format!("the request failed: {what}")))
                    }
                };
                sink.deliver(Reply::new(id, response));
            }),
            // A session closed meanwhile has closed its streams already.
            RtcMessage::Ready(session) => {
                if self.sessions.contains_key(&session) {
                    self.drive(&session, now);
                }
            }
        }
    }

    /// Advances every session whose timer is due; closes idle and dead ones.
    pub fn handle_timeout(&mut self, now: Instant) {
        for session in self.sessions.values_mut() {
            session.check_stalls(now);
        }
        let due: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|s| s.next_timeout <= now)
            .map(|s| s.id.clone())
            .collect();
        for id in due {
            if let Some(session) = self.sessions.get_mut(&id) {
                if let Err(e) = session.rtc.handle_input(Input::Timeout(now)) {
                    log::debug!("session {id}: timeout rejected: {e}");
                }
                self.drive(&id, now);
            }
        }
        let ended: Vec<(SessionId, &'static str)> = self
            .sessions
            .values()
            .filter_map(|s| {
                if !s.rtc.is_alive() {
                    Some((s.id.clone(), "the connection ended"))
                } else if now >= self.expiry(s) {
                    Some((s.id.clone(), "idle timeout"))
                } else {
                    None
                }
            })
            .collect();
        for (id, reason) in ended {
            self.close(&id, reason);
        }
        // Every wake-up of the loop ends here: the gauge follows each change.
        self.handler.stats().set_rtc_sessions(self.sessions.len());
    }

    /// The earliest instant any session needs the loop: a str0m timer, an
    /// idle deadline or a stream's stall bound.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .map(|s| {
                let stall = s
                    .streams
                    .iter()
                    .filter_map(|t| t.outbox.stall_deadline())
                    .min();
                let next = s.next_timeout.min(self.expiry(s));
                stall.map_or(next, |stall| stall.min(next))
            })
            .min()
    }

    /// When a session is closed for want of traffic.
    fn expiry(&self, session: &Session) -> Instant {
        let idle = session.last_activity + self.settings.idle_timeout;
        if session.link == Link::New {
            idle.min(session.created + CONNECT_TIMEOUT)
        } else {
            idle
        }
    }

    /// Removes a session; its running jobs see their client gone.
    pub(super) fn close(&mut self, id: &SessionId, reason: &str) -> bool {
        let Some(mut session) = self.sessions.remove(id) else {
            return false;
        };
        log::info!("WebRTC session {id} closed: {reason}");
        session.close_streams();
        session.rtc.disconnect();
        self.by_source.retain(|_, owner| owner != id);
        true
    }

    /// Mutate, then drain: writes queued frames, drains `poll_output`, serves
    /// the events it produced, and repeats until nothing new happens.
    pub(super) fn drive(&mut self, id: &SessionId, now: Instant) {
        let mut events = Vec::new();
        loop {
            let Some(session) = self.sessions.get_mut(id) else {
                return;
            };
            session.flush(now);
            if let Err(e) = session.poll(&self.sockets, &mut events) {
                log::warn!("session {id} failed: {e}");
                session.rtc.disconnect();
                return;
            }
            if events.is_empty() {
                return;
            }
            for event in events.drain(..) {
                self.handle_event(id, event, now);
            }
        }
    }

    fn handle_event(&mut self, id: &SessionId, event: Event, now: Instant) {
        let Some(session) = self.sessions.get_mut(id) else {
            return;
        };
        match event {
            Event::ChannelOpen(channel, label) => {
                log::debug!("session {id}: channel {label:?} open");
                session.direct.entry(channel).or_default();
            }
            Event::ChannelClose(channel) => session.close_channel(channel),
            Event::ChannelData(data) => {
                session.counters.messages_in += 1;
                session.counters.bytes_in += data.data.len() as u64;
                self.serve_message(id, data.id, &data.data, now);
            }
            _ => {}
        }
    }

    /// One data channel message: a request (or a Partial frame of one).
    fn serve_message(&mut self, id: &SessionId, channel: ChannelId, message: &[u8], now: Instant) {
        let max = self.settings.max_message_bytes;
        // The caller found the session.
        let session = self.sessions.get_mut(id).expect("session exists");
        let origin = Origin {
            transport: Transport::Rtc,
            connection: session.connection,
            client: crate::ratelimit::Client::Session(session.connection),
            route: None,
        };
        let message: Cow<[u8]> = match session.joiner.push(message, max) {
            Incoming::Plain => Cow::Borrowed(message),
            Incoming::Whole(bytes) => Cow::Owned(bytes),
            Incoming::Pending => return,
            Incoming::Failed(request, error) => {
                let parsed = Err((request, error));
                if let Some(reply) = serve::serve(&self.handler, origin, parsed, now, |_| {
                    unreachable!("a refused message has no stream")
                }) {
                    self.reply(id, channel, reply);
                }
                return;
            }
        };
        let (limits, frame_limit) = (self.limits, session.frame_limit);
        let mut opened = None;
        let inline = serve::serve_message(&self.handler, origin, &message, now, |request| {
            let stream = sink::stream(
                id.clone(),
                channel,
                request.clone(),
                limits,
                self.mailbox.clone(),
            );
            let outbox = Arc::clone(&stream.outbox);
            opened = Some(stream);
            Arc::new(RtcSink {
                outbox,
                frame_limit,
            })
        });
        if let Some(session) = self.sessions.get_mut(id) {
            session.streams.extend(opened);
        }
        if let Some(reply) = inline {
            self.reply(id, channel, reply);
        }
    }

    /// Queues a reply made on the loop thread.
    fn reply(&mut self, id: &SessionId, channel: ChannelId, reply: Reply) {
        let Some(session) = self.sessions.get_mut(id) else {
            return;
        };
        let frames = framing::encode(&reply, session.frame_limit);
        // Replies made here are final and small, but a peer could send
        // requests forever without reading one.
        if !session.enqueue(channel, frames, self.limits.max_bytes) {
            self.close(id, "the peer reads too slowly");
        }
    }

    /// Unix milliseconds of an instant.
    pub(super) fn unix_ms(&self, at: Instant) -> i64 {
        let (base, wall) = self.clock;
        let wall = if at >= base {
            wall + (at - base)
        } else {
            wall - (base - at)
        };
        wall.duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// Closes every session (shutdown).
    pub fn shutdown(&mut self) {
        let ids: Vec<SessionId> = self.sessions.keys().cloned().collect();
        for id in ids {
            self.close(&id, "shutdown");
        }
    }
}

/// The handler's way into the loop.
struct Port(Mailbox<RtcMessage>);

impl LoopPort for Port {
    fn submit(
        &self,
        id: RequestId,
        command: RtcCommand,
        sink: Arc<dyn ReplySink>,
    ) -> Result<(), ApiError> {
        let tag = crate::logging::RequestTag::current();
        if self.0.send(RtcMessage::Command {
            id,
            command,
            sink,
            tag,
        }) {
            Ok(())
        } else {
            Err(ApiError::busy("the server is shutting down", 1))
        }
    }
}
