//! Patched (not in tiny_http 0.12.0): the limits a server puts on its
//! clients, and the cap on live connections.
//!
//! Every limit has a default close to nginx's; see vendor/README.md.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What one client may cost the server. `None` durations and `usize::MAX` /
/// `u64::MAX` sizes mean no limit.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time for a whole request head (request line and headers) once its
    /// first byte has arrived; also how long a new connection may stay
    /// silent. Over it: 408, then the connection closes.
    pub head_timeout: Option<Duration>,
    /// Time one read of a request body may wait for data. Over it: 408, close.
    pub body_timeout: Option<Duration>,
    /// Time for a whole request body. Over it: 408, close.
    pub body_deadline: Option<Duration>,
    /// Idle time after a response before the next request must begin on a
    /// kept-alive connection; the connection then closes without an answer.
    pub keep_alive_timeout: Option<Duration>,
    /// Time a write to a client may make no progress (SO_SNDTIMEO on every
    /// accepted socket); the write then fails.
    pub send_timeout: Option<Duration>,
    /// Live connections; at the cap the server stops accepting until one
    /// closes (the kernel's backlog holds the rest).
    pub max_connections: usize,
    /// Bytes of the request line. Over it: 414, close.
    pub max_request_line: usize,
    /// Header fields in a request head (trailers of a chunked body included).
    /// Over it: 431, close.
    pub max_headers: usize,
    /// Bytes of all header lines together. Over it: 431, close.
    pub max_header_bytes: usize,
    /// Bytes of a request body. A longer `Content-Length` gets 413 without
    /// a byte of the body being read; a chunked body that grows past it
    /// likewise; then the connection closes.
    pub max_body_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            head_timeout: Some(Duration::from_secs(10)),
            body_timeout: Some(Duration::from_secs(30)),
            body_deadline: Some(Duration::from_secs(120)),
            keep_alive_timeout: Some(Duration::from_secs(15)),
            send_timeout: Some(Duration::from_secs(30)),
            max_connections: 256,
            max_request_line: 8 << 10,
            max_headers: 100,
            max_header_bytes: 64 << 10,
            max_body_bytes: 64 << 20,
        }
    }
}

/// The count of live connections under a cap.
pub(crate) struct Slots {
    live: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

/// One connection's place under the cap, given back when dropped.
pub(crate) struct ConnectionSlot(Arc<Slots>);

impl Slots {
    pub(crate) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            live: Mutex::new(0),
            freed: Condvar::new(),
            max: max.max(1),
        })
    }

    /// Waits for a free place; `None` once `closing` is set (checked every
    /// 100 ms, so a server being dropped is never held up for long).
    pub(crate) fn acquire(self: &Arc<Self>, closing: &AtomicBool) -> Option<ConnectionSlot> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if closing.load(Ordering::Relaxed) {
                return None;
            }
            if *live < self.max {
                *live += 1;
                return Some(ConnectionSlot(Arc::clone(self)));
            }
            live = self
                .freed
                .wait_timeout(live, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut live = self.0.live.lock().unwrap_or_else(|e| e.into_inner());
        *live -= 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn the_cap_holds_until_a_place_frees() {
        let slots = Slots::new(2);
        let closing = AtomicBool::new(false);
        let a = slots.acquire(&closing).unwrap();
        let _b = slots.acquire(&closing).unwrap();
        let waiter = {
            let slots = slots.clone();
            std::thread::spawn(move || slots.acquire(&AtomicBool::new(false)).is_some())
        };
        std::thread::sleep(std::time::Duration::from_millis(150));
        assert!(
            !waiter.is_finished(),
            "a third place was given at a cap of two"
        );
        drop(a);
        assert!(waiter.join().unwrap());
        closing.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(slots.acquire(&closing).is_none());
    }
}
