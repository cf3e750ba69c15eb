//! Turning replies into HTTP responses: JSON, problem JSON, and Server-Sent
//! Events for streamed replies.
//!
//! A request whose reply comes from the pool hands its `tiny_http::Request` to
//! an [`HttpSink`]. The first reply decides the form: a final one is answered
//! as one JSON body; a chunk starts an event stream written straight to the
//! connection (tiny_http's own chunked writer holds 8 KiB back, which would
//! batch tokens), so a failed write tells us at once that the client left.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};
use tiny_http::{Header, Request as HttpRequest, Response as HttpResponse};

use super::routes::Shape;
use crate::api::{Reply, Response};
use crate::error::ApiError;
use crate::jobs::{ReplySink, lock};
use crate::stats::Stats;

/// Per-request facts every response needs.
#[derive(Debug, Clone)]
pub struct ReplyContext {
    /// The route's wire shape.
    pub shape: Shape,
    /// The allowed CORS origin to echo, if the request had one.
    pub cors_origin: Option<String>,
    /// When the request arrived.
    pub started: Instant,
    /// The model a chat request named (OpenAI stream chunks carry it).
    pub model: Option<String>,
}

/// One complete (non-streamed) HTTP answer.
pub struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    retry_after: Option<u32>,
    headers: Vec<Header>,
}

impl Answer {
    /// A JSON body with status 200.
    pub fn json(body: Vec<u8>) -> Answer {
        Answer {
            status: 200,
            content_type: "application/json",
            body,
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// A body of any type.
    pub fn raw(status: u16, content_type: &'static str, body: Vec<u8>) -> Answer {
        Answer {
            status,
            content_type,
            body,
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// An RFC 7807 problem with an OpenAI-style `error` member, so that both
    /// kinds of client show the message.
    pub fn problem(error: &ApiError) -> Answer {
        let slug = error.kind.rsplit(':').next().unwrap_or("error");
        let body = json!({
            "type": error.kind,
            "title": error.title,
            "status": error.status,
            "detail": error.detail,
            "error": {
                "message": error.detail,
                "type": if error.status >= 500 { "server_error" } else { "invalid_request_error" },
                "code": slug,
            },
        });
        Answer {
            status: error.status,
            content_type: "application/problem+json",
            // A json! value always serializes.
            body: serde_json::to_vec(&body).expect("problem serializes"),
            retry_after: error.retry_after,
            headers: Vec::new(),
        }
    }

    /// The same answer with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push(header(name, value));
        self
    }

    /// Sends it, with CORS headers when the request came from an allowed origin.
    pub fn send(self, request: HttpRequest, context: &ReplyContext) {
        let mut response = HttpResponse::from_data(self.body)
            .with_status_code(self.status)
            .with_header(header("Content-Type", self.content_type));
        if let Some(seconds) = self.retry_after {
            response.add_header(header("Retry-After", &seconds.to_string()));
        }
        for extra in self
            .headers
            .into_iter()
            .chain(cors_headers(context.cors_origin.as_deref()))
        {
            response.add_header(extra);
        }
        if let Err(e) = request.respond(response) {
            log::debug!("could not send a response: {e}");
        }
    }
}

/// The response of a final reply, in the route's shape.
pub fn render(shape: Shape, reply: &Reply, context: &ReplyContext) -> Answer {
    if let Some(answer) = super::openai::render(shape, reply, context) {
        return answer;
    }
    if let Some(answer) = super::openai_embeddings::render(shape, reply) {
        return answer;
    }
    match (&reply.response, shape) {
        (Response::Error { error }, _) => Answer::problem(error),
        // A model is loading: not ready yet, as llama.cpp's server says.
        (Response::Health(health), _) if health.status == "loading" => {
            Answer::raw(503, "application/json", reply.to_json())
        }
        (Response::ModelList(list), Shape::OpenAiModels) => {
            let data: Vec<Value> = list
                .models
                .iter()
                .map(|m| {
                    json!({"id": m.id, "object": "model", "created": 0, "owned_by": "tabagent",
                        "format": m.format, "kind": m.kind, "size_bytes": m.size_bytes, "loaded": m.loaded})
                })
                .collect();
            Answer::json(
                json!({"object": "list", "data": data})
                    .to_string()
                    .into_bytes(),
            )
        }
        _ => Answer::json(reply.to_json()),
    }
}

/// `Header::from_bytes` only fails on non-ASCII, and ours are ASCII literals
/// or validated origins.
pub fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header")
}

/// The CORS headers for an allowed origin.
pub fn cors_headers(origin: Option<&str>) -> Vec<Header> {
    let Some(origin) = origin else {
        return Vec::new();
    };
    vec![
        header("Access-Control-Allow-Origin", origin),
        header("Vary", "Origin"),
        header("Access-Control-Expose-Headers", "Retry-After"),
    ]
}

enum SinkState {
    /// No reply yet; the request waits to be answered.
    Waiting(HttpRequest),
    /// An event stream is open on the connection.
    Streaming(Box<dyn Write + Send>),
    /// Answered (or the client left).
    Finished,
}

/// Delivers a job's replies to the HTTP client that asked.
pub struct HttpSink {
    state: Mutex<SinkState>,
    context: ReplyContext,
    stats: Arc<Stats>,
}

impl HttpSink {
    /// A sink that will answer `request`.
    pub fn new(request: HttpRequest, context: ReplyContext, stats: Arc<Stats>) -> HttpSink {
        HttpSink {
            state: Mutex::new(SinkState::Waiting(request)),
            context,
            stats,
        }
    }
}

impl ReplySink for HttpSink {
    fn deliver(&self, reply: Reply) -> bool {
        let mut state = lock(&self.state);
        let is_final = reply.response.is_final();
        if is_final {
            let failed = matches!(reply.response, Response::Error { .. });
            self.stats
                .record_reply(self.context.started.elapsed(), failed);
        }
        match std::mem::replace(&mut *state, SinkState::Finished) {
            SinkState::Waiting(request) if is_final => {
                render(self.context.shape, &reply, &self.context).send(request, &self.context);
                true
            }
            SinkState::Waiting(request) => match open_stream(request, &self.context) {
                Ok(mut writer) => {
                    let open = write_event(&mut writer, &reply, true, &self.context);
                    if open {
                        *state = SinkState::Streaming(writer);
                    }
                    open
                }
                Err(e) => {
                    log::debug!("could not start an event stream: {e}");
                    false
                }
            },
            SinkState::Streaming(mut writer) => {
                let open = write_event(&mut writer, &reply, false, &self.context);
                if is_final {
                    let _ = writer.write_all(b"0\r\n\r\n").and_then(|()| writer.flush());
                } else if open {
                    *state = SinkState::Streaming(writer);
                }
                open
            }
            SinkState::Finished => false,
        }
    }

    /// Writing is the only way to learn that a TCP peer left, so an open event
    /// stream gets an SSE comment (which every SSE client skips). Before the
    /// stream opens the response head is not written yet: nothing to probe.
    fn is_present(&self) -> bool {
        let mut state = lock(&self.state);
        match &mut *state {
            SinkState::Waiting(_) => true,
            SinkState::Streaming(writer) => {
                let present = write_chunk(writer, b":\n\n");
                if !present {
                    *state = SinkState::Finished;
                }
                present
            }
            SinkState::Finished => false,
        }
    }
}

fn open_stream(
    request: HttpRequest,
    context: &ReplyContext,
) -> std::io::Result<Box<dyn Write + Send>> {
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n",
    );
    if let Some(origin) = &context.cors_origin {
        head.push_str(&format!(
            "Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\n"
        ));
    }
    head.push_str("\r\n");
    let mut writer = request.into_writer();
    // Buffered, not flushed: the head leaves in one segment with the first
    // event (a head sent alone would hold that event back behind Nagle).
    writer.write_all(head.as_bytes())?;
    Ok(writer)
}

/// Writes one `data:` event as one HTTP chunk; false when the client is gone.
fn write_event(
    writer: &mut Box<dyn Write + Send>,
    reply: &Reply,
    first: bool,
    context: &ReplyContext,
) -> bool {
    let event = super::openai::event(context.shape, reply, first, context).unwrap_or_else(|| {
        let mut event = b"data: ".to_vec();
        event.extend_from_slice(&reply.to_json());
        event.extend_from_slice(b"\n\n");
        event
    });
    write_chunk(writer, &event)
}

/// Writes `data` as one HTTP chunk; false when the client is gone.
fn write_chunk(writer: &mut Box<dyn Write + Send>, data: &[u8]) -> bool {
    let chunk_head = format!("{:x}\r\n", data.len());
    writer
        .write_all(chunk_head.as_bytes())
        .and_then(|()| writer.write_all(data))
        .and_then(|()| writer.write_all(b"\r\n"))
        .and_then(|()| writer.flush())
        .is_ok()
}
