//! How a job's replies reach a data channel: framed on the pool thread, then
//! handed to the loop, with back-pressure so memory stays bounded.
//!
//! Each session has one [`Flow`]: the bytes queued for it and not yet taken
//! by SCTP. A job's chunk waits while that is above [`HIGH_WATER`] (which
//! pauses a token stream at the speed the peer reads); server push events
//! never wait and are dropped above [`PUSH_LIMIT`] instead. Nothing waits on
//! the loop thread itself, which is the one that drains the queue.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use str0m::channel::ChannelId;

use super::framing;
use super::server::RtcMessage;
use super::session::SessionId;
use crate::api::{Reply, Response};
use crate::event_loop::{LoopHandle, LoopMessage};
use crate::jobs::{ReplySink, lock};
use crate::stats::Stats;

/// Queued bytes above which a job's next chunk waits.
pub const HIGH_WATER: usize = 1 << 20;
/// Queued bytes above which push events are dropped.
pub const PUSH_LIMIT: usize = 4 * HIGH_WATER;

thread_local! {
    static ON_LOOP: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as the event loop's (it must never wait on a Flow).
pub fn mark_loop_thread() {
    ON_LOOP.with(|on| on.set(true));
}

/// A session's queued bytes, shared by its sinks and the loop.
#[derive(Default)]
pub struct Flow {
    queued: Mutex<usize>,
    drained: Condvar,
    closed: AtomicBool,
}

impl Flow {
    /// Counts bytes queued.
    pub fn add(&self, bytes: usize) {
        *lock(&self.queued) += bytes;
    }

    /// Counts bytes taken by SCTP (or dropped) and wakes waiting jobs.
    pub fn release(&self, bytes: usize) {
        let mut queued = lock(&self.queued);
        *queued = queued.saturating_sub(bytes);
        self.drained.notify_all();
    }

    /// The session is gone: every sink reports its client gone.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _queued = lock(&self.queued);
        self.drained.notify_all();
    }

    /// Whether the session still exists.
    pub fn is_open(&self) -> bool {
        !self.closed.load(Ordering::SeqCst)
    }

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        *lock(&self.queued)
    }

    /// Waits until the queue is at most `limit`; false when the session closed.
    fn wait_below(&self, limit: usize) -> bool {
        if ON_LOOP.with(Cell::get) {
            return self.is_open();
        }
        let mut queued = lock(&self.queued);
        loop {
            if !self.is_open() {
                return false;
            }
            if *queued <= limit {
                return true;
            }
            // A timed wait: a close between the check and the wait cannot hang us.
            queued = self
                .drained
                .wait_timeout(queued, Duration::from_millis(200))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }
}

/// Delivers one request's replies to the channel it came on.
pub struct RtcSink {
    /// The loop.
    pub handle: LoopHandle,
    /// The session.
    pub session: SessionId,
    /// The channel the request came on.
    pub channel: ChannelId,
    /// The session's queue.
    pub flow: Arc<Flow>,
    /// The largest message the peer takes.
    pub frame_limit: usize,
    /// When the request arrived.
    pub started: Instant,
    /// Where latency is recorded.
    pub stats: Arc<Stats>,
}

impl ReplySink for RtcSink {
    fn deliver(&self, reply: Reply) -> bool {
        if reply.response.is_final() {
            let failed = matches!(reply.response, Response::Error { .. });
            self.stats.record_reply(self.started.elapsed(), failed);
        }
        let push = matches!(reply.response, Response::Event(_) | Response::Subscribed(_));
        if push {
            if !self.flow.is_open() {
                return false;
            }
            if self.flow.queued() > PUSH_LIMIT {
                log::warn!(
                    "session {} reads too slowly: an event was dropped",
                    self.session
                );
                return true;
            }
        } else if !self.flow.wait_below(HIGH_WATER) {
            return false;
        }
        let frames = framing::encode(&reply, self.frame_limit);
        let bytes = frames.iter().map(Vec::len).sum();
        self.flow.add(bytes);
        let message = RtcMessage::Frames {
            session: self.session.clone(),
            channel: self.channel,
            frames,
            bytes,
        };
        self.handle.send(LoopMessage::Rtc(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_holds_jobs_back_until_drained_or_closed() {
        let flow = Arc::new(Flow::default());
        flow.add(HIGH_WATER + 1);
        let waiter = {
            let flow = Arc::clone(&flow);
            std::thread::spawn(move || flow.wait_below(HIGH_WATER))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "a job waits while the queue is full");
        flow.release(2);
        assert!(waiter.join().unwrap(), "draining lets it go on");

        flow.add(HIGH_WATER * 2);
        let waiter = {
            let flow = Arc::clone(&flow);
            std::thread::spawn(move || flow.wait_below(HIGH_WATER))
        };
        std::thread::sleep(Duration::from_millis(50));
        flow.close();
        assert!(!waiter.join().unwrap(), "a closed session stops the job");

        // The loop thread itself never waits.
        let open = Arc::new(Flow::default());
        open.add(HIGH_WATER * 2);
        mark_loop_thread();
        assert!(open.wait_below(HIGH_WATER));
    }
}
