//! Work that may take longer than a millisecond: rayon pools, a bounded queue
//! in front of each, cancel flags by request id, and panics turned into replies.
//!
//! A [`Job`] is a closure the handler builds; [`Jobs::submit`] runs it on its
//! lane's pool and delivers every chunk and the final reply to the
//! [`ReplySink`] of the transport the request came from. A full lane answers
//! 503 with Retry-After at once: a client never waits on an invisible queue.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::api::{HaltStatus, Reply, RequestId, Response};
use crate::error::ApiError;

/// Where a transport wants the replies of one request to go.
pub trait ReplySink: Send + Sync {
    /// Delivers one reply (chunk or final). Returns false when the client is
    /// gone, which cancels the request.
    fn deliver(&self, reply: Reply) -> bool;

    /// Whether the client is still there, asked between tokens that show no
    /// text (nothing to deliver, so a hang-up would go unnoticed). Sinks that
    /// learn of a hang-up from their transport keep this default.
    fn is_present(&self) -> bool {
        true
    }
}

/// Which pool a job runs on: model work must not starve quick store work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Inference: generation, embedding and model loading (one thread).
    Model,
    /// Everything else that touches the disk or the network: database reads
    /// and writes, model downloads.
    Io,
}

/// A job's body: runs once on a pool thread and returns the final reply.
type Work = Box<dyn FnOnce(&JobContext) -> Result<Response, ApiError> + Send>;

/// A unit of work built by the handler.
pub struct Job {
    lane: Lane,
    work: Work,
}

impl Job {
    /// A job on `lane` that returns its final reply (chunks go through the context).
    pub fn new(
        lane: Lane,
        work: impl FnOnce(&JobContext) -> Result<Response, ApiError> + Send + 'static,
    ) -> Job {
        Job {
            lane,
            work: Box::new(work),
        }
    }
}

/// What a running job sees: its cancel flag and a way to stream chunks.
pub struct JobContext {
    id: RequestId,
    cancel: Arc<AtomicBool>,
    sink: Arc<dyn ReplySink>,
}

impl JobContext {
    /// Sends a chunk; false (and the job is cancelled) when the client is gone.
    pub fn emit(&self, response: Response) -> bool {
        let delivered = self.sink.deliver(Reply {
            id: self.id.clone(),
            response,
        });
        if !delivered {
            self.cancel.store(true, Ordering::Relaxed);
        }
        delivered
    }

    /// Whether the client is still there; false (and the job is cancelled)
    /// when it has gone. For stretches with nothing to [`emit`](Self::emit).
    pub fn client_present(&self) -> bool {
        let present = self.sink.is_present();
        if !present {
            self.cancel.store(true, Ordering::Relaxed);
        }
        present
    }

    /// Whether StopGeneration named this request or its client went away.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The flag itself, for engines that poll it in an inner loop.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }
}

struct LanePool {
    pool: rayon::ThreadPool,
    /// Jobs accepted and not yet finished (queued + running).
    in_flight: Arc<AtomicUsize>,
    capacity: usize,
}

/// The pools and the registry of running requests.
pub struct Jobs {
    model: LanePool,
    io: LanePool,
    /// Cancel flags of running jobs by request id key. Ids are the clients'
    /// own, so several requests may share one; all are stopped together.
    running: Arc<Mutex<HashMap<String, Vec<Arc<AtomicBool>>>>>,
}

/// Sizes of the pools and their queues.
#[derive(Debug, Clone, Copy)]
pub struct JobLimits {
    /// Threads for model work.
    pub model_threads: usize,
    /// Threads for disk work.
    pub io_threads: usize,
    /// Jobs a lane accepts before it answers 503.
    pub queue_capacity: usize,
}

impl Jobs {
    /// Starts the pools.
    pub fn new(limits: JobLimits) -> Result<Jobs, String> {
        Ok(Jobs {
            model: LanePool::new("model", limits.model_threads, limits.queue_capacity)?,
            io: LanePool::new("io", limits.io_threads, limits.queue_capacity)?,
            running: Arc::default(),
        })
    }

    /// Runs `job` for request `id`; its replies go to `sink`. Errs with a 503
    /// when the lane's queue is full.
    pub fn submit(
        &self,
        id: RequestId,
        job: Job,
        sink: Arc<dyn ReplySink>,
    ) -> Result<(), ApiError> {
        let lane = match job.lane {
            Lane::Model => &self.model,
            Lane::Io => &self.io,
        };
        let queued = lane.in_flight.fetch_add(1, Ordering::AcqRel);
        if queued >= lane.capacity {
            lane.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::busy(
                format!("{queued} requests are already waiting; try again shortly"),
                1,
            ));
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let key = id.key();
        lock(&self.running)
            .entry(key.clone())
            .or_default()
            .push(Arc::clone(&cancel));
        let running = Arc::clone(&self.running);
        let in_flight = Arc::clone(&lane.in_flight);
        lane.pool.spawn(move || {
            let context = JobContext { id, cancel, sink };
            let response = match catch_unwind(AssertUnwindSafe(|| (job.work)(&context))) {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => Response::error(error),
                Err(panic) => {
                    let what = panic_message(&panic);
                    log::error!("a job panicked: {what}");
                    Response::error(ApiError::internal(format!("the request failed: {what}")))
                }
            };
            forget(&running, &key, &context.cancel);
            context.sink.deliver(Reply {
                id: context.id.clone(),
                response,
            });
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
        Ok(())
    }

    /// Sets the cancel flag of every running request with this id.
    pub fn stop(&self, target: &RequestId) -> HaltStatus {
        let flags = lock(&self.running)
            .get(&target.key())
            .cloned()
            .unwrap_or_default();
        for flag in &flags {
            flag.store(true, Ordering::Relaxed);
        }
        HaltStatus {
            target_id: target.clone(),
            state: if flags.is_empty() {
                "unknown"
            } else {
                "stopping"
            }
            .into(),
        }
    }

    /// Where the request with this id stands.
    pub fn status(&self, target: &RequestId) -> HaltStatus {
        let flags = lock(&self.running)
            .get(&target.key())
            .cloned()
            .unwrap_or_default();
        let state = match flags.iter().any(|f| f.load(Ordering::Relaxed)) {
            _ if flags.is_empty() => "unknown",
            true => "stopping",
            false => "running",
        };
        HaltStatus {
            target_id: target.clone(),
            state: state.into(),
        }
    }

    /// Jobs accepted and not yet finished, over both lanes.
    pub fn in_flight(&self) -> usize {
        self.model.in_flight.load(Ordering::Acquire) + self.io.in_flight.load(Ordering::Acquire)
    }
}

impl LanePool {
    fn new(name: &'static str, threads: usize, capacity: usize) -> Result<LanePool, String> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(move |i| format!("{name}-{i}"))
            .build()
            .map_err(|e| format!("cannot start the {name} pool: {e}"))?;
        Ok(LanePool {
            pool,
            in_flight: Arc::default(),
            capacity: capacity.max(1),
        })
    }
}

fn forget(
    running: &Mutex<HashMap<String, Vec<Arc<AtomicBool>>>>,
    key: &str,
    flag: &Arc<AtomicBool>,
) {
    let mut running = lock(running);
    if let Some(flags) = running.get_mut(key) {
        flags.retain(|f| !Arc::ptr_eq(f, flag));
        if flags.is_empty() {
            running.remove(key);
        }
    }
}

/// Locks a mutex, recovering from poisoning: every value we guard stays
/// consistent between statements, so a panic elsewhere leaves it usable.
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The text of a panic payload.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ChatChunk;
    use std::sync::mpsc;
    use std::time::Duration;

    struct ChannelSink(Mutex<mpsc::Sender<Reply>>);

    impl ReplySink for ChannelSink {
        fn deliver(&self, reply: Reply) -> bool {
            lock(&self.0).send(reply).is_ok()
        }
    }

    fn sink() -> (Arc<dyn ReplySink>, mpsc::Receiver<Reply>) {
        let (tx, rx) = mpsc::channel();
        (Arc::new(ChannelSink(Mutex::new(tx))), rx)
    }

    fn jobs(capacity: usize) -> Jobs {
        Jobs::new(JobLimits {
            model_threads: 1,
            io_threads: 1,
            queue_capacity: capacity,
        })
        .unwrap()
    }

    #[test]
    fn a_panicking_job_becomes_a_500_reply() {
        let jobs = jobs(4);
        let (sink, rx) = sink();
        jobs.submit(
            RequestId::text("p"),
            Job::new(Lane::Io, |_| panic!("boom")),
            sink,
        )
        .unwrap();
        let reply = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        match reply.response {
            Response::Error { error } => {
                assert_eq!(error.status, 500);
                assert!(error.detail.contains("boom"));
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn stop_cancels_a_running_job_by_id() {
        let jobs = jobs(4);
        let (sink, rx) = sink();
        let job = Job::new(Lane::Model, |ctx| {
            while !ctx.is_cancelled() {
                ctx.emit(Response::ChatChunk(ChatChunk { delta: "x".into() }));
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(Response::Stopped(HaltStatus {
                target_id: RequestId::text("g"),
                state: "cancelled".into(),
            }))
        });
        jobs.submit(RequestId::text("g"), job, sink).unwrap();
        assert!(
            rx.recv_timeout(Duration::from_secs(5)).is_ok(),
            "a chunk arrives"
        );
        assert_eq!(jobs.status(&RequestId::text("g")).state, "running");
        assert_eq!(jobs.stop(&RequestId::text("g")).state, "stopping");
        let last = rx.iter().find(|r| r.response.is_final()).unwrap();
        assert!(matches!(last.response, Response::Stopped(_)));
        assert_eq!(jobs.status(&RequestId::text("g")).state, "unknown");
    }

    #[test]
    fn a_full_lane_answers_503_with_retry_after() {
        let jobs = jobs(1);
        let (sink, _rx) = sink();
        let (release, wait) = mpsc::channel::<()>();
        let wait = Mutex::new(wait);
        let blocker = Job::new(Lane::Model, move |_| {
            let _ = lock(&wait).recv();
            Ok(Response::Stopped(HaltStatus {
                target_id: RequestId::NONE,
                state: "done".into(),
            }))
        });
        jobs.submit(RequestId::text("a"), blocker, Arc::clone(&sink))
            .unwrap();
        let refused = jobs.submit(
            RequestId::text("b"),
            Job::new(Lane::Model, |_| unreachable!()),
            sink,
        );
        let error = refused.expect_err("the second job is refused");
        assert_eq!((error.status, error.retry_after), (503, Some(1)));
        release.send(()).unwrap();
    }
}
