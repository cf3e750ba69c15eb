//! The HTTP transport: tiny_http in, protocol requests to the handler, JSON,
//! problem JSON or Server-Sent Events out.
//!
//! tiny_http runs its own accept and connection threads and cannot be
//! registered with mio. A few worker threads take its requests, check Host,
//! Origin and the API key ([`guard`]), read the body within its limit, build
//! the request from the route and call [`Handler::serve`] — the same entry
//! point the event loop uses for native messaging — so cheap requests are
//! answered without any hand-off.

pub mod docs;
pub mod guard;
mod limits;
pub mod openai;
pub mod openai_embeddings;
pub mod openai_request;
pub mod openai_responses;
pub mod reply;
pub mod routes;
pub mod stream;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use serde_json::Value;
use tiny_http::{Method, Request as HttpRequest, Server};

use self::guard::{Guard, header_value};
use self::reply::{Answer, ReplyContext, cors_headers, header, render};
use self::routes::{Match, Shape};
use super::serve::{self, Origin, Parsed};
use crate::api::{self, Reply, RequestId};
use crate::error::ApiError;
use crate::handler::Handler;
use crate::jobs::{ConnectionId, ReplySink};
use crate::logging::RequestTag;
use crate::outbox::OutboxLimits;
use crate::ratelimit::Client;
use crate::stats::Transport;

pub use self::limits::HttpLimits;

/// The OpenAPI description, served at `/openapi.yaml`.
pub const OPENAPI: &str = include_str!("../../../openapi.yaml");

/// What the HTTP transport needs from the config.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// HTTPS: the certificate and key to serve (None: plain HTTP).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Origins allowed besides the recorded extensions.
    pub cors_origins: Vec<String>,
    /// The key clients must send (None: no key required).
    pub key: Option<Arc<crate::auth::KeySource>>,
    /// Where the allowed extension ids are recorded.
    pub data_dir: std::path::PathBuf,
    /// Host names accepted besides the bound address and localhost.
    pub allowed_hosts: Vec<String>,
    /// Largest body in bytes.
    pub max_body_bytes: u64,
    /// Threads taking requests from tiny_http.
    pub workers: usize,
    /// The bounds of a streamed reply's outbox.
    pub outbox: OutboxLimits,
    /// What one client may cost before it is answered and dropped.
    pub limits: HttpLimits,
}

/// A running HTTP server.
pub struct HttpServer {
    server: Arc<Server>,
    stopping: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    address: SocketAddr,
    guard: Arc<Guard>,
}

impl HttpServer {
    /// Binds and starts the workers.
    pub fn start(config: HttpConfig, handler: Arc<Handler>) -> std::io::Result<HttpServer> {
        let listener = std::net::TcpListener::bind(config.bind)?;
        // TCP_NODELAY stays off on purpose: tiny_http writes a response in
        // several small writes, and Nagle coalesces them (measured: nodelay
        // cost ~40% of /health throughput on one connection). No read timeout
        // on the listener: on Linux SO_RCVTIMEO there also times out accept();
        // the patched tiny_http sets read and write timeouts per connection.
        // SO_SNDBUF is set here because accepted sockets inherit it.
        if config.limits.send_buffer > 0 {
            socket2::SockRef::from(&listener).set_send_buffer_size(config.limits.send_buffer)?;
        }
        let address = listener.local_addr()?;
        let limits = config.limits.for_tiny_http(config.max_body_bytes);
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let server = match &config.tls {
            Some(tls) => Server::from_listener_with_tls(listener, limits, Arc::clone(tls)),
            None => Server::from_listener_with_limits(listener, limits),
        };
        let server = Arc::new(server.map_err(std::io::Error::other)?);
        let stopping = Arc::new(AtomicBool::new(false));
        let guard = Arc::new(Guard::new(
            address,
            config.allowed_hosts.clone(),
            config.cors_origins.clone(),
            config.data_dir.clone(),
            config.key.clone(),
        ));
        let shared = Arc::new(Worker {
            config,
            handler,
            guard: Arc::clone(&guard),
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
        log::info!("HTTP on {scheme}://{address}");
        Ok(HttpServer {
            server,
            stopping,
            workers,
            address,
            guard,
        })
    }

    /// The checks before the handler, whose origins and key SIGHUP changes.
    pub fn guard(&self) -> Arc<Guard> {
        Arc::clone(&self.guard)
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
    guard: Arc<Guard>,
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

    fn serve(&self, request: HttpRequest) {
        let tag = RequestTag::next();
        RequestTag::scope(Some(tag), || self.serve_tagged(request, tag));
    }

    fn serve_tagged(&self, mut request: HttpRequest, tag: RequestTag) {
        let started = Instant::now();
        // Every HTTP request is a connection of its own for the handler: a
        // client id reaches nothing across requests; job ids do.
        let client = match request.remote_addr() {
            Some(peer) => Client::Address(peer.ip()),
            None => Client::Address(std::net::Ipv4Addr::UNSPECIFIED.into()),
        };
        let mut origin = Origin {
            transport: Transport::Http,
            connection: ConnectionId::next(),
            client,
            route: None,
        };
        let mut context = ReplyContext {
            shape: Shape::Tabagent,
            cors_origin: None,
            started,
            model: None,
            allow: None,
            wire: Default::default(),
            completion_key: crate::api::JobId::random(),
            request_id: Some(tag),
        };
        let parsed = match self.check(&mut request, &mut context, &mut origin) {
            Ok(Checked::Request(parsed)) => parsed,
            Ok(Checked::Preflight) => return self.preflight(request, &context),
            Ok(Checked::Unauthorized) => {
                self.record_early("unauthorized", 401, started);
                let path = request.url().split('?').next().unwrap_or("").to_string();
                return guard::unauthorized(&path).send(request, &context);
            }
            Ok(Checked::OpenApi) => {
                self.record_early("/openapi.yaml", 200, started);
                return Answer::raw(200, "application/yaml", OPENAPI.as_bytes().to_vec())
                    .send(request, &context);
            }
            // Scrapes are not counted: they would move what they measure.
            Ok(Checked::Metrics) => {
                return Answer::raw(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.handler.metrics().into_bytes(),
                )
                .send(request, &context);
            }
            Ok(Checked::Docs(asset)) => {
                self.record_early("/docs", 200, started);
                return Answer::raw(200, asset.content_type, asset.body)
                    .with_header("Content-Security-Policy", docs::CSP)
                    .with_header("X-Content-Type-Options", "nosniff")
                    .with_header("Cache-Control", "no-cache")
                    .send(request, &context);
            }
            Err(error) => Err((RequestId::NONE, error)),
        };
        if let Ok((_, request)) = &parsed {
            context.model = openai::requested_model(request);
        }
        let mut waiting = Some(request);
        let mut sink_used: Option<Arc<dyn ReplySink>> = None;
        let inline = serve::serve(&self.handler, origin, parsed, started, |id| {
            // serve() calls this at most once, and only before we look at `waiting` again.
            let request = waiting.take().expect("request not yet answered");
            let sink = match stream::start(request, id.clone(), context.clone(), self.config.outbox)
            {
                Ok(sink) => sink,
                Err(e) => {
                    log::error!("cannot start a reply writer: {e}");
                    Arc::new(Unanswered)
                }
            };
            sink_used = Some(Arc::clone(&sink));
            sink
        });
        let Some(reply) = inline else { return };
        match (waiting, sink_used) {
            (Some(request), _) => {
                let answer = render(context.shape, &reply, &context);
                match &context.allow {
                    Some(allow) => answer.with_header("Allow", allow),
                    None => answer,
                }
                .send(request, &context)
            }
            // The request went to a sink, then failed inline (a panic).
            (None, Some(sink)) => {
                sink.deliver(reply);
            }
            (None, None) => {}
        }
    }

    /// Counts a request answered before the serve path, and logs its last line.
    fn record_early(&self, route: &'static str, status: u16, started: Instant) {
        let stats = self.handler.stats();
        stats.count_request(Transport::Http);
        stats.record(Transport::Http, route, status, started.elapsed());
        log::info!(
            target: "tabagent::access",
            transport = "http",
            route = route,
            status = status,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            "http {route} {status}"
        );
    }

    /// Checks Host, Origin and the key, finds the route and reads the request.
    fn check(
        &self,
        request: &mut HttpRequest,
        context: &mut ReplyContext,
        origin: &mut Origin,
    ) -> Result<Checked, ApiError> {
        self.guard.check_host(request)?;
        context.cors_origin = self.guard.check_origin(request)?;
        // Browsers send no credentials in a preflight: it is answered for
        // allowed origins only (check_origin refused the others).
        if *request.method() == Method::Options {
            return Ok(Checked::Preflight);
        }
        let url = request.url().to_string();
        let (path, query) = url.split_once('?').unwrap_or((&url, ""));
        // Before the route is looked up: without the key, not even which
        // paths exist is told.
        if routes::needs_key(path) && !self.guard.has_key(request, context.started) {
            return Ok(Checked::Unauthorized);
        }
        let (route, params) = match routes::find(request.method(), path) {
            Match::Found(route, params) => (route, params),
            Match::WrongMethod(allowed) => {
                // RFC 9110 (15.5.6): a 405 lists the path's methods in Allow.
                let allow = allowed.join(", ");
                let detail = format!("{path} takes {allow}");
                context.allow = Some(allow);
                return Err(ApiError::new(
                    405,
                    "method-not-allowed",
                    "Method not allowed",
                    detail,
                ));
            }
            Match::NotFound => return Err(ApiError::not_found(format!("no route {path}"))),
        };
        context.shape = route.shape;
        origin.route = Some(route.path);
        match route.shape {
            Shape::OpenApi => return Ok(Checked::OpenApi),
            Shape::Metrics => return Ok(Checked::Metrics),
            _ => {}
        }
        if route.shape == Shape::Docs {
            let file = params.into_iter().next().map(|(_, file)| file);
            return docs::asset(file.as_deref().unwrap_or("")).map(Checked::Docs);
        }
        let body = read_body(request, self.config.max_body_bytes)?;
        let parsed = if route.shape == Shape::Rpc {
            api::parse_request(&body)
        } else {
            rest_request(route, &body, query, params, context)
        };
        Ok(Checked::Request(parsed))
    }

    fn preflight(&self, request: HttpRequest, context: &ReplyContext) {
        let mut response = tiny_http::Response::empty(204)
            .with_header(header(
                "Access-Control-Allow-Methods",
                "GET, POST, PUT, PATCH, DELETE, OPTIONS",
            ))
            .with_header(header(
                "Access-Control-Allow-Headers",
                "Content-Type, Authorization, X-Api-Key",
            ))
            .with_header(header("Access-Control-Max-Age", "600"));
        for cors in cors_headers(context.cors_origin.as_deref()) {
            response.add_header(cors);
        }
        // Private Network Access: a public page's request to this private
        // address is preflighted with this header; only allowed origins
        // (the only ones with a cors_origin here) get the answer that lets it on.
        let private_network = header_value(&request, "Access-Control-Request-Private-Network")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if private_network && context.cors_origin.is_some() {
            response.add_header(header("Access-Control-Allow-Private-Network", "true"));
        }
        if let Some(tag) = context.request_id {
            response.add_header(header(reply::REQUEST_HEADER, &tag.to_string()));
        }
        self.record_early("preflight", 204, context.started);
        let _ = request.respond(response);
    }
}

/// What the checks before the handler found.
// One value per request, moved once: boxing the large variant would only add
// an allocation to every request.
#[allow(clippy::large_enum_variant)]
enum Checked {
    /// A request for the handler (or why it is not one).
    Request(Parsed),
    /// A CORS preflight.
    Preflight,
    /// A request without the key.
    Unauthorized,
    /// `GET /openapi.yaml`.
    OpenApi,
    /// `GET /metrics`.
    Metrics,
    /// A file of the API page.
    Docs(docs::Asset),
}

/// A REST route's request: body, query and path fields; an `id` in the body
/// is kept as the request's label.
#[allow(clippy::result_large_err)] // as api::parse_request: the cold path, answered at once
fn rest_request(
    route: &routes::Route,
    body: &[u8],
    query: &str,
    params: Vec<(&'static str, String)>,
    context: &mut ReplyContext,
) -> Parsed {
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
    context.wire = openai_request::wire_options(body.as_ref());
    let body = openai_request::translate_relayable(route.shape, body)
        .and_then(|body| openai_embeddings::translate(route.shape, body))
        .map_err(|detail| (RequestId::NONE, ApiError::bad_request(detail)))?;
    let object = routes::request_object(route, body, query, params)
        .map_err(|detail| (RequestId::NONE, ApiError::bad_request(detail)))?;
    api::request_from_value(object)
}

/// Stands in when no writer thread could start: the request is dropped
/// unanswered (tiny_http closes it) and the job sees its client gone.
struct Unanswered;

impl ReplySink for Unanswered {
    fn deliver(&self, _reply: Reply) -> bool {
        false
    }
}

/// The body, which tiny_http's connection thread has already read whole
/// (within `limit`, the body timeouts and deadline; it answered 413 or 408
/// itself otherwise), so no worker ever waits on a client here. The limit is
/// checked again in case the server was built with a larger one.
fn read_body(request: &mut HttpRequest, limit: u64) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::with_capacity(request.body_length().unwrap_or(0));
    request
        .as_reader()
        .read_to_end(&mut body)
        .map_err(|e| ApiError::internal(format!("could not take the body: {e}")))?;
    if body.len() as u64 > limit {
        return Err(ApiError::too_large(format!(
            "the body is larger than the {limit} bytes allowed"
        )));
    }
    Ok(body)
}
