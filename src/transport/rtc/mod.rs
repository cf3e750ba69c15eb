//! The WebRTC transport: a sans-IO str0m peer per session, driven by the
//! event loop, with data channels carrying the native messaging protocol.
//!
//! The loop owns the UDP sockets (one per host address, 127.0.0.1 always
//! among them) and hands every datagram to [`RtcServer`], which finds the
//! session whose `Rtc` accepts it, feeds it in and drains `poll_output`:
//! transmits go out on the socket they name, events are served, and the
//! earliest `Output::Timeout` over all sessions is the loop's poll deadline.
//! tabagent is ICE-lite: it answers the browser's checks and never probes.
//!
//! Signaling arrives as [`crate::api::RtcCommand`]s from any transport (HTTP
//! workers, native messaging, `/v1/rpc`, a data channel) through the loop's
//! channel, because the peers live on the loop thread.
//!
//! On a data channel every message is one request envelope, exactly as over
//! native messaging; replies and stream chunks go back on the channel the
//! request came from. A reply larger than the peer's maximum message size is
//! sent as `Partial` frames (see [`framing`]); a client may send a large
//! request the same way. Each request's replies wait in a bounded outbox of
//! their own, written to SCTP by the loop as the peer takes them; a peer that
//! stops reading ends its own streams and nobody else waits.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::{Config, PortRange};

/// What the WebRTC transport needs from the config.
#[derive(Debug, Clone)]
pub struct RtcSettings {
    /// UDP port or range, tried for each host address.
    pub ports: PortRange,
    /// Addresses that get host candidates besides 127.0.0.1; empty: the
    /// address of the default route, if any.
    pub hosts: Vec<IpAddr>,
    /// Public addresses announced as server-reflexive candidates.
    pub advertise: Vec<IpAddr>,
    /// STUN/TURN URLs for clients.
    pub ice_servers: Vec<String>,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// Time without a packet from the peer after which a session is closed.
    pub idle_timeout: Duration,
    /// Largest request on a data channel.
    pub max_message_bytes: usize,
}

impl RtcSettings {
    /// The settings of `config`; errs on an address that is not an IP.
    pub fn from_config(config: &Config) -> Result<RtcSettings, String> {
        let ips = |name: &str, list: &[String]| {
            list.iter()
                .map(|text| {
                    text.parse::<IpAddr>()
                        .map_err(|_| format!("{name}: {text:?} is not an IP address"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(RtcSettings {
            ports: config.webrtc_port,
            hosts: ips("webrtc_hosts", &config.webrtc_hosts.0)?,
            advertise: ips("webrtc_advertise", &config.webrtc_advertise.0)?,
            ice_servers: config.ice_servers.0.clone(),
            max_sessions: config.webrtc_max_sessions,
            idle_timeout: Duration::from_secs(config.webrtc_idle_timeout.0),
            max_message_bytes: config.webrtc_max_message_bytes,
        })
    }

    /// Loopback only, any port, the defaults otherwise (tests and benches).
    pub fn loopback() -> RtcSettings {
        RtcSettings {
            ports: PortRange { first: 0, last: 0 },
            hosts: vec![IpAddr::from([127, 0, 0, 1])],
            advertise: Vec::new(),
            ice_servers: Vec::new(),
            max_sessions: 100,
            idle_timeout: Duration::from_secs(300),
            max_message_bytes: 1 << 20,
        }
    }
}

#[cfg(feature = "webrtc")]
pub mod framing;
#[cfg(feature = "webrtc")]
mod net;
#[cfg(feature = "webrtc")]
mod server;
#[cfg(feature = "webrtc")]
mod session;
#[cfg(feature = "webrtc")]
mod signaling;
#[cfg(feature = "webrtc")]
mod sink;
#[cfg(feature = "webrtc")]
pub use server::{RtcMessage, RtcServer};

#[cfg(not(feature = "webrtc"))]
mod stub;
#[cfg(not(feature = "webrtc"))]
pub use stub::{RtcMessage, RtcServer};
