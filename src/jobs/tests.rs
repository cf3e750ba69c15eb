//! The pools, the bounded lanes, stop by job id and panics as replies.

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
        generate_threads: 2,
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
        ConnectionId::next(),
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
            ctx.emit(Response::ChatChunk(ChatChunk::text("x")));
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Response::Stopped(HaltStatus::new(
            RequestId::text("g"),
            "cancelled",
        )))
    });
    let mine = ConnectionId::next();
    let job_id = jobs.submit(mine, RequestId::text("g"), job, sink).unwrap();
    let first = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a chunk arrives");
    assert_eq!(first.job_id, Some(job_id), "the first reply names the job");
    let by_label = TargetRequest::client(RequestId::text("g"));
    let other = ConnectionId::next();
    assert_eq!(jobs.status(other, &by_label).state, "unknown");
    assert_eq!(
        jobs.stop(other, &by_label).state,
        "unknown",
        "another connection's label reaches nothing"
    );
    assert_eq!(jobs.status(mine, &by_label).state, "running");
    let by_job = TargetRequest::job(job_id);
    assert_eq!(jobs.stop(other, &by_job).state, "stopping");
    let last = rx.iter().find(|r| r.response.is_final()).unwrap();
    assert!(matches!(last.response, Response::Stopped(_)));
    assert_eq!(last.job_id, None, "only the first reply names the job");
    assert_eq!(jobs.status(mine, &by_label).state, "unknown");
}

#[test]
fn a_full_lane_answers_503_with_retry_after() {
    let jobs = jobs(1);
    let (sink, _rx) = sink();
    let (release, wait) = mpsc::channel::<()>();
    let wait = Mutex::new(wait);
    let blocker = Job::new(Lane::Model, move |_| {
        let _ = lock(&wait).recv();
        Ok(Response::Stopped(HaltStatus::new(RequestId::NONE, "done")))
    });
    let connection = ConnectionId::next();
    jobs.submit(connection, RequestId::text("a"), blocker, Arc::clone(&sink))
        .unwrap();
    let refused = jobs.submit(
        connection,
        RequestId::text("b"),
        Job::new(Lane::Model, |_| unreachable!()),
        sink,
    );
    let error = refused.expect_err("the second job is refused");
    assert_eq!((error.status, error.retry_after), (503, Some(1)));
    release.send(()).unwrap();
}
