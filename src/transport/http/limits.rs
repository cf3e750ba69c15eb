//! The limits one HTTP client is held to (timeouts, sizes, connections),
//! from the `http_*` and `send_*` settings, in tiny_http's form.

use std::time::Duration;

use crate::config::{Config, Seconds};

/// The limits tiny_http's connection threads hold every client to; a zero
/// duration or count means no limit.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// For a request head once begun, and for a new connection's first byte.
    pub head_timeout: Duration,
    /// For one read of a request body.
    pub body_timeout: Duration,
    /// For a whole request body.
    pub body_deadline: Duration,
    /// Idle time between requests on a kept-alive connection.
    pub keep_alive_timeout: Duration,
    /// How long a write to a client may make no progress (SO_SNDTIMEO).
    pub send_timeout: Duration,
    /// SO_SNDBUF of accepted sockets in bytes (0: the system's default).
    pub send_buffer: usize,
    /// Live connections.
    pub max_connections: usize,
    /// Bytes of the request line.
    pub max_request_line: usize,
    /// Header fields of a request.
    pub max_headers: usize,
    /// Bytes of all header fields of a request.
    pub max_header_bytes: usize,
}

impl HttpLimits {
    /// The `http_*` and `send_*` settings.
    pub fn from_config(config: &Config) -> HttpLimits {
        let seconds = |s: Seconds| Duration::from_secs(s.0);
        HttpLimits {
            head_timeout: seconds(config.http_head_timeout),
            body_timeout: seconds(config.http_body_timeout),
            body_deadline: seconds(config.http_body_deadline),
            keep_alive_timeout: seconds(config.http_keep_alive_timeout),
            send_timeout: seconds(config.send_timeout),
            send_buffer: config.http_send_buffer,
            max_connections: config.http_max_connections,
            max_request_line: config.http_max_request_line,
            max_headers: config.http_max_headers,
            max_header_bytes: config.http_max_header_bytes,
        }
    }

    /// tiny_http's form of these limits, with the body limit beside them.
    pub(super) fn for_tiny_http(&self, max_body_bytes: u64) -> tiny_http::Limits {
        let time = |d: Duration| (!d.is_zero()).then_some(d);
        let count = |n: usize| if n == 0 { usize::MAX } else { n };
        tiny_http::Limits {
            head_timeout: time(self.head_timeout),
            body_timeout: time(self.body_timeout),
            body_deadline: time(self.body_deadline),
            keep_alive_timeout: time(self.keep_alive_timeout),
            send_timeout: time(self.send_timeout),
            max_connections: count(self.max_connections),
            max_request_line: count(self.max_request_line),
            max_headers: count(self.max_headers),
            max_header_bytes: count(self.max_header_bytes),
            max_body_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    /// `http_send_buffer` is set on the listener; that is right only because
    /// accepted sockets inherit SO_SNDBUF (Linux doubles the value asked for).
    #[test]
    fn accepted_sockets_inherit_the_send_buffer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let plain = {
            let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            socket2::SockRef::from(&accepted)
                .send_buffer_size()
                .unwrap()
        };
        socket2::SockRef::from(&listener)
            .set_send_buffer_size(4096)
            .unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let size = socket2::SockRef::from(&accepted)
            .send_buffer_size()
            .unwrap();
        assert!(
            size <= 2 * 4096 && size < plain,
            "{size} (without: {plain})"
        );
    }
}
