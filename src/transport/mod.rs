//! Transports: thin adapters between bytes on a wire and protocol values.
//! Each turns bytes into `(connection, request)` for [`serve`], the one serve
//! path, and drains its own outboxes.

pub mod http;
pub mod native;
pub mod native_port;
pub mod rtc;
pub mod serve;
