//! Requests the handler passes on rather than answers: WebRTC signaling goes
//! to the event loop (where the peers live) through a [`LoopPort`], and
//! `Subscribe` registers the caller's sink on the [`EventBus`].

use std::sync::Arc;

use super::{Handler, Outcome};
use crate::api::{
    EventKind, Reply, RequestId, Response, RtcCommand, SubscribeRequest, Subscription,
};
use crate::error::ApiError;
use crate::events::EventBus;
use crate::jobs::ReplySink;

/// The event loop as the handler sees it: somewhere to send work that must
/// run there. The reply goes to `sink`, from the loop.
pub trait LoopPort: Send + Sync {
    /// Queues `command`; errs when the loop cannot take it.
    fn submit(
        &self,
        id: RequestId,
        command: RtcCommand,
        sink: Arc<dyn ReplySink>,
    ) -> Result<(), ApiError>;
}

impl Handler {
    /// Connects the event loop that serves WebRTC; only the first call counts.
    pub fn attach_loop(&self, port: Arc<dyn LoopPort>) {
        let _ = self.loop_port.set(port);
    }

    /// The push bus, for whatever emits events (model loads, downloads, memory).
    pub fn events(&self) -> &Arc<EventBus> {
        &self.events
    }

    /// Sends a signaling command to the loop. The reply always goes through
    /// `sink` (the transport has handed its request to it already).
    pub(super) fn to_loop(
        &self,
        id: RequestId,
        command: RtcCommand,
        sink: Arc<dyn ReplySink>,
    ) -> Option<Response> {
        let result = match self.loop_port.get() {
            Some(port) => port.submit(id.clone(), command, Arc::clone(&sink)),
            None => Err(ApiError::not_implemented(if cfg!(feature = "webrtc") {
                "WebRTC is not running: start tabagent with --mode webrtc or --mode all"
            } else {
                "WebRTC is not enabled in this build (the `webrtc` feature)"
            })),
        };
        if let Err(error) = result {
            sink.deliver(Reply::new(id, Response::error(error)));
        }
        None
    }

    /// Acknowledges a subscription on `sink`, then registers it for events.
    pub(super) fn subscribe(
        &self,
        id: RequestId,
        kinds: Vec<EventKind>,
        sink: Arc<dyn ReplySink>,
    ) -> Option<Response> {
        let subscribed = Reply::new(
            id.clone(),
            Response::Subscribed(Subscription {
                events: kinds.clone(),
            }),
        );
        if !sink.deliver(subscribed) {
            return None;
        }
        // A client arriving while memory is low hears so at once: the event
        // itself is told only when memory falls.
        let low_memory = kinds
            .contains(&EventKind::LowMemory)
            .then(|| self.models.low_memory_event())
            .flatten();
        if let Some(event) = low_memory {
            sink.deliver(Reply::new(id.clone(), Response::Event(event)));
        }
        self.events.subscribe(id, kinds, sink);
        None
    }
}

/// A Subscribe request's outcome: its event kinds, or a 400 naming the unknown one.
pub(super) fn subscribe_outcome(request: &SubscribeRequest) -> Outcome {
    match EventKind::parse_list(&request.events) {
        Ok(kinds) => Outcome::Subscribe(kinds),
        Err(detail) => Outcome::Reply(Response::error(ApiError::bad_request(detail))),
    }
}
