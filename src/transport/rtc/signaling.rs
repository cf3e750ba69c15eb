//! Signaling on the loop thread: offers and answers, trickled candidates,
//! and the session list. Every failure is an [`ApiError`] naming the problem
//! (malformed SDP, no data channel, unknown session); no input can panic.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::{Candidate, Rtc};

use super::framing::MIN_FRAME;
use super::server::{MAX_FRAME, RtcServer, SCTP_BUFFER};
use super::session::{Negotiation, Session, SessionId};
use crate::api::{
    CreateOfferRequest, IceCandidateRequest, Response, RtcCommand, RtcSession, RtcSessionList,
    RtcSessionRef, RtcSignal, SubmitAnswerRequest,
};
use crate::error::ApiError;

/// The label of the channel tabagent opens when it makes the offer.
const CHANNEL_LABEL: &str = "tabagent";
/// RFC 8841: a peer that announces no max-message-size takes 64 KiB.
const DEFAULT_REMOTE_MAX: usize = 64 * 1024;

impl RtcServer {
    /// Runs one signaling command.
    pub(super) fn run_command(
        &mut self,
        command: RtcCommand,
        now: Instant,
    ) -> Result<Response, ApiError> {
        match command {
            RtcCommand::CreateOffer(request) => self.create(request, now),
            RtcCommand::SubmitAnswer(request) => self.submit_answer(request, now),
            RtcCommand::AddIce(request) => self.add_ice(request, now),
            RtcCommand::Get(RtcSessionRef { session_id }) => {
                let session = self.session(&session_id)?;
                Ok(Response::WebRtcSession(self.info(session)))
            }
            RtcCommand::List => {
                let mut sessions: Vec<&Session> = self.sessions.values().collect();
                sessions.sort_by_key(|s| s.created);
                let sessions = sessions.into_iter().map(|s| self.info(s)).collect();
                Ok(Response::WebRtcSessions(RtcSessionList { sessions }))
            }
            RtcCommand::Close(RtcSessionRef { session_id }) => {
                self.session(&session_id)?;
                self.close(&SessionId::from_client(&session_id), "closed by the client");
                Ok(Response::WebRtcSessionClosed(RtcSessionRef { session_id }))
            }
        }
    }

    fn create(&mut self, request: CreateOfferRequest, now: Instant) -> Result<Response, ApiError> {
        if self.sessions.len() >= self.settings.max_sessions {
            return Err(ApiError::busy(
                format!(
                    "{} WebRTC sessions are open, the most allowed; close one or retry later",
                    self.sessions.len()
                ),
                5,
            ));
        }
        let mut rtc = self.new_rtc(now);
        let (sdp, kind, negotiation, remote_max) = match request.sdp.as_deref() {
            Some(sdp) => {
                let remote_max = check_offer(sdp)?;
                let offer = SdpOffer::from_sdp_string(sdp)
                    .map_err(|e| ApiError::bad_request(format!("malformed SDP offer: {e}")))?;
                let answer = rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .map_err(|e| ApiError::bad_request(format!("cannot accept the offer: {e}")))?;
                (
                    answer.to_sdp_string(),
                    "answer",
                    Negotiation::Done,
                    remote_max,
                )
            }
            None => {
                let mut change = rtc.sdp_api();
                change.add_channel(CHANNEL_LABEL.into());
                // A change that adds a channel always makes an offer.
                let (offer, pending) = change
                    .apply()
                    .ok_or_else(|| ApiError::internal("str0m made no offer"))?;
                let negotiation = Negotiation::Offered(Box::new(pending));
                (
                    offer.to_sdp_string(),
                    "offer",
                    negotiation,
                    DEFAULT_REMOTE_MAX,
                )
            }
        };
        let id = SessionId::random();
        let frame_limit = self.frame_limit(remote_max);
        let session = Session::new(
            id.clone(),
            request.peer_id,
            rtc,
            negotiation,
            frame_limit,
            now,
        );
        self.sessions.insert(id.clone(), session);
        self.drive(&id, now);
        log::info!("WebRTC session {id} created ({kind})");
        Ok(Response::WebRtcSignal(RtcSignal {
            session_id: id.to_string(),
            sdp,
            kind: kind.into(),
            created_at: self.unix_ms(now),
            ice_servers: self.settings.ice_servers.clone(),
            max_message_bytes: self.settings.max_message_bytes,
        }))
    }

    fn submit_answer(
        &mut self,
        request: SubmitAnswerRequest,
        now: Instant,
    ) -> Result<Response, ApiError> {
        self.session(&request.session_id)?;
        let answer = SdpAnswer::from_sdp_string(&request.sdp)
            .map_err(|e| ApiError::bad_request(format!("malformed SDP answer: {e}")))?;
        let remote_max = max_message_size(&request.sdp);
        let frame_limit = self.frame_limit(remote_max);
        let id = SessionId::from_client(&request.session_id);
        // Looked up above.
        let session = self.sessions.get_mut(&id).expect("session exists");
        let Negotiation::Offered(pending) =
            std::mem::replace(&mut session.negotiation, Negotiation::Done)
        else {
            return Err(ApiError::conflict(format!(
                "session {id} is not waiting for an answer"
            )));
        };
        session.frame_limit = frame_limit;
        session.last_activity = now;
        let result = session.rtc.sdp_api().accept_answer(*pending, answer);
        self.drive(&id, now);
        result.map_err(|e| {
            ApiError::bad_request(format!(
                "cannot accept the answer: {e}; start over with a new offer"
            ))
        })?;
        let session = self.session(&request.session_id)?;
        Ok(Response::WebRtcSession(self.info(session)))
    }

    fn add_ice(
        &mut self,
        request: IceCandidateRequest,
        now: Instant,
    ) -> Result<Response, ApiError> {
        self.session(&request.session_id)?;
        let id = SessionId::from_client(&request.session_id);
        let line = request.candidate.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        // ICE-lite learns the browser's address from its checks, so an
        // end-of-candidates marker or an mDNS name (unresolvable here) is fine.
        let useful = !line.is_empty() && !line.contains(".local ");
        if useful {
            let candidate = Candidate::from_sdp_string(line)
                .map_err(|e| ApiError::bad_request(format!("malformed ICE candidate: {e}")))?;
            // Looked up above.
            let session = self.sessions.get_mut(&id).expect("session exists");
            session.rtc.add_remote_candidate(candidate);
            session.last_activity = now;
            self.drive(&id, now);
        }
        let session = self.session(&request.session_id)?;
        Ok(Response::WebRtcSession(self.info(session)))
    }

    fn session(&self, id: &str) -> Result<&Session, ApiError> {
        self.sessions
            .get(&SessionId::from_client(id))
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "no WebRTC session {id:?}; sessions close after {} s without traffic",
                    self.settings.idle_timeout.as_secs()
                ))
            })
    }

    fn info(&self, session: &Session) -> RtcSession {
        let c = session.counters;
        RtcSession {
            session_id: session.id.to_string(),
            peer_id: session.peer_id.clone(),
            state: session.link.name().into(),
            created_at: self.unix_ms(session.created),
            last_activity: self.unix_ms(session.last_activity),
            messages_in: c.messages_in,
            messages_out: c.messages_out,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
        }
    }

    /// A new ICE-lite peer with a host candidate per socket (and the
    /// advertised public addresses).
    fn new_rtc(&self, now: Instant) -> Rtc {
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_dtls_cert(self.cert.clone())
            .set_sctp_max_message_size(
                u32::try_from(self.settings.max_message_bytes).unwrap_or(u32::MAX),
            )
            .set_sctp_max_buffered_amount(SCTP_BUFFER)
            .build(now);
        let addresses = self.sockets.addresses();
        for &addr in &addresses {
            match Candidate::host(addr, "udp") {
                Ok(candidate) => {
                    rtc.add_local_candidate(candidate);
                }
                Err(e) => log::warn!("no host candidate for {addr}: {e}"),
            }
        }
        let base = addresses
            .iter()
            .find(|a| !a.ip().is_loopback())
            .or(addresses.first());
        if let Some(&base) = base {
            for &ip in &self.settings.advertise {
                let public = SocketAddr::new(ip, base.port());
                match Candidate::server_reflexive(public, base, "udp") {
                    Ok(candidate) => {
                        rtc.add_local_candidate(candidate);
                    }
                    Err(e) => log::warn!("cannot advertise {public}: {e}"),
                }
            }
        }
        rtc
    }

    /// The largest message to send a peer that announced `remote_max`.
    fn frame_limit(&self, remote_max: usize) -> usize {
        // MIN_FRAME (1 KiB) < MAX_FRAME (128 KiB): clamp cannot panic.
        remote_max
            .min(self.settings.max_message_bytes)
            .clamp(MIN_FRAME, MAX_FRAME)
    }
}

/// Checks an offer before str0m parses it: it must be SDP with a data
/// channel. Returns the peer's max-message-size.
fn check_offer(sdp: &str) -> Result<usize, ApiError> {
    if !sdp.trim_start().starts_with("v=0") {
        return Err(ApiError::bad_request(
            "malformed SDP offer: it must start with v=0 (pass the offer's `sdp` text)",
        ));
    }
    if !sdp.lines().any(|l| l.starts_with("m=application")) {
        return Err(ApiError::bad_request(
            "the offer has no data channel (m=application): call createDataChannel() before createOffer()",
        ));
    }
    Ok(max_message_size(sdp))
}

/// The `a=max-message-size` of an SDP; 0 there means "no limit".
fn max_message_size(sdp: &str) -> usize {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=max-message-size:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(DEFAULT_REMOTE_MAX, |n| if n == 0 { usize::MAX } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_checked_before_parsing() {
        assert!(check_offer("hello").unwrap_err().detail.contains("v=0"));
        let audio = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        assert!(
            check_offer(audio)
                .unwrap_err()
                .detail
                .contains("no data channel")
        );
        let data = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=max-message-size:262144\r\n";
        assert_eq!(check_offer(data).unwrap(), 262_144);
        assert_eq!(max_message_size("v=0\r\n"), 64 * 1024);
        assert_eq!(max_message_size("a=max-message-size:0"), usize::MAX);
    }
}
