//! The native messaging connection: frames in on stdin, replies out on
//! stdout, both non-blocking, driven by the event loop.
//!
//! Every request's replies go through an [`Outbox`] of its own (a job pushes
//! frames there from its thread and never touches stdout); replies made on
//! the loop thread wait in a plain queue. The loop writes frames to stdout,
//! taking streams in turn, only while the pipe takes them: when Chrome stops
//! reading, the loop goes on serving the other transports, and each stream
//! ends by its outbox's bounds instead of stalling anyone.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Instant;

use mio::unix::pipe;
use mio::{Interest, Registry, Token, Waker};

use super::native::{self, FrameDecoder};
use super::serve::{self, Origin};
use crate::api::{self, ApiKeyReply, Reply, Request, RequestId, Response};
use crate::auth::KeySource;
use crate::error::ApiError;
use crate::handler::Handler;
use crate::jobs::{ConnectionId, ReplySink};
use crate::outbox::{Outbox, OutboxLimits};
use crate::stats::Transport;

/// What reading stdin found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Everything available was served; the port stays open.
    Open,
    /// Chrome closed the port (stdin ended).
    Closed,
    /// A frame header announced more than native messaging allows: the
    /// stream cannot be resynchronised.
    Broken,
}

type FrameOutbox = Outbox<Vec<u8>>;

/// The port to Chrome.
pub struct NativePort {
    stdin: Option<pipe::Receiver>,
    stdout: pipe::Sender,
    /// Whether stdout waits for a WRITABLE event.
    writable_registered: bool,
    stdout_token: Token,
    decoder: FrameDecoder,
    connection: ConnectionId,
    limits: OutboxLimits,
    waker: Arc<Waker>,
    /// Replies made on the loop thread.
    direct: VecDeque<Vec<u8>>,
    /// Streams of running requests, taken in turn.
    streams: VecDeque<Arc<FrameOutbox>>,
    /// The rest of a frame stdout took only part of.
    partial: Vec<u8>,
    /// The API key, for GetApiKey.
    key: Option<Arc<KeySource>>,
}

impl NativePort {
    /// Polls duplicates of fd 0 and fd 1 (the same pipes) with `registry`.
    pub fn open(
        registry: &Registry,
        stdin_token: Token,
        stdout_token: Token,
        waker: Arc<Waker>,
        limits: OutboxLimits,
    ) -> io::Result<NativePort> {
        let mut stdin = pipe::Receiver::from(io::stdin().as_fd().try_clone_to_owned()?);
        stdin.set_nonblocking(true)?;
        registry
            .register(&mut stdin, stdin_token, Interest::READABLE)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("stdin cannot be polled (is it a pipe?): {e}"),
                )
            })?;
        let stdout = pipe::Sender::from(io::stdout().as_fd().try_clone_to_owned()?);
        // A stdout that is not a pipe (a file) never blocks: writes just go.
        let _ = stdout.set_nonblocking(true);
        Ok(NativePort {
            stdin: Some(stdin),
            stdout,
            writable_registered: false,
            stdout_token,
            decoder: FrameDecoder::default(),
            connection: ConnectionId::next(),
            limits,
            waker,
            direct: VecDeque::new(),
            streams: VecDeque::new(),
            partial: Vec::new(),
            key: None,
        })
    }

    /// Reads what stdin has and serves each whole frame.
    pub fn handle_readable(
        &mut self,
        handler: &Handler,
        registry: &Registry,
        now: Instant,
    ) -> io::Result<Input> {
        let mut buffer = [0u8; 64 * 1024];
        loop {
            let Some(stdin) = self.stdin.as_mut() else {
                return Ok(Input::Closed);
            };
            match stdin.read(&mut buffer) {
                Ok(0) => {
                    if self.decoder.has_partial() {
                        log::warn!("stdin ended inside a frame; the partial message is dropped");
                    }
                    self.close(registry);
                    return Ok(Input::Closed);
                }
                Ok(n) => self.decoder.push(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Input::Open),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            loop {
                match self.decoder.next_frame() {
                    Ok(Some(frame)) => self.serve_frame(handler, &frame, now),
                    Ok(None) => break,
                    Err(e) => {
                        log::error!("{e}; the stream cannot be resynchronised, exiting");
                        let error = ApiError::too_large(e.to_string());
                        self.direct.push_back(native::encode_reply(&Reply::new(
                            RequestId::NONE,
                            Response::error(error),
                        )));
                        self.close(registry);
                        return Ok(Input::Broken);
                    }
                }
            }
        }
    }

    /// The key GetApiKey answers with.
    pub fn set_api_key(&mut self, key: Arc<KeySource>) {
        self.key = Some(key);
    }

    fn serve_frame(&mut self, handler: &Handler, frame: &[u8], now: Instant) {
        let origin = Origin {
            transport: Transport::Native,
            connection: self.connection,
            client: crate::ratelimit::Client::Trusted,
            route: None,
        };
        let parsed = api::parse_request(frame);
        // Native messaging is the one transport Chrome authenticates (only
        // the extensions in the host manifest can start us), so GetApiKey is
        // answered here and never reaches the handler, which refuses it for
        // every other transport (see auth::native_only).
        if let (Ok((id, Request::GetApiKey(_))), Some(key)) = (&parsed, &self.key) {
            let reply = Reply::new(
                id.clone(),
                Response::ApiKey(ApiKeyReply {
                    api_key: key.current(now).as_str().to_string(),
                }),
            );
            handler.stats().count_request(Transport::Native);
            self.direct.push_back(native::encode_reply(&reply));
            return;
        }
        let mut opened = None;
        let (limits, waker) = (self.limits, &self.waker);
        let inline = serve::serve(handler, origin, parsed, now, |id| {
            let outbox = Arc::new(stream_outbox(id.clone(), limits, now, Arc::clone(waker)));
            opened = Some(Arc::clone(&outbox));
            Arc::new(NativeSink(outbox))
        });
        if let Some(outbox) = opened {
            self.streams.push_back(outbox);
        }
        if let Some(reply) = inline {
            self.direct.push_back(native::encode_reply(&reply));
        }
    }

    /// Writes queued frames while stdout takes them; asks for a WRITABLE
    /// event when it is full. Streams take turns, one frame each.
    pub fn flush(&mut self, registry: &Registry, now: Instant) -> io::Result<()> {
        loop {
            if self.partial.is_empty() && !self.next_frame(now) {
                return self.want_writable(registry, false);
            }
            match self.stdout.write(&self.partial) {
                Ok(n) => {
                    self.partial.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.want_writable(registry, true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Chrome closed the port: nothing more can be said to it.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    self.partial.clear();
                    self.close_streams();
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves the next frame into `partial`; false when nothing waits.
    fn next_frame(&mut self, now: Instant) -> bool {
        if let Some(frame) = self.direct.pop_front() {
            self.partial = frame;
            return true;
        }
        for _ in 0..self.streams.len() {
            // The loop runs at most len() times over a non-empty queue.
            let outbox = self.streams.pop_front().expect("a stream");
            let taken = outbox.pop(now);
            if !outbox.is_done() {
                self.streams.push_back(outbox);
            }
            if let Some((frame, _)) = taken {
                self.partial = frame;
                return true;
            }
        }
        false
    }

    fn want_writable(&mut self, registry: &Registry, want: bool) -> io::Result<()> {
        if want == self.writable_registered {
            return Ok(());
        }
        let result = if want {
            registry.register(&mut self.stdout, self.stdout_token, Interest::WRITABLE)
        } else {
            registry.deregister(&mut self.stdout)
        };
        match result {
            Ok(()) => self.writable_registered = want,
            // A file cannot be polled, and never fills.
            Err(e) => log::debug!("stdout cannot be polled: {e}"),
        }
        Ok(())
    }

    /// Ends streams whose reader stalled; returns the earliest time one may.
    pub fn check_stalls(&mut self, now: Instant) -> Option<Instant> {
        self.streams.retain(|outbox| !outbox.check_stall(now));
        self.streams
            .iter()
            .filter_map(|outbox| outbox.stall_deadline())
            .min()
    }

    /// Whether replies still wait to be written.
    pub fn has_pending(&self) -> bool {
        !self.partial.is_empty() || !self.direct.is_empty()
    }

    fn close(&mut self, registry: &Registry) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = registry.deregister(&mut stdin);
        }
        self.close_streams();
    }

    /// The client is gone: every running request sees it at its next reply.
    fn close_streams(&mut self) {
        for outbox in self.streams.drain(..) {
            outbox.close();
        }
    }
}

/// A request's outbox; a reader too slow for it gets an Error frame last.
fn stream_outbox(
    id: RequestId,
    limits: OutboxLimits,
    now: Instant,
    waker: Arc<Waker>,
) -> FrameOutbox {
    Outbox::new(
        limits,
        now,
        move || {
            let _ = waker.wake();
        },
        move |ended| {
            let frame =
                native::encode_reply(&Reply::new(id.clone(), Response::error(ended.error())));
            let len = frame.len();
            (frame, len)
        },
    )
}

/// Hands a job's replies, framed, to its stream's outbox.
struct NativeSink(Arc<FrameOutbox>);

impl ReplySink for NativeSink {
    fn deliver(&self, reply: Reply) -> bool {
        let last = reply.response.is_final();
        let frame = native::encode_reply(&reply);
        let len = frame.len();
        self.0.push(frame, len, last, Instant::now()).is_ok()
    }

    fn is_present(&self) -> bool {
        self.0.is_open()
    }

    fn mute(&self) {
        self.0.mute();
    }
}
