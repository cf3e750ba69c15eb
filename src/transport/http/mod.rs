//! The HTTP transport: tiny_http in, protocol requests to the handler, JSON,
//! problem JSON or Server-Sent Events out.
//!
//! tiny_http runs its own accept and connection threads and cannot be
//! registered with mio. A few worker threads take its requests, check Host and
//! Origin, read the body within its limit, build the request from the route
//! and call [`Handler::serve`] — the same entry point the event loop uses for
//! native messaging — so cheap requests are answered without any hand-off.

pub mod openai;
pub mod openai_embeddings;
pub mod reply;
pub mod routes;

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use serde_json::Value;
use tiny_http::{Method, Request as HttpRequest, Server};

use self::reply::{Answer, HttpSink, ReplyContext, cors_headers, header, render};
use self::routes::{Match, Shape};
use crate::api::{self, Reply, RequestId};
use crate::error::ApiError;
use crate::handler::Handler;
use crate::jobs::ReplySink;
use crate::stats::Transport;

/// The OpenAPI description, served at `/openapi.yaml`.
pub const OPENAPI: &str = include_str!("../../../openapi.yaml");

/// What the HTTP transport needs from the config.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Origins allowed besides `chrome-extension://`.
    pub cors_origins: Vec<String>,
    /// Host names accepted besides the bound address and localhost.
    pub allowed_hosts: Vec<String>,
    /// Largest body in bytes.
    pub max_body_bytes: u64,
    /// Threads taking requests from tiny_http.
    pub workers: usize,
}

/// A running HTTP server.
pub struct HttpServer {
    server: Arc<Server>,
    stopping: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    address: SocketAddr,
}

impl HttpServer {
    /// Binds and starts the workers.
    pub fn start(config: HttpConfig, handler: Arc<Handler>) -> std::io::Result<HttpServer> {
        let listener = std::net::TcpListener::bind(config.bind)?;
        // TCP_NODELAY stays off on purpose: tiny_http writes a response in
        // several small writes, and Nagle coalesces them (measured: nodelay
        // cost ~40% of /health throughput on one connection). No read timeout
        // either: on Linux SO_RCVTIMEO on the listener also times out
        // accept(), which stops tiny_http's accept thread for good.
        let address = listener.local_addr()?;
        let server =
            Arc::new(Server::from_listener(listener, None).map_err(std::io::Error::other)?);
        let stopping = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Worker {
            config,
            handler,
            next_id: AtomicU64::new(1),
            address,
        });
        let workers = (0..shared.config.workers.max(1))
            .map(|i| {
                let (server, stopping, shared) = (
                    Arc::clone(&server),
                    Arc::clone(&stopping),
                    Arc::clone(&shared),
                );
                std::thread::Builder::new()
                    .name(format!("http-{i}"))
                    .spawn(move || shared.run(&server, &stopping))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        log::info!("HTTP on http://{address}");
        Ok(HttpServer {
            server,
            stopping,
            workers,
            address,
        })
    }

    /// The address actually bound (port 0 picks a free one).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops taking requests; requests already taken finish.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

struct Worker {
    config: HttpConfig,
    handler: Arc<Handler>,
    /// Ids for REST requests that bring none (StopGeneration needs one).
    next_id: AtomicU64,
    address: SocketAddr,
}

impl Worker {
    fn run(&self, server: &Server, stopping: &AtomicBool) {
        loop {
            match server.recv() {
                Ok(request) => {
                    // A bug in one request must not take the worker down.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.serve(request)
                    }));
                    if let Err(panic) = outcome {
                        log::error!(
                            "an HTTP request panicked: {}",
                            crate::jobs::panic_message(&panic)
                        );
                    }
                }
                Err(_) if stopping.load(Ordering::SeqCst) => return,
                Err(e) => log::warn!("HTTP accept failed: {e}"),
            }
        }
    }

    fn serve(&self, mut request: HttpRequest) {
        let started = Instant::now();
        let stats = self.handler.stats();
        stats.count_request(Transport::Http);
        let mut context = ReplyContext {
            shape: Shape::Tabagent,
            cors_origin: None,
            started,
            model: None,
        };
        let refuse = |request: HttpRequest, context: &ReplyContext, error: ApiError| {
            stats.record_reply(started.elapsed(), true);
            Answer::problem(&error).send(request, context);
        };

        if let Err(error) = self.check_host(&request) {
            return refuse(request, &context, error);
        }
        match self.check_origin(&request) {
            Ok(origin) => context.cors_origin = origin,
            Err(error) => return refuse(request, &context, error),
        }
        if *request.method() == Method::Options {
            return self.preflight(request, &context);
        }

        let url = request.url().to_string();
        let (path, query) = url.split_once('?').unwrap_or((&url, ""));
        let (route, params) = match routes::find(request.method(), path) {
            Match::Found(route, params) => (route, params),
            Match::WrongMethod(allowed) => {
                // RFC 9110 (15.5.6): a 405 lists the path's methods in Allow.
                let allow = allowed.join(", ");
                let detail = format!("{path} takes {allow}");
                let error = ApiError::new(405, "method-not-allowed", "Method not allowed", detail);
                stats.record_reply(started.elapsed(), true);
                return Answer::problem(&error)
                    .with_header("Allow", &allow)
                    .send(request, &context);
            }
            Match::NotFound => {
                return refuse(
                    request,
                    &context,
                    ApiError::not_found(format!("no route {path}")),
                );
            }
        };
        context.shape = route.shape;
        if route.shape == Shape::OpenApi {
            stats.record_reply(started.elapsed(), false);
            return Answer::raw(200, "application/yaml", OPENAPI.as_bytes().to_vec())
                .send(request, &context);
        }
        let body = match read_body(&mut request, self.config.max_body_bytes) {
            Ok(body) => body,
            Err(error) => return refuse(request, &context, error),
        };
        let parsed = if route.shape == Shape::Rpc {
            api::parse_request(&body)
        } else {
            self.rest_request(route, &body, query, params)
        };
        let (id, parsed) = match parsed {
            Ok(ok) => ok,
            Err((_, error)) => return refuse(request, &context, error),
        };
        context.model = openai::requested_model(&parsed);

        let mut waiting = Some(request);
        let sink_context = context.clone();
        let sink = || -> Arc<dyn ReplySink> {
            // serve() calls this at most once, and only before we look at `waiting` again.
            let request = waiting.take().expect("request not yet answered");
            Arc::new(HttpSink::new(request, sink_context, Arc::clone(stats)))
        };
        let inline = self.handler.serve(id.clone(), parsed, sink, started);
        if let (Some(response), Some(request)) = (inline, waiting) {
            let reply = Reply { id, response };
            stats.record_reply(
                started.elapsed(),
                matches!(reply.response, api::Response::Error { .. }),
            );
            render(context.shape, &reply, &context).send(request, &context);
        }
    }

    /// A REST route's request: body, query and path fields; an `id` in the
    /// body is kept, otherwise one is made up so the request can be stopped.
    fn rest_request(
        &self,
        route: &routes::Route,
        body: &[u8],
        query: &str,
        params: Vec<(&'static str, String)>,
    ) -> Result<(RequestId, api::Request), (RequestId, ApiError)> {
        let body = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            Some(serde_json::from_slice::<Value>(body).map_err(|e| {
                (
                    RequestId::NONE,
                    ApiError::bad_request(format!("the body is not valid JSON: {e}")),
                )
            })?)
        };
        let body = openai::translate(route.shape, body)
            .and_then(|body| openai_embeddings::translate(route.shape, body))
            .map_err(|detail| (RequestId::NONE, ApiError::bad_request(detail)))?;
        let object = routes::request_object(route, body, query, params)
            .map_err(|detail| (RequestId::NONE, ApiError::bad_request(detail)))?;
        let (id, request) = api::request_from_value(object)?;
        let id = if id.is_none() {
            RequestId::text(format!(
                "http-{}",
                self.next_id.fetch_add(1, Ordering::Relaxed)
            ))
        } else {
            id
        };
        Ok((id, request))
    }

    /// DNS-rebinding protection: a browser tricked into calling us through
    /// another name sends that name in Host.
    fn check_host(&self, request: &HttpRequest) -> Result<(), ApiError> {
        let Some(host) = header_value(request, "Host") else {
            return Ok(());
        };
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        let bound = self.address.ip().to_string();
        let allowed = ["localhost", "127.0.0.1", "::1", bound.as_str()].contains(&name)
            || self
                .config
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name));
        if allowed {
            Ok(())
        } else {
            Err(ApiError::new(
                403,
                "host-not-allowed",
                "Host not allowed",
                format!("Host {host:?} is not this server"),
            ))
        }
    }

    /// CORS: extension pages and configured origins may call; other pages may not.
    fn check_origin(&self, request: &HttpRequest) -> Result<Option<String>, ApiError> {
        let Some(origin) = header_value(request, "Origin") else {
            return Ok(None);
        };
        let allowed = origin.starts_with("chrome-extension://")
            || self
                .config
                .cors_origins
                .iter()
                .any(|o| o == "*" || o.eq_ignore_ascii_case(origin));
        if allowed && origin.is_ascii() {
            Ok(Some(origin.to_string()))
        } else {
            Err(ApiError::new(
                403,
                "origin-not-allowed",
                "Origin not allowed",
                format!("origin {origin} may not call this server"),
            ))
        }
    }

    fn preflight(&self, request: HttpRequest, context: &ReplyContext) {
        let mut response = tiny_http::Response::empty(204)
            .with_header(header(
                "Access-Control-Allow-Methods",
                "GET, POST, PUT, PATCH, DELETE, OPTIONS",
            ))
            .with_header(header(
                "Access-Control-Allow-Headers",
                "Content-Type, Authorization",
            ))
            .with_header(header("Access-Control-Max-Age", "600"));
        for cors in cors_headers(context.cors_origin.as_deref()) {
            response.add_header(cors);
        }
        self.handler
            .stats()
            .record_reply(context.started.elapsed(), false);
        let _ = request.respond(response);
    }
}

fn header_value<'a>(request: &'a HttpRequest, name: &'static str) -> Option<&'a str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

fn read_body(request: &mut HttpRequest, limit: u64) -> Result<Vec<u8>, ApiError> {
    let too_large =
        || ApiError::too_large(format!("the body is larger than the {limit} bytes allowed"));
    if request.body_length().is_some_and(|len| len as u64 > limit) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(request.body_length().unwrap_or(0).min(1 << 20));
    request
        .as_reader()
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| {
            ApiError::new(
                408,
                "request-timeout",
                "Request timeout",
                format!("could not read the body: {e}"),
            )
        })?;
    if body.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(body)
}
