//! How a request's replies reach a data channel: framed on the thread that
//! made them, queued in the request's bounded [`Outbox`], and written to
//! SCTP by the loop when the peer has room. The producer never waits: a peer
//! that stops reading ends its own streams by the outbox's bounds (a job is
//! stopped, a subscriber dropped), and nobody else notices.

use std::sync::Arc;
use std::time::Instant;

use str0m::channel::ChannelId;

use super::framing;
use super::server::RtcMessage;
use super::session::SessionId;
use crate::api::{Reply, RequestId, Response};
use crate::jobs::ReplySink;
use crate::mailbox::Mailbox;
use crate::outbox::{Outbox, OutboxLimits};

/// One request's frames, waiting for SCTP.
pub type FrameOutbox = Outbox<Vec<u8>>;

/// A stream of replies for one request on one channel.
pub struct Stream {
    /// The channel the request came on.
    pub channel: ChannelId,
    /// Its frames.
    pub outbox: Arc<FrameOutbox>,
}

/// A new stream for request `id`: the loop hears of its frames through
/// `mailbox`; a reader too slow for it gets an Error frame last.
pub fn stream(
    session: SessionId,
    channel: ChannelId,
    id: RequestId,
    limits: OutboxLimits,
    mailbox: Mailbox<RtcMessage>,
) -> Stream {
    let notify_session = session.clone();
    let outbox = Outbox::new(
        limits,
        Instant::now(),
        move || {
            mailbox.send(RtcMessage::Ready(notify_session.clone()));
        },
        move |ended| {
            let frame = Reply::new(id.clone(), Response::error(ended.error())).to_json();
            let len = frame.len();
            (frame, len)
        },
    );
    Stream {
        channel,
        outbox: Arc::new(outbox),
    }
}

/// Delivers one request's replies to its stream.
pub struct RtcSink {
    /// The stream's outbox.
    pub outbox: Arc<FrameOutbox>,
    /// The largest message the peer takes.
    pub frame_limit: usize,
}

impl ReplySink for RtcSink {
    fn deliver(&self, reply: Reply) -> bool {
        let last = reply.response.is_final();
        let frames = framing::encode(&reply, self.frame_limit);
        let parts = frames.into_iter().map(|frame| {
            let len = frame.len();
            (frame, len)
        });
        self.outbox.push_parts(parts, last, Instant::now()).is_ok()
    }

    fn is_present(&self) -> bool {
        self.outbox.is_open()
    }

    fn mute(&self) {
        self.outbox.mute();
    }
}
