//! WebRTC left out of the build: the types the event loop names exist, but
//! none can be made, and starting answers "not enabled in this build".

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::{Registry, Token};

use super::RtcSettings;
use crate::handler::Handler;
use crate::mailbox::Mailbox;
use crate::outbox::OutboxLimits;

/// Never made in this build.
pub enum RtcMessage {}

/// Never made in this build.
pub enum RtcServer {}

impl RtcServer {
    /// Always errs: the `webrtc` feature is off.
    pub fn start(
        _settings: RtcSettings,
        _handler: Arc<Handler>,
        _mailbox: Mailbox<RtcMessage>,
        _limits: OutboxLimits,
        _registry: &Registry,
        _first_token: Token,
    ) -> io::Result<RtcServer> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "WebRTC is not enabled in this build (the `webrtc` feature)",
        ))
    }

    /// Unreachable: no value exists.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        match *self {}
    }

    /// Unreachable: no value exists.
    pub fn handle_readable(&mut self, _token: Token, _now: Instant) {
        match *self {}
    }

    /// Unreachable: no value exists.
    pub fn handle_message(&mut self, message: RtcMessage, _now: Instant) {
        match message {}
    }

    /// Unreachable: no value exists.
    pub fn handle_timeout(&mut self, _now: Instant) {
        match *self {}
    }

    /// Unreachable: no value exists.
    pub fn shutdown(&mut self) {
        match *self {}
    }

    /// Unreachable: no value exists.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match *self {}
    }
}
