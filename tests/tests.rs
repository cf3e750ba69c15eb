//! Integration tests, built as one binary: each area is a module, and the
//! helpers they share are in `util`. They run the real `tabagent` binary.

mod util;

mod cli;
#[cfg(feature = "llama")]
mod context;
mod docs;
#[cfg(feature = "onnx")]
mod embeddings;
mod history;
mod hostile;
mod http;
#[cfg(feature = "llama")]
mod inference;
#[cfg(feature = "llama")]
mod instruct;
mod knowledge;
#[cfg(feature = "llama")]
mod lifecycle;
#[cfg(feature = "llama")]
mod limits;
mod native;
#[cfg(feature = "llama")]
mod openai_responses;
mod ops;
mod pull;
#[cfg(feature = "llama")]
mod request_path;
#[cfg(feature = "llama")]
mod responses;
#[cfg(feature = "webrtc")]
mod rtc;
mod service;
#[cfg(feature = "llama")]
mod slots;
mod store;
#[cfg(feature = "llama")]
mod structured;
mod tls;
mod trust;
#[cfg(feature = "llama")]
mod upstream;
