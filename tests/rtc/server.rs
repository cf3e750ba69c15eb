//! tabagent inside the test process, as most WebRTC tests run it: the
//! event loop on a thread with its WebRTC peer, the HTTP front beside it,
//! no key (loopback) and a short-lived data dir.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tabagent::config::{Config, Layer};
use tabagent::event_loop::{EventLoop, LoopHandle, LoopMessage};
use tabagent::handler::{Handler, HandlerConfig};
use tabagent::jobs::JobLimits;
use tabagent::outbox::OutboxLimits;
use tabagent::transport::http::{HttpConfig, HttpLimits, HttpServer};
use tabagent::transport::rtc::RtcSettings;

use super::client::http_json;
use crate::util::TempDir;

/// tabagent in this process: the event loop on a thread, HTTP beside it.
pub struct TestServer {
    pub http: SocketAddr,
    pub udp: Vec<SocketAddr>,
    pub handler: Arc<Handler>,
    handle: LoopHandle,
    thread: Option<JoinHandle<()>>,
    http_server: Option<HttpServer>,
    #[allow(dead_code)] // read by the llama test only
    pub data: TempDir,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::with(|_| {})
    }

    pub fn with(configure: impl FnOnce(&mut RtcSettings)) -> TestServer {
        let data = TempDir::new("rtc");
        let handler = Arc::new(
            Handler::new(
                HandlerConfig {
                    data_dir: data.path().to_path_buf(),
                    models_dir: data.path().join("models"),
                    limits: JobLimits {
                        model_threads: 1,
                        generate_threads: 4,
                        io_threads: 2,
                        queue_capacity: 64,
                    },
                    memory_budget: 0,
                    keep_alive: Duration::ZERO,
                    low_memory_bytes: 0,
                    parallel: 0,
                    context_shift: false,
                    pull: tabagent::fetch::PullPolicy::default(),
                },
                Instant::now(),
            )
            .unwrap(),
        );
        let mut settings = RtcSettings::loopback();
        configure(&mut settings);
        let mut event_loop =
            EventLoop::new(Arc::clone(&handler), false, false, OutboxLimits::default()).unwrap();
        let udp = event_loop.start_webrtc(settings).unwrap();
        let handle = event_loop.handle();
        let http_server = HttpServer::start(
            HttpConfig {
                bind: "127.0.0.1:0".parse().unwrap(),
                tls: None,
                cors_origins: Vec::new(),
                // In-process, on loopback: no key and no rate limits (the
                // binary's defaults are tested in tests/trust.rs).
                key: None,
                data_dir: std::path::PathBuf::new(),
                allowed_hosts: Vec::new(),
                max_body_bytes: 16 << 20,
                workers: 2,
                outbox: OutboxLimits::default(),
                limits: HttpLimits::from_config(&Config::from_layers(
                    Layer::default(),
                    Layer::default(),
                    Layer::default(),
                    None,
                    None,
                )),
            },
            Arc::clone(&handler),
        )
        .unwrap();
        let thread = std::thread::spawn(move || {
            event_loop.run(|| {}).unwrap();
        });
        TestServer {
            http: http_server.address(),
            udp,
            handler,
            handle,
            thread: Some(thread),
            http_server: Some(http_server),
            data,
        }
    }

    pub fn get(&self, path: &str) -> Value {
        http_json(self.http, "GET", path, None)
    }

    pub fn session(&self, id: &str) -> Value {
        self.get(&format!("/v1/webrtc/session/{id}"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.send(LoopMessage::Shutdown);
        if let Some(http) = self.http_server.take() {
            http.stop();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
