//! Bounded outboxes: where a reply stream waits for its transport.
//!
//! The thread that makes a reply (a model job, the SQLite writer, the event
//! bus) only pushes it into the outbox of the stream it belongs to and never
//! touches a socket or waits on a peer; the transport's own thread drains the
//! outbox (the event loop for native messaging and WebRTC, a writer thread
//! per streamed HTTP response). Two bounds keep a slow reader from costing
//! anyone else: bytes queued, and time without progress. Past either, the
//! stream is ended: what was queued is dropped, a last item saying why (the
//! stream's *farewell*, made by the transport) takes its place, and every
//! later push fails, which stops the job or drops the subscriber. A stream's
//! last item is never refused for its size (a large history page is framed
//! in parts and only the time bound applies to it).

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::jobs::lock;

/// The bounds of one stream's outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Bytes a stream may have queued (its last item excepted).
    pub max_bytes: usize,
    /// Time queued items may wait without the reader taking any.
    pub stall: Duration,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            max_bytes: 4 << 20,
            stall: Duration::from_secs(30),
        }
    }
}

/// Why a stream ended before its last item was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The reader left (or the connection closed).
    Gone,
    /// This many bytes were waiting, over the bound.
    Overflow(usize),
    /// The reader took nothing for this long.
    Stalled(Duration),
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Gone => write!(f, "the client is gone"),
            Ended::Overflow(bytes) => write!(
                f,
                "the client reads too slowly: {bytes} bytes of this stream were waiting for it"
            ),
            Ended::Stalled(time) => write!(
                f,
                "the client read nothing of this stream for {} s",
                time.as_secs()
            ),
        }
    }
}

impl Ended {
    /// The error a stream's reader gets as its last reply.
    pub fn error(&self) -> ApiError {
        ApiError::new(408, "slow-reader", "Reader too slow", self.to_string())
    }
}

/// What [`Outbox::offer_front`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Nothing is queued.
    Empty,
    /// The front item was taken; `true` when it was the stream's last.
    Taken(bool),
    /// The transport could not take it now (its buffer is full).
    Refused,
}

/// What [`Outbox::wait_pop`] found.
pub enum Popped<T> {
    /// The next item; `true` when it is the stream's last.
    Item(T, bool),
    /// Nothing arrived within the wait.
    Idle,
    /// The stream is over: its last item was taken, or the reader left.
    Done,
}

struct Item<T> {
    value: T,
    bytes: usize,
    last: bool,
}

struct State<T> {
    items: VecDeque<Item<T>>,
    bytes: usize,
    /// When the reader last took an item (or the queue last became non-empty).
    progress: Instant,
    ended: Option<Ended>,
    /// The stream was stopped: only its last item is still taken.
    muted: bool,
    /// The stream's last item was taken.
    finished: bool,
}

/// Makes a stream's farewell: its last item and that item's size.
type Farewell<T> = Box<dyn Fn(&Ended) -> (T, usize) + Send + Sync>;

/// One reply stream's queue of encoded items.
pub struct Outbox<T> {
    state: Mutex<State<T>>,
    limits: OutboxLimits,
    /// Tells the draining thread that there is something to do.
    notify: Box<dyn Fn() + Send + Sync>,
    farewell: Farewell<T>,
    /// Wakes a drainer blocked in [`Outbox::wait_pop`].
    ready: Condvar,
}

impl<T> Outbox<T> {
    /// An empty outbox; `notify` runs (outside the lock) when the queue goes
    /// from empty to not, or the stream ends; `farewell` makes the last item
    /// of a stream ended by a bound.
    pub fn new(
        limits: OutboxLimits,
        now: Instant,
        notify: impl Fn() + Send + Sync + 'static,
        farewell: impl Fn(&Ended) -> (T, usize) + Send + Sync + 'static,
    ) -> Outbox<T> {
        Outbox {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                progress: now,
                ended: None,
                muted: false,
                finished: false,
            }),
            limits,
            notify: Box::new(notify),
            farewell: Box::new(farewell),
            ready: Condvar::new(),
        }
    }

    /// Queues an item of `bytes` bytes; `last` marks the stream's final one.
    /// Errs (and the item is dropped) when the stream has ended, or ends it
    /// now because the reader is too far behind.
    pub fn push(&self, value: T, bytes: usize, last: bool, now: Instant) -> Result<(), Ended> {
        self.push_parts(std::iter::once((value, bytes)), last, now)
    }

    /// Queues one reply sent as several items (a message framed in parts),
    /// all or none; `last` makes the final part the stream's last item.
    pub fn push_parts(
        &self,
        parts: impl IntoIterator<Item = (T, usize)>,
        last: bool,
        now: Instant,
    ) -> Result<(), Ended> {
        let parts: Vec<(T, usize)> = parts.into_iter().collect();
        let bytes: usize = parts.iter().map(|(_, n)| n).sum();
        let mut state = lock(&self.state);
        if let Some(ended) = state.ended {
            return Err(ended);
        }
        if state.muted && !last {
            return Err(Ended::Gone);
        }
        if !last && state.bytes + bytes > self.limits.max_bytes {
            let ended = Ended::Overflow(state.bytes + bytes);
            self.end_locked(&mut state, ended);
            drop(state);
            self.wake();
            return Err(ended);
        }
        let was_empty = state.items.is_empty();
        if was_empty {
            state.progress = now;
        }
        state.bytes += bytes;
        let count = parts.len();
        for (i, (value, bytes)) in parts.into_iter().enumerate() {
            state.items.push_back(Item {
                value,
                bytes,
                last: last && i + 1 == count,
            });
        }
        drop(state);
        if was_empty {
            self.wake();
        }
        Ok(())
    }

    /// The stream was stopped: what waits is dropped, and from now on only
    /// its last item is taken. Under the lock, so that once this returns no
    /// chunk of the stream can follow what the stopper says next.
    pub fn mute(&self) {
        let mut state = lock(&self.state);
        state.muted = true;
        state.items.retain(|item| item.last);
        state.bytes = state.items.iter().map(|item| item.bytes).sum();
    }

    /// The reader left: everything queued is dropped, pushes fail from now on.
    pub fn close(&self) {
        let mut state = lock(&self.state);
        state.items.clear();
        state.bytes = 0;
        state.ended = Some(Ended::Gone);
        drop(state);
        self.wake();
    }

    /// Ends the stream if its reader took nothing for the time bound while
    /// items waited; a farewell that waits as long again is dropped too.
    /// Returns whether the drainer may forget this outbox.
    pub fn check_stall(&self, now: Instant) -> bool {
        let mut state = lock(&self.state);
        let waited = now.saturating_duration_since(state.progress);
        if !state.items.is_empty() && waited >= self.limits.stall {
            if state.ended.is_none() {
                self.end_locked(&mut state, Ended::Stalled(waited));
                state.progress = now;
            } else {
                state.items.clear();
                state.bytes = 0;
                state.ended = Some(Ended::Gone);
            }
        }
        let done = Self::is_done_locked(&state);
        drop(state);
        self.ready.notify_all();
        done
    }

    /// When [`Outbox::check_stall`] should look next, if anything waits.
    pub fn stall_deadline(&self) -> Option<Instant> {
        let state = lock(&self.state);
        // No deadline when the bound is "never" (it would overflow).
        (!state.items.is_empty())
            .then(|| state.progress.checked_add(self.limits.stall))
            .flatten()
    }

    /// Offers the front item to `take` (a transport's non-blocking write),
    /// which returns whether it took it; taken items leave the queue.
    pub fn offer_front(&self, now: Instant, take: impl FnOnce(&T) -> bool) -> Offered {
        let mut state = lock(&self.state);
        let Some(front) = state.items.front() else {
            return Offered::Empty;
        };
        if !take(&front.value) {
            return Offered::Refused;
        }
        // The front item exists: it was just offered.
        let item = state.items.pop_front().expect("front item");
        state.bytes -= item.bytes;
        state.progress = now;
        state.finished |= item.last;
        Offered::Taken(item.last)
    }

    /// Takes the next item if there is one.
    pub fn pop(&self, now: Instant) -> Option<(T, bool)> {
        let mut state = lock(&self.state);
        let item = state.items.pop_front()?;
        state.bytes -= item.bytes;
        state.progress = now;
        state.finished |= item.last;
        Some((item.value, item.last))
    }

    /// Takes the next item, waiting at most `timeout` for one (a writer
    /// thread of its own drains this way).
    pub fn wait_pop(&self, timeout: Duration) -> Popped<T> {
        let mut state = lock(&self.state);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(item) = state.items.pop_front() {
                state.bytes -= item.bytes;
                state.progress = Instant::now();
                state.finished |= item.last;
                return Popped::Item(item.value, item.last);
            }
            if Self::is_done_locked(&state) {
                return Popped::Done;
            }
            let now = Instant::now();
            if now >= deadline {
                return Popped::Idle;
            }
            state = self
                .ready
                .wait_timeout(state, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }

    /// Whether pushes are still taken (the stream has not ended).
    pub fn is_open(&self) -> bool {
        lock(&self.state).ended.is_none()
    }

    /// Whether the stream is over and nothing is left to send.
    pub fn is_done(&self) -> bool {
        Self::is_done_locked(&lock(&self.state))
    }

    fn is_done_locked(state: &State<T>) -> bool {
        state.items.is_empty() && (state.finished || state.ended.is_some())
    }

    /// Drops what waits and queues the farewell in its place.
    fn end_locked(&self, state: &mut State<T>, ended: Ended) {
        let (value, bytes) = (self.farewell)(&ended);
        state.items.clear();
        state.items.push_back(Item {
            value,
            bytes,
            last: true,
        });
        state.bytes = bytes;
        state.ended = Some(ended);
    }

    fn wake(&self) {
        self.ready.notify_all();
        (self.notify)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn outbox(max_bytes: usize, stall: Duration) -> (Outbox<String>, Arc<AtomicUsize>) {
        let wakes = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&wakes);
        let outbox = Outbox::new(
            OutboxLimits { max_bytes, stall },
            Instant::now(),
            move || {
                counter.fetch_add(1, Ordering::SeqCst);
            },
            |why: &Ended| (format!("bye: {why}"), 10),
        );
        (outbox, wakes)
    }

    fn take_all(outbox: &Outbox<String>) -> Vec<String> {
        let mut taken = Vec::new();
        while outbox.offer_front(Instant::now(), |item| {
            taken.push(item.clone());
            true
        }) != Offered::Empty
        {}
        taken
    }

    #[test]
    fn items_flow_in_order_and_the_last_one_finishes_the_stream() {
        let (outbox, wakes) = outbox(100, Duration::from_secs(5));
        let now = Instant::now();
        outbox.push("a".into(), 1, false, now).unwrap();
        outbox.push("b".into(), 1, false, now).unwrap();
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            1,
            "woken once, on empty -> not"
        );
        outbox.push("end".into(), 3, true, now).unwrap();
        assert!(!outbox.is_done());
        assert_eq!(take_all(&outbox), ["a", "b", "end"]);
        assert!(outbox.is_done());
    }

    #[test]
    fn a_reader_too_far_behind_ends_the_stream_with_a_farewell() {
        let (outbox, _) = outbox(10, Duration::from_secs(5));
        let now = Instant::now();
        outbox.push("123456".into(), 6, false, now).unwrap();
        let refused = outbox.push("789012".into(), 6, false, now);
        assert_eq!(refused, Err(Ended::Overflow(12)));
        assert_eq!(
            outbox.push("more".into(), 1, false, now),
            Err(Ended::Overflow(12)),
            "every later push fails, so the producer stops"
        );
        let taken = take_all(&outbox);
        assert_eq!(taken.len(), 1, "what waited was dropped: {taken:?}");
        assert!(taken[0].contains("too slowly"), "{taken:?}");
        assert!(outbox.is_done());
    }

    #[test]
    fn a_last_item_is_never_refused_for_its_size() {
        let (outbox, _) = outbox(10, Duration::from_secs(5));
        outbox
            .push("big page".into(), 1000, true, Instant::now())
            .unwrap();
        assert_eq!(take_all(&outbox), ["big page"]);
    }

    #[test]
    fn a_stalled_reader_ends_the_stream_then_is_forgotten() {
        let (outbox, _) = outbox(100, Duration::from_millis(50));
        let start = Instant::now();
        outbox.push("a".into(), 1, false, start).unwrap();
        assert!(!outbox.check_stall(start + Duration::from_millis(10)));
        assert!(outbox.is_open());
        assert!(!outbox.check_stall(start + Duration::from_millis(60)));
        assert!(!outbox.is_open(), "the stall ended the stream");
        assert!(matches!(
            outbox.push("b".into(), 1, false, start),
            Err(Ended::Stalled(_))
        ));
        assert!(
            outbox.check_stall(start + Duration::from_millis(200)),
            "a farewell nobody reads is dropped too"
        );
        assert!(outbox.is_done());
    }

    #[test]
    fn a_muted_stream_drops_its_chunks_but_not_its_last_item() {
        let (outbox, _) = outbox(100, Duration::from_secs(5));
        let now = Instant::now();
        outbox.push("a".into(), 1, false, now).unwrap();
        outbox.mute();
        assert_eq!(outbox.push("b".into(), 1, false, now), Err(Ended::Gone));
        outbox.push("done".into(), 4, true, now).unwrap();
        assert_eq!(take_all(&outbox), ["done"]);
    }

    #[test]
    fn refused_items_stay_and_a_closed_stream_takes_nothing() {
        let (outbox, _) = outbox(100, Duration::from_secs(5));
        outbox.push("a".into(), 1, false, Instant::now()).unwrap();
        assert_eq!(
            outbox.offer_front(Instant::now(), |_| false),
            Offered::Refused
        );
        assert_eq!(take_all(&outbox), ["a"]);
        outbox.close();
        assert_eq!(
            outbox.push("b".into(), 1, false, Instant::now()),
            Err(Ended::Gone)
        );
        assert!(outbox.is_done());
    }

    #[test]
    fn a_waiting_writer_gets_items_pushed_from_another_thread() {
        let (outbox, _) = outbox(100, Duration::from_secs(5));
        let outbox = Arc::new(outbox);
        let producer = {
            let outbox = Arc::clone(&outbox);
            std::thread::spawn(move || {
                outbox.push("x".into(), 1, false, Instant::now()).unwrap();
                outbox.push("y".into(), 1, true, Instant::now()).unwrap();
            })
        };
        let mut got = Vec::new();
        loop {
            match outbox.wait_pop(Duration::from_secs(5)) {
                Popped::Item(item, _) => got.push(item),
                Popped::Idle => panic!("nothing arrived"),
                Popped::Done => break,
            }
        }
        producer.join().unwrap();
        assert_eq!(got, ["x", "y"]);
    }
}
