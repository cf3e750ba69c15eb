//! Work that may take longer than a millisecond: rayon pools, a bounded queue
//! in front of each, server job ids with cancel flags, and panics turned into
//! replies.
//!
//! A [`Job`] is a closure the handler builds; [`Jobs::submit`] gives it a
//! random [`JobId`], runs it on its lane's pool and delivers every chunk and
//! the final reply to the [`ReplySink`] of the transport the request came
//! from (the first reply carries the job id). A full lane answers 503 with
//! Retry-After at once: a client never waits on an invisible queue.
//!
//! Ids are the server's: a job can be stopped from any connection by its job
//! id, which cannot be guessed; a client's own request id is a label that
//! reaches only the jobs of the connection that sent it.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::api::{HaltStatus, JobId, Reply, RequestId, Response, TargetRequest};
use crate::error::ApiError;

/// One client connection as the server sees it: a native messaging port, a
/// data channel session, an HTTP request. Request ids are scoped by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(u64);

impl ConnectionId {
    /// An id [`ConnectionId::next`] never gives out (for tests of one client).
    pub const FIRST: ConnectionId = ConnectionId(0);

    /// A connection id not given out before in this process.
    pub fn next() -> ConnectionId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnectionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

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

    /// The request was stopped: chunks not yet sent are dropped and no more
    /// are taken, so none follows the stop's acknowledgement; the final
    /// reply still goes out. Sinks without a queue keep this default.
    fn mute(&self) {}
}

/// Which pool a job runs on: model work must not starve quick store work,
/// and generation must not starve embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Inference other than generation: embedding and model loading (one thread).
    Model,
    /// Generation (chat, completions): a job mostly waits for its model's
    /// thread, which batches the tokens of every running request, so this
    /// pool has a thread per request a model may run at once and then some.
    Generate,
    /// Everything else that touches the disk or the network: database reads
    /// and writes, model downloads.
    Io,
    /// Requests relayed to an upstream server: a thread of its own per job
    /// (it mostly waits on the network), so neither pool waits behind them;
    /// each upstream's cap bounds how many talk to it at once.
    Relay,
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
    job: JobId,
    /// Whether a reply went out yet (the first one carries the job id).
    replied: AtomicBool,
    cancel: Arc<AtomicBool>,
    sink: Arc<dyn ReplySink>,
}

impl JobContext {
    /// Sends a chunk; false (and the job is cancelled) when the client is
    /// gone or the job was stopped.
    pub fn emit(&self, response: Response) -> bool {
        if self.is_cancelled() {
            return false;
        }
        let delivered = self.sink.deliver(self.reply(response));
        if !delivered {
            self.cancel.store(true, Ordering::Relaxed);
        }
        delivered
    }

    /// This job's server id.
    pub fn job_id(&self) -> JobId {
        self.job
    }

    /// A reply to the job's request; the first one names the job.
    fn reply(&self, response: Response) -> Reply {
        let first = !self.replied.swap(true, Ordering::Relaxed);
        Reply {
            id: self.id.clone(),
            job_id: first.then_some(self.job),
            response,
        }
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

/// A job in the registry: whose it is and how to stop it.
struct Running {
    connection: ConnectionId,
    /// The client's request id, as [`RequestId::key`].
    client_key: String,
    cancel: Arc<AtomicBool>,
    sink: Arc<dyn ReplySink>,
}

type Registry = Arc<Mutex<HashMap<JobId, Running>>>;

/// A job [`Jobs::find`] matched: its id, cancel flag and sink.
type Found = (JobId, Arc<AtomicBool>, Arc<dyn ReplySink>);

/// The pools and the registry of running requests.
pub struct Jobs {
    model: LanePool,
    generate: LanePool,
    io: LanePool,
    /// Relay jobs accepted and not finished (each on its own thread).
    relay: Arc<AtomicUsize>,
    capacity: usize,
    running: Registry,
}

/// Sizes of the pools and their queues.
#[derive(Debug, Clone, Copy)]
pub struct JobLimits {
    /// Threads for model work.
    pub model_threads: usize,
    /// Threads for generation jobs (they wait on the model's thread).
    pub generate_threads: usize,
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
            generate: LanePool::new("generate", limits.generate_threads, limits.queue_capacity)?,
            io: LanePool::new("io", limits.io_threads, limits.queue_capacity)?,
            relay: Arc::default(),
            capacity: limits.queue_capacity.max(1),
            running: Arc::default(),
        })
    }

    /// Runs `job` for request `id` of `connection`; its replies go to
    /// `sink`. Errs with a 503 when the lane's queue is full.
    pub fn submit(
        &self,
        connection: ConnectionId,
        id: RequestId,
        job: Job,
        sink: Arc<dyn ReplySink>,
    ) -> Result<JobId, ApiError> {
        let (pool, in_flight, capacity) = match job.lane {
            Lane::Model => (
                Some(&self.model.pool),
                &self.model.in_flight,
                self.model.capacity,
            ),
            Lane::Generate => (
                Some(&self.generate.pool),
                &self.generate.in_flight,
                self.generate.capacity,
            ),
            Lane::Io => (Some(&self.io.pool), &self.io.in_flight, self.io.capacity),
            Lane::Relay => (None, &self.relay, self.capacity),
        };
        let queued = in_flight.fetch_add(1, Ordering::AcqRel);
        if queued >= capacity {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::busy(
                format!("{queued} requests are already waiting; try again shortly"),
                1,
            ));
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let job_id = {
            let mut running = lock(&self.running);
            let mut job_id = JobId::random();
            while running.contains_key(&job_id) {
                job_id = JobId::random();
            }
            running.insert(
                job_id,
                Running {
                    connection,
                    client_key: id.key(),
                    cancel: Arc::clone(&cancel),
                    sink: Arc::clone(&sink),
                },
            );
            job_id
        };
        let running = Arc::clone(&self.running);
        let in_flight = Arc::clone(in_flight);
        let counter = Arc::clone(&in_flight);
        // The job's log lines carry the request's tag, on whatever thread.
        let tag = crate::logging::RequestTag::current();
        let run = move || {
            crate::logging::RequestTag::scope(tag, move || {
                let context = JobContext {
                    id,
                    job: job_id,
                    replied: AtomicBool::new(false),
                    cancel,
                    sink,
                };
                let response = match catch_unwind(AssertUnwindSafe(|| (job.work)(&context))) {
                    Ok(Ok(response)) => response,
                    Ok(Err(error)) => Response::error(error),
                    Err(panic) => {
                        let what = panic_message(&panic);
                        log::error!("a job panicked: {what}");
                        Response::error(ApiError::internal(format!("the request failed: {what}")))
                    }
                };
                lock(&running).remove(&job_id);
                context.sink.deliver(context.reply(response));
                in_flight.fetch_sub(1, Ordering::AcqRel);
            })
        };
        match pool {
            Some(pool) => pool.spawn(run),
            None => {
                let started = std::thread::Builder::new().name("relay".into()).spawn(run);
                if let Err(e) = started {
                    lock(&self.running).remove(&job_id);
                    counter.fetch_sub(1, Ordering::AcqRel);
                    return Err(ApiError::busy(
                        format!("cannot start a relay thread: {e}"),
                        1,
                    ));
                }
            }
        }
        Ok(job_id)
    }

    /// Stops the jobs `target` names, as asked from `connection`: a job id
    /// reaches its job from anywhere; a client request id only the jobs of
    /// the same connection.
    pub fn stop(&self, connection: ConnectionId, target: &TargetRequest) -> HaltStatus {
        let found = self.find(connection, target);
        for (_, cancel, sink) in &found {
            cancel.store(true, Ordering::Relaxed);
            sink.mute();
        }
        halt_status(target, &found, |_| "stopping")
    }

    /// Where the jobs `target` names stand (the same reach as [`Jobs::stop`]).
    pub fn status(&self, connection: ConnectionId, target: &TargetRequest) -> HaltStatus {
        let found = self.find(connection, target);
        halt_status(target, &found, |cancel| {
            if cancel.load(Ordering::Relaxed) {
                "stopping"
            } else {
                "running"
            }
        })
    }

    fn find(&self, connection: ConnectionId, target: &TargetRequest) -> Vec<Found> {
        let running = lock(&self.running);
        let found = |(id, r): (&JobId, &Running)| (*id, Arc::clone(&r.cancel), Arc::clone(&r.sink));
        if let Some(job) = &target.job_id {
            return JobId::parse(job)
                .and_then(|id| running.get_key_value(&id).map(found))
                .into_iter()
                .collect();
        }
        let key = target.target_id.key();
        running
            .iter()
            .filter(|(_, r)| r.connection == connection && r.client_key == key)
            .map(found)
            .collect()
    }

    /// Per lane: its name, jobs waiting for a thread, and jobs running.
    pub fn lanes(&self) -> [(&'static str, usize, usize); 4] {
        let lane = |name, lane: &LanePool| {
            let in_flight = lane.in_flight.load(Ordering::Acquire);
            let threads = lane.pool.current_num_threads();
            (
                name,
                in_flight.saturating_sub(threads),
                in_flight.min(threads),
            )
        };
        let relay = self.relay.load(Ordering::Acquire);
        [
            lane("model", &self.model),
            lane("generate", &self.generate),
            lane("io", &self.io),
            ("relay", 0, relay),
        ]
    }

    /// Jobs accepted and not yet finished, over all lanes.
    pub fn in_flight(&self) -> usize {
        [&self.model, &self.generate, &self.io]
            .iter()
            .map(|lane| lane.in_flight.load(Ordering::Acquire))
            .sum::<usize>()
            + self.relay.load(Ordering::Acquire)
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

/// The answer to StopGeneration/GetHaltStatus: `unknown` when no job matched
/// (finished, never seen, or another connection's), else the first match's state.
fn halt_status(
    target: &TargetRequest,
    found: &[Found],
    state: impl Fn(&AtomicBool) -> &'static str,
) -> HaltStatus {
    HaltStatus {
        target_id: target.target_id.clone(),
        job_id: found.first().map(|(id, _, _)| *id),
        state: found
            .first()
            .map_or("unknown", |(_, cancel, _)| state(cancel))
            .into(),
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
mod tests;
