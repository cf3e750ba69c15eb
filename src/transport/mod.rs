//! Transports: thin adapters between bytes on a wire and protocol values.

pub mod http;
pub mod native;
pub mod rtc;
