//! The one serve path: every transport hands a parsed message here, with the
//! connection it came on, and gets back the inline reply to frame, if any.
//!
//! This is where a request is counted, the handler is called (inside
//! `catch_unwind`, so a bug answers 500 on any thread, the event loop's
//! included), and where a job's final reply is timed: the transport's sink
//! is wrapped so latency and errors are recorded once, the same way for
//! native messaging, HTTP and WebRTC. Transports only turn bytes into
//! `(connection, request)` and replies back into bytes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use crate::api::{self, Reply, Request, RequestId, Response};
use crate::error::ApiError;
use crate::handler::Handler;
use crate::jobs::{ConnectionId, ReplySink, panic_message};
use crate::stats::{Stats, Transport};

/// Where a message came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// The transport that framed it.
    pub transport: Transport,
    /// The connection (port, data channel session, HTTP request) it came on.
    pub connection: ConnectionId,
}

/// A message as a transport read it: a request, or why it is not one.
pub type Parsed = Result<(RequestId, Request), (RequestId, ApiError)>;

/// Serves one message in the envelope form (native messaging, data channels).
pub fn serve_message(
    handler: &Handler,
    origin: Origin,
    message: &[u8],
    now: Instant,
    sink: impl FnOnce(&RequestId) -> Arc<dyn ReplySink>,
) -> Option<Reply> {
    serve(handler, origin, api::parse_request(message), now, sink)
}

/// Counts and serves `parsed`; the reply is returned when it is ready now,
/// otherwise it goes to the sink `sink` makes (called at most once).
pub fn serve(
    handler: &Handler,
    origin: Origin,
    parsed: Parsed,
    now: Instant,
    sink: impl FnOnce(&RequestId) -> Arc<dyn ReplySink>,
) -> Option<Reply> {
    let stats = handler.stats();
    stats.count_request(origin.transport);
    let (id, request) = match parsed {
        Ok(ok) => ok,
        Err((id, error)) => return Some(answered(stats, now, id, Response::error(error))),
    };
    let reply_id = id.clone();
    let counted = || -> Arc<dyn ReplySink> {
        Arc::new(Counted {
            inner: sink(&reply_id),
            started: now,
            stats: Arc::clone(stats),
        })
    };
    let served = catch_unwind(AssertUnwindSafe(|| {
        handler.serve(origin.connection, id.clone(), request, counted, now)
    }));
    let response = match served {
        Ok(inline) => inline?,
        Err(panic) => {
            let what = panic_message(&panic);
            log::error!("a request panicked: {what}");
            Response::error(ApiError::internal(format!("the request failed: {what}")))
        }
    };
    Some(answered(stats, now, id, response))
}

/// Records an inline reply and addresses it.
fn answered(stats: &Stats, started: Instant, id: RequestId, response: Response) -> Reply {
    stats.record_reply(
        started.elapsed(),
        matches!(response, Response::Error { .. }),
    );
    Reply::new(id, response)
}

/// A transport's sink that records the final reply's latency on the way.
struct Counted {
    inner: Arc<dyn ReplySink>,
    started: Instant,
    stats: Arc<Stats>,
}

impl ReplySink for Counted {
    fn deliver(&self, reply: Reply) -> bool {
        if reply.response.is_final() {
            let failed = matches!(reply.response, Response::Error { .. });
            self.stats.record_reply(self.started.elapsed(), failed);
        }
        self.inner.deliver(reply)
    }

    fn is_present(&self) -> bool {
        self.inner.is_present()
    }

    fn mute(&self) {
        self.inner.mute();
    }
}
