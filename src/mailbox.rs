//! How other threads reach the event loop: a channel and the loop's `Waker`.
//!
//! It sits below both the event loop and the transports, so a transport can
//! hand work to the loop (WebRTC signaling, "this session has frames to
//! send") without importing the loop itself. Each kind of message has a
//! mailbox of its own; all of them share the loop's one waker.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

use mio::Waker;

/// A sender of `T`s to the loop that wakes it.
pub struct Mailbox<T> {
    sender: Sender<T>,
    waker: Arc<Waker>,
}

impl<T> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        Mailbox {
            sender: self.sender.clone(),
            waker: Arc::clone(&self.waker),
        }
    }
}

impl<T> Mailbox<T> {
    /// A mailbox waking `waker`, and the receiver the loop drains.
    pub fn new(waker: Arc<Waker>) -> (Mailbox<T>, Receiver<T>) {
        let (sender, receiver) = mpsc::channel();
        (Mailbox { sender, waker }, receiver)
    }

    /// Queues a message and wakes the loop; false when the loop has ended.
    pub fn send(&self, message: T) -> bool {
        self.sender.send(message).is_ok() && self.waker.wake().is_ok()
    }

    /// Wakes the loop without a message (it then looks at its outboxes).
    pub fn wake(&self) -> bool {
        self.waker.wake().is_ok()
    }

    /// The waker, for outboxes that only need to wake the loop.
    pub fn waker(&self) -> &Arc<Waker> {
        &self.waker
    }
}
