//! Turning replies into HTTP responses: JSON and problem JSON bodies, in the
//! route's shape. Streamed replies are written by [`super::stream`].

use std::time::Instant;

use serde_json::{Value, json};
use tiny_http::{Header, Request as HttpRequest, Response as HttpResponse};

use super::openai_request::WireOptions;
use super::routes::Shape;
use crate::api::{JobId, Reply, Response};
use crate::error::ApiError;
use crate::logging::RequestTag;

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
    /// The methods a path takes, for the `Allow` of a 405.
    pub allow: Option<String>,
    /// What an OpenAI-shaped reply must add (`stream_options`).
    pub wire: WireOptions,
    /// The id of an OpenAI completion (`chatcmpl-...`), one per request so
    /// every chunk of a stream carries the same one: HTTP requests have no
    /// client id to borrow it from.
    pub completion_key: crate::api::JobId,
    /// The request's id in the logs, sent back as `X-Request-Id`.
    pub request_id: Option<RequestTag>,
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

    /// Names the job that made it.
    pub fn with_job(self, job_id: Option<JobId>) -> Answer {
        match job_id {
            Some(job) => self.with_header(JOB_HEADER, &job.to_string()),
            None => self,
        }
    }

    /// The body's size.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// Sends it, with CORS headers when the request came from an allowed origin.
    pub fn send(self, request: HttpRequest, context: &ReplyContext) {
        let mut response = HttpResponse::from_data(self.body)
            .with_status_code(self.status)
            .with_header(header("Content-Type", self.content_type));
        if let Some(seconds) = self.retry_after {
            response.add_header(header("Retry-After", &seconds.to_string()));
        }
        if let Some(tag) = context.request_id {
            response.add_header(header(REQUEST_HEADER, &tag.to_string()));
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

/// The header naming the job behind a response (StopGeneration takes it).
pub const JOB_HEADER: &str = "X-Job-Id";

/// The header naming the request in the server's logs.
pub const REQUEST_HEADER: &str = "X-Request-Id";

/// The response of a final reply, in the route's shape.
pub fn render(shape: Shape, reply: &Reply, context: &ReplyContext) -> Answer {
    render_shape(shape, reply, context).with_job(reply.job_id)
}

fn render_shape(shape: Shape, reply: &Reply, context: &ReplyContext) -> Answer {
    if let Some(answer) = super::openai::render(shape, reply, context) {
        return answer;
    }
    if let Some(answer) = super::openai_embeddings::render(shape, reply) {
        return answer;
    }
    if let Some(answer) = super::openai_responses::render(shape, reply) {
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
                    let mut model = json!({"id": m.id, "object": "model", "created": 0,
                        "owned_by": m.upstream.as_deref().unwrap_or("tabagent"),
                        "format": m.format, "kind": m.kind, "size_bytes": m.size_bytes, "loaded": m.loaded});
                    if let Some(upstream) = &m.upstream {
                        model["upstream"] = json!(upstream);
                    }
                    model
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
        header(
            "Access-Control-Expose-Headers",
            &format!("Retry-After, {JOB_HEADER}, {REQUEST_HEADER}"),
        ),
    ]
}
