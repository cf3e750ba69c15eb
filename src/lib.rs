//! tabagent: private, on-device AI for a browser extension, in one binary.
//!
//! Data flows one way: a transport (native messaging and WebRTC on the
//! [`event_loop`], HTTP in [`transport::http`]) turns bytes into a
//! connection's [`api::Request`] and hands it to the one serve path
//! ([`transport::serve`]), which calls [`handler::Handler::serve`]. The
//! handler answers cheap requests inline and runs everything that may take
//! longer than a millisecond as a [`jobs::Job`] on a rayon pool, under a
//! server job id; every reply of a job goes into the bounded [`outbox`] of
//! the stream it belongs to, and only the transport's own thread writes it to
//! the wire, so a slow client ends its own stream and stalls nobody.
//!
//! Panics are bugs, never a way to handle input: every pool job and every
//! request on the serve path runs inside `catch_unwind`, so a bug answers 500
//! and the host keeps serving.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::print_stdout)]

pub mod api;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod event_loop;
pub mod events;
pub mod extract;
pub mod fetch;
pub mod fsutil;
pub mod handler;
pub mod host;
pub mod jobs;
pub mod logging;
pub mod mailbox;
pub mod metrics;
pub mod models;
pub mod outbox;
pub mod params;
pub mod pull;
pub mod ratelimit;
pub mod reload;
pub mod run;
pub mod service;
pub mod stats;
pub mod store;
pub mod system;
pub mod transport;
pub mod uploads;
pub mod upstream;

/// The optional backends compiled into this build.
pub const FEATURES: &[&str] = &[
    #[cfg(feature = "llama")]
    "llama",
    #[cfg(feature = "onnx")]
    "onnx",
    #[cfg(feature = "webrtc")]
    "webrtc",
];
