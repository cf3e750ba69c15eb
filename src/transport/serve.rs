//! The one serve path: every transport hands a parsed message here, with the
//! connection it came on, and gets back the inline reply to frame, if any.
//!
//! This is where a request is counted, held to its client's rate limits
//! ([`crate::ratelimit`]), the handler is called (inside `catch_unwind`, so a
//! bug answers 500 on any thread, the event loop's included), and where a
//! job's final reply is timed: the transport's sink is wrapped so latency,
//! route and status are recorded once, and the request's last log line
//! written (target `tabagent::access`: route, status, duration, tokens), the
//! same way for native messaging, HTTP and WebRTC. Transports only turn
//! bytes into `(connection, request)` and replies back into bytes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::api::{self, JobId, Reply, Request, RequestId, Response};
use crate::error::ApiError;
use crate::handler::Handler;
use crate::jobs::{ConnectionId, ReplySink, lock, panic_message};
use crate::logging::RequestTag;
use crate::ratelimit::{Client, GenerationPermit};
use crate::stats::{Stats, Transport};

/// Where a message came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// The transport that framed it.
    pub transport: Transport,
    /// The connection (port, data channel session, HTTP request) it came on.
    pub connection: ConnectionId,
    /// Who sent it, as the rate limits see it.
    pub client: Client,
    /// Its route (HTTP's path pattern); None: the request type names it.
    pub route: Option<&'static str>,
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
/// otherwise it goes to the sink `sink` makes (called at most once). Every
/// log line meanwhile carries the request's tag (the caller's, or a new one).
pub fn serve(
    handler: &Handler,
    origin: Origin,
    parsed: Parsed,
    now: Instant,
    sink: impl FnOnce(&RequestId) -> Arc<dyn ReplySink>,
) -> Option<Reply> {
    let tag = RequestTag::current().unwrap_or_else(RequestTag::next);
    RequestTag::scope(Some(tag), || {
        serve_tagged(handler, origin, parsed, now, sink, tag)
    })
}

fn serve_tagged(
    handler: &Handler,
    origin: Origin,
    parsed: Parsed,
    now: Instant,
    sink: impl FnOnce(&RequestId) -> Arc<dyn ReplySink>,
    tag: RequestTag,
) -> Option<Reply> {
    let stats = handler.stats();
    stats.count_request(origin.transport);
    let mut done = Finish {
        transport: origin.transport,
        route: origin.route.unwrap_or("invalid"),
        started: now,
        tag,
    };
    let (id, request) = match parsed {
        Ok(ok) => ok,
        Err((id, error)) => return Some(done.answered(stats, id, Response::error(error))),
    };
    done.route = origin.route.unwrap_or(request.name());
    let permit = match admit(handler, origin, &request, now) {
        Ok(permit) => permit,
        Err(error) => return Some(done.answered(stats, id, Response::error(error))),
    };
    let reply_id = id.clone();
    let counted = || -> Arc<dyn ReplySink> {
        Arc::new(Counted {
            inner: sink(&reply_id),
            finish: done,
            stats: Arc::clone(stats),
            state: Mutex::new(Progress { permit, job: None }),
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
    Some(done.answered(stats, id, response))
}

/// The rate limits: the client's request rate, its WebRTC offers, and its
/// generations running (the permit counts one until the request ends).
fn admit(
    handler: &Handler,
    origin: Origin,
    request: &Request,
    now: Instant,
) -> Result<Option<GenerationPermit>, ApiError> {
    let limiter = handler.limiter();
    limiter.check_request(origin.client, now)?;
    // Offers cost a DTLS certificate's worth of work and a session each:
    // counted per address, over /v1/webrtc/offer and /v1/rpc alike.
    if let (Request::CreateWebRtcOffer(_), Client::Address(ip)) = (request, origin.client) {
        limiter.check_offer(ip, now)?;
    }
    match request {
        Request::Chat(_)
        | Request::Generate(_)
        | Request::Responses(_)
        | Request::CreateResponse(_) => limiter.start_generation(origin.client),
        _ => Ok(None),
    }
}

/// What the final line of a request says, and where it is counted.
#[derive(Debug, Clone, Copy)]
struct Finish {
    transport: Transport,
    route: &'static str,
    started: Instant,
    tag: RequestTag,
}

impl Finish {
    /// Records an inline reply and addresses it.
    fn answered(&self, stats: &Stats, id: RequestId, response: Response) -> Reply {
        self.record(stats, &response, None);
        Reply::new(id, response)
    }

    /// Counts the final reply and writes the request's last log line.
    fn record(&self, stats: &Stats, response: &Response, job: Option<JobId>) {
        let status = match response {
            Response::Error { error } => error.status,
            _ => 200,
        };
        let elapsed = self.started.elapsed();
        stats.record(self.transport, self.route, status, elapsed);
        if !log::log_enabled!(target: "tabagent::access", log::Level::Info) {
            return;
        }
        let (prompt_tokens, completion_tokens) = tokens(response);
        let job = job.map_or_else(|| "-".to_string(), |j| j.to_string());
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        RequestTag::scope(Some(self.tag), || {
            log::info!(
                target: "tabagent::access",
                transport = self.transport.name(),
                route = self.route,
                status = status,
                duration_ms = (duration_ms * 1000.0).round() / 1000.0,
                prompt_tokens = prompt_tokens,
                completion_tokens = completion_tokens,
                job_id = job.as_str();
                "{} {} {status} in {duration_ms:.3} ms",
                self.transport.name(),
                self.route,
            );
        });
    }
}

/// The prompt and generated tokens a final reply reports.
fn tokens(response: &Response) -> (u32, u32) {
    match response {
        Response::ChatComplete(done) => (done.usage.prompt_tokens, done.usage.completion_tokens),
        Response::ResponseResult(reply) => reply
            .response
            .usage
            .as_ref()
            .map_or((0, 0), |u| (u.input_tokens, u.output_tokens)),
        _ => (0, 0),
    }
}

/// Where a streamed request stands.
struct Progress {
    /// Its generation, counted against its client until it ends.
    permit: Option<GenerationPermit>,
    /// The job answering it (named by the first reply).
    job: Option<JobId>,
}

/// A transport's sink that records the final reply's latency on the way.
struct Counted {
    inner: Arc<dyn ReplySink>,
    finish: Finish,
    stats: Arc<Stats>,
    state: Mutex<Progress>,
}

impl ReplySink for Counted {
    fn deliver(&self, reply: Reply) -> bool {
        // Chunks in between pass without taking the lock.
        if reply.job_id.is_some() {
            lock(&self.state).job = reply.job_id;
        }
        if reply.response.is_final() {
            let mut state = lock(&self.state);
            state.permit = None;
            let job = state.job;
            drop(state);
            self.finish.record(&self.stats, &reply.response, job);
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
