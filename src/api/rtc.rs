//! WebRTC signaling requests and their replies.

use serde::{Deserialize, Serialize};

/// Start a session: answer the browser's offer, or make an offer when `sdp`
/// is left out.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateOfferRequest {
    /// The browser's offer SDP.
    pub sdp: Option<String>,
    /// The client's own name for this peer.
    pub peer_id: Option<String>,
}

/// Complete a session that tabagent offered.
#[derive(Debug, Clone, Deserialize)]
pub struct SubmitAnswerRequest {
    /// The session.
    pub session_id: String,
    /// The browser's answer SDP.
    pub sdp: String,
}

/// A trickled ICE candidate; empty means end of candidates.
#[derive(Debug, Clone, Deserialize)]
pub struct IceCandidateRequest {
    /// The session.
    pub session_id: String,
    /// The candidate line.
    #[serde(default)]
    pub candidate: String,
}

/// Names a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RtcSessionRef {
    /// The session.
    pub session_id: String,
}

/// An SDP for the client (answer or offer).
#[derive(Debug, Clone, Serialize)]
pub struct RtcSignal {
    /// The session.
    pub session_id: String,
    /// The SDP.
    pub sdp: String,
    /// `answer` or `offer`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// STUN/TURN URLs for the client's `RTCPeerConnection` (`iceServers`);
    /// empty on loopback or a LAN.
    pub ice_servers: Vec<String>,
    /// The largest message tabagent accepts on the data channel, in bytes
    /// (larger requests are sent as `Partial` frames, up to this total).
    pub max_message_bytes: usize,
}

/// A session's state.
#[derive(Debug, Clone, Serialize)]
pub struct RtcSession {
    /// The session.
    pub session_id: String,
    /// The client's own name for the peer, if it gave one.
    pub peer_id: Option<String>,
    /// `new`, `connecting`, `connected` or `disconnected`.
    pub state: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub last_activity: i64,
    /// Messages received.
    pub messages_in: u64,
    /// Messages sent.
    pub messages_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
}

/// `WebRtcSessions`: every open session.
#[derive(Debug, Clone, Serialize)]
pub struct RtcSessionList {
    /// Oldest first.
    pub sessions: Vec<RtcSession>,
}

/// A signaling request, which only the event loop can answer: the WebRTC
/// peers live there.
#[derive(Debug, Clone)]
pub enum RtcCommand {
    /// CreateWebRtcOffer.
    CreateOffer(CreateOfferRequest),
    /// SubmitWebRtcAnswer.
    SubmitAnswer(SubmitAnswerRequest),
    /// AddIceCandidate.
    AddIce(IceCandidateRequest),
    /// GetWebRtcSession.
    Get(RtcSessionRef),
    /// ListWebRtcSessions.
    List,
    /// CloseWebRtcSession.
    Close(RtcSessionRef),
}
