//! Replies that come from the pool: the job pushes them into the request's
//! bounded [`Outbox`]; a writer thread of the request's own takes them out
//! and writes them to its connection. The job never touches the socket, so
//! a client that stops reading costs only its own stream: its outbox fills
//! and ends the stream (the job stops), and the writer's blocked write ends
//! with the socket's send timeout.
//!
//! The first reply decides the form: a final one is answered as one body; a
//! chunk opens a Server-Sent Events stream written straight to the
//! connection as HTTP chunks (tiny_http's own chunked writer holds 8 KiB
//! back, which would batch tokens), so a failed write tells us at once that
//! the client left.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tiny_http::Request as HttpRequest;

use super::openai_responses::ResponsesStream;
use super::reply::{JOB_HEADER, REQUEST_HEADER, ReplyContext, render};
use super::routes::Shape;
use crate::api::{JobId, Reply, RequestId, Response};
use crate::jobs::{ReplySink, lock};
use crate::outbox::{Outbox, OutboxLimits, Popped};

/// What the writer thread writes.
pub enum Item {
    /// A whole response (a final reply with no stream before it).
    Answer(super::reply::Answer),
    /// One event of the stream; the first one opens it with the job's id.
    Event(Vec<u8>, Option<JobId>),
    /// An SSE comment: asks whether the client is still there.
    Probe,
}

/// How long the writer waits for a reply before it looks again.
const WRITER_IDLE: Duration = Duration::from_secs(60);

/// Starts the writer thread for `request` and returns the sink its job
/// delivers to.
pub fn start(
    request: HttpRequest,
    id: RequestId,
    context: ReplyContext,
    limits: OutboxLimits,
) -> std::io::Result<Arc<dyn ReplySink>> {
    let farewell_context = context.clone();
    // OpenAI's Responses events number themselves and follow the items
    // opened so far: state shared by the sink and the farewell below.
    let responses = (context.shape == Shape::OpenAiResponses)
        .then(|| Arc::new(Mutex::new(ResponsesStream::default())));
    let farewell_responses = responses.clone();
    let outbox = Arc::new(Outbox::new(
        limits,
        Instant::now(),
        || {},
        move |ended| {
            let reply = Reply::new(id.clone(), Response::error(ended.error()));
            let event = event_bytes(&reply, false, &farewell_context, &farewell_responses);
            let len = event.len();
            (Item::Event(event, None), len)
        },
    ));
    let sink = Arc::new(HttpSink {
        outbox: Arc::clone(&outbox),
        context: context.clone(),
        opened: AtomicBool::new(false),
        responses,
    });
    std::thread::Builder::new()
        .name("http-reply".into())
        .spawn(move || {
            crate::logging::RequestTag::scope(context.request_id, || {
                write_replies(request, &outbox, &context)
            })
        })?;
    Ok(sink)
}

/// Delivers a job's replies to its request's outbox.
struct HttpSink {
    outbox: Arc<Outbox<Item>>,
    context: ReplyContext,
    /// Whether a chunk went out, so the stream is (or will be) open.
    opened: AtomicBool,
    /// The stream's state, on OpenAI's Responses route.
    responses: Option<Arc<Mutex<ResponsesStream>>>,
}

impl ReplySink for HttpSink {
    fn deliver(&self, reply: Reply) -> bool {
        let last = reply.response.is_final();
        let first = !self.opened.load(Ordering::Relaxed);
        let item = if last && first {
            Item::Answer(render(self.context.shape, &reply, &self.context))
        } else {
            self.opened.store(true, Ordering::Relaxed);
            let event = event_bytes(&reply, first, &self.context, &self.responses);
            Item::Event(event, reply.job_id)
        };
        let bytes = match &item {
            Item::Answer(answer) => answer.body_len(),
            Item::Event(event, _) => event.len(),
            Item::Probe => 0,
        };
        self.outbox.push(item, bytes, last, Instant::now()).is_ok()
    }

    /// Writing is the only way to learn that a TCP peer left, so an open
    /// event stream gets an SSE comment (which every SSE client skips).
    /// Before the stream opens the head is not written yet: nothing to probe.
    fn is_present(&self) -> bool {
        if self.opened.load(Ordering::Relaxed) {
            let _ = self.outbox.push(Item::Probe, 3, false, Instant::now());
        }
        self.outbox.is_open()
    }

    fn mute(&self) {
        self.outbox.mute();
    }
}

/// The writer thread: answers the request, or writes its event stream.
fn write_replies(request: HttpRequest, outbox: &Outbox<Item>, context: &ReplyContext) {
    let mut waiting = Some(request);
    let mut stream: Option<Box<dyn Write + Send>> = None;
    loop {
        let (item, last) = match outbox.wait_pop(WRITER_IDLE) {
            Popped::Item(item, last) => (item, last),
            Popped::Idle => continue,
            // The job's client went away, or its last reply was written.
            Popped::Done => return,
        };
        let written = match item {
            Item::Answer(answer) => {
                if let Some(request) = waiting.take() {
                    answer.send(request, context);
                }
                return;
            }
            Item::Event(event, job_id) => {
                if stream.is_none() {
                    stream = waiting
                        .take()
                        .and_then(|request| open_stream(request, context, job_id).ok());
                }
                stream
                    .as_mut()
                    .is_some_and(|writer| write_chunk(writer, &event))
            }
            Item::Probe => match &mut stream {
                Some(writer) => write_chunk(writer, b":\n\n"),
                None => true,
            },
        };
        if !written {
            outbox.close();
            return;
        }
        if last {
            if let Some(writer) = &mut stream {
                let _ = writer.write_all(b"0\r\n\r\n").and_then(|()| writer.flush());
            }
            return;
        }
    }
}

fn open_stream(
    request: HttpRequest,
    context: &ReplyContext,
    job_id: Option<JobId>,
) -> std::io::Result<Box<dyn Write + Send>> {
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n",
    );
    if let Some(job) = job_id {
        head.push_str(&format!("{JOB_HEADER}: {job}\r\n"));
    }
    if let Some(tag) = context.request_id {
        head.push_str(&format!("{REQUEST_HEADER}: {tag}\r\n"));
    }
    if let Some(origin) = &context.cors_origin {
        head.push_str(&format!(
            "Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\nAccess-Control-Expose-Headers: {JOB_HEADER}, {REQUEST_HEADER}\r\n"
        ));
    }
    head.push_str("\r\n");
    let mut writer = request.into_writer();
    // Buffered, not flushed: the head leaves in one segment with the first
    // event (a head sent alone would hold that event back behind Nagle).
    writer.write_all(head.as_bytes())?;
    Ok(writer)
}

/// One `data:` event in the route's shape.
fn event_bytes(
    reply: &Reply,
    first: bool,
    context: &ReplyContext,
    responses: &Option<Arc<Mutex<ResponsesStream>>>,
) -> Vec<u8> {
    if let Some(state) = responses {
        return lock(state).event(reply);
    }
    super::openai::event(context.shape, reply, first, context).unwrap_or_else(|| {
        let mut event = b"data: ".to_vec();
        event.extend_from_slice(&reply.to_json());
        event.extend_from_slice(b"\n\n");
        event
    })
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
