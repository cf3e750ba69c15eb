//! The writer thread: group commit over the one write connection.
//!
//! Tasks arrive on a channel. The thread takes the first one, then every task
//! already waiting (up to [`MAX_BATCH`]), applies them in one IMMEDIATE
//! transaction — each inside its own savepoint, so a failing task is rolled
//! back alone — and COMMITs once. Only after COMMIT returns (with
//! `synchronous=FULL`, after the WAL's fsync) does each task's completion
//! run, with its own result or the commit's error. A lone task commits at
//! once; batches form by themselves while a commit is in progress.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use super::StoreError;
use crate::jobs::{lock, panic_message};
use crate::logging::RequestTag;

/// The most tasks one transaction takes: bounds the time a batch holds the
/// write lock and the memory of its results.
const MAX_BATCH: usize = 512;
/// The most tasks waiting for the writer; more are refused as busy (503 with
/// Retry-After) instead of growing memory without bound.
const MAX_QUEUED: usize = 8192;

/// One unit of work for the writer.
pub(crate) trait Write: Send {
    /// Applies the change to the open transaction (at time `now_ms`).
    fn apply(&mut self, connection: &Connection, now_ms: i64) -> Result<(), StoreError>;
    /// Reports the outcome: the apply error, the commit error, or success.
    fn finish(self: Box<Self>, outcome: Result<(), StoreError>);
    /// The request it was made for: the writer logs under that id.
    fn tag(&self) -> Option<RequestTag>;
}

type Apply<T> = Box<dyn FnOnce(&Connection, i64) -> Result<T, StoreError> + Send>;
type Done<T> = Box<dyn FnOnce(Result<T, StoreError>) + Send>;

/// A [`Write`] made of two closures: what to apply, and who to tell.
pub(crate) struct Task<T> {
    apply: Option<Apply<T>>,
    result: Option<T>,
    done: Done<T>,
    tag: Option<RequestTag>,
}

impl<T: Send + 'static> Task<T> {
    pub(crate) fn boxed(
        apply: impl FnOnce(&Connection, i64) -> Result<T, StoreError> + Send + 'static,
        done: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) -> Box<dyn Write> {
        Box::new(Task {
            apply: Some(Box::new(apply)),
            result: None,
            done: Box::new(done),
            tag: RequestTag::current(),
        })
    }
}

impl<T: Send> Write for Task<T> {
    fn apply(&mut self, connection: &Connection, now_ms: i64) -> Result<(), StoreError> {
        let apply = self
            .apply
            .take()
            .ok_or_else(|| StoreError::Sqlite("a write was applied twice".into()))?;
        self.result = Some(apply(connection, now_ms)?);
        Ok(())
    }

    fn finish(self: Box<Self>, outcome: Result<(), StoreError>) {
        let Task { result, done, .. } = *self;
        let result = outcome.and_then(|()| {
            result.ok_or_else(|| StoreError::Sqlite("a write finished without a result".into()))
        });
        done(result)
    }

    fn tag(&self) -> Option<RequestTag> {
        self.tag
    }
}

/// The handle to the writer thread.
pub(crate) struct Writer {
    sender: Mutex<Option<mpsc::Sender<Box<dyn Write>>>>,
    pending: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread that owns `connection`.
    pub(crate) fn start(connection: Connection) -> Result<Writer, StoreError> {
        let (sender, receiver) = mpsc::channel::<Box<dyn Write>>();
        let pending = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&pending);
        let thread = std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || run(&connection, &receiver, &counter))
            .map_err(|e| StoreError::Sqlite(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            sender: Mutex::new(Some(sender)),
            pending,
            thread: Some(thread),
        })
    }

    /// Queues a task; if the writer is gone, the task fails at once.
    pub(crate) fn submit(&self, task: Box<dyn Write>) {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            let busy = format!("{MAX_QUEUED} writes are already waiting for the disk");
            finish(task, Err(StoreError::Busy(busy)));
            return;
        }
        let sender = lock(&self.sender).clone();
        let refused = match sender {
            Some(sender) => sender.send(task).err().map(|e| e.0),
            None => Some(task),
        };
        if let Some(task) = refused {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            finish(task, Err(StoreError::Closed));
        }
    }

    /// Tasks queued or in the current batch.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

impl Drop for Writer {
    /// Lets the thread commit what is queued, then joins it.
    fn drop(&mut self) {
        lock(&self.sender).take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(connection: &Connection, receiver: &mpsc::Receiver<Box<dyn Write>>, pending: &AtomicUsize) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(task) => batch.push(task),
                Err(_) => break,
            }
        }
        let outcomes = commit(connection, &mut batch);
        let count = batch.len();
        // Counted before anyone is told: a client that saw its write done
        // finds it in the metrics.
        let committed = outcomes.iter().filter(|o| o.is_ok()).count() as u64;
        let metrics = &crate::metrics::STORE;
        metrics.writes.fetch_add(committed, Ordering::Relaxed);
        metrics
            .failed_writes
            .fetch_add(count as u64 - committed, Ordering::Relaxed);
        for (task, outcome) in batch.into_iter().zip(outcomes) {
            finish(task, outcome);
        }
        pending.fetch_sub(count, Ordering::AcqRel);
    }
}

/// Runs a task's completion; a panicking one is logged, not fatal to the writer.
fn finish(task: Box<dyn Write>, outcome: Result<(), StoreError>) {
    RequestTag::scope(task.tag(), || {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| task.finish(outcome))) {
            log::error!("a write's completion panicked: {}", panic_message(&panic));
        }
    })
}

/// Applies `batch` in one transaction; one outcome per task.
fn commit(connection: &Connection, batch: &mut [Box<dyn Write>]) -> Vec<Result<(), StoreError>> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let count = batch.len();
    let fail_all = |error: StoreError| vec![Err(error); count];
    if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
        return fail_all(error.into());
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    for task in batch.iter_mut() {
        let applied = connection
            .execute_batch("SAVEPOINT task")
            .map_err(StoreError::from)
            .and_then(|()| {
                RequestTag::scope(task.tag(), || {
                    catch_unwind(AssertUnwindSafe(|| task.apply(connection, now_ms)))
                        .unwrap_or_else(|panic| {
                            let what = panic_message(&panic);
                            log::error!("a write panicked: {what}");
                            Err(StoreError::Sqlite(format!("the write failed: {what}")))
                        })
                })
            });
        let closed = match &applied {
            Ok(()) => connection.execute_batch("RELEASE task"),
            Err(_) => connection.execute_batch("ROLLBACK TO task; RELEASE task"),
        };
        if let Err(error) = closed {
            // The savepoint machinery itself failed: trust nothing in this transaction.
            let _ = connection.execute_batch("ROLLBACK");
            return fail_all(error.into());
        }
        outcomes.push(applied);
    }
    let committing = std::time::Instant::now();
    let committed = connection.execute_batch("COMMIT");
    crate::metrics::STORE
        .commit_seconds
        .observe_duration(committing.elapsed());
    match committed {
        Ok(()) => outcomes,
        Err(error) => {
            let error = StoreError::from(error);
            let requests: Vec<String> = batch
                .iter()
                .filter_map(|task| task.tag().map(|tag| tag.to_string()))
                .collect();
            log::error!(
                "a commit of {count} writes failed (requests {}): {error}",
                requests.join(", ")
            );
            if !connection.is_autocommit() {
                let _ = connection.execute_batch("ROLLBACK");
            }
            fail_all(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_runs_and_finishes_under_its_request_id() {
        let writer = Writer::start(Connection::open_in_memory().unwrap()).unwrap();
        let tag = RequestTag::next();
        let (sender, seen) = mpsc::channel();
        let at_apply = sender.clone();
        let task = RequestTag::scope(Some(tag), || {
            Task::boxed(
                move |_, _| {
                    at_apply.send(RequestTag::current()).unwrap();
                    Ok(())
                },
                move |_| sender.send(RequestTag::current()).unwrap(),
            )
        });
        // Submitted from a thread serving no request: the tag came with the task.
        writer.submit(task);
        assert_eq!(seen.recv().unwrap(), Some(tag), "apply");
        assert_eq!(seen.recv().unwrap(), Some(tag), "finish");
    }
}
