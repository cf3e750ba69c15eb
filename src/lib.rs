//! tabagent: private, on-device AI for a browser extension, in one binary.
//!
//! Data flows one way: a transport (native messaging in [`event_loop`], HTTP
//! in [`transport::http`]) turns bytes into an [`api::Request`], calls
//! [`handler::Handler::serve`], and turns each [`api::Response`] back into
//! bytes. The handler answers cheap requests inline and runs everything that
//! may take longer than a millisecond as a [`jobs::Job`] on a rayon pool;
//! job replies travel to the transport's [`jobs::ReplySink`] (for native
//! messaging, through the event loop's `Waker`, so stdout has one writer).
//!
//! Panics are bugs, never a way to handle input: every pool job and every
//! HTTP request runs inside `catch_unwind`, so a bug answers 500 and the host
//! keeps serving.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::print_stdout)]

pub mod api;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod event_loop;
pub mod events;
pub mod fsutil;
pub mod handler;
pub mod host;
pub mod jobs;
pub mod models;
pub mod params;
pub mod pull;
pub mod run;
pub mod stats;
pub mod store;
pub mod system;
pub mod transport;

/// The optional backends compiled into this build.
pub const FEATURES: &[&str] = &[
    #[cfg(feature = "llama")]
    "llama",
    #[cfg(feature = "onnx")]
    "onnx",
    #[cfg(feature = "webrtc")]
    "webrtc",
];
