//! The event loop: one mio `Poll` over stdin (native messaging), the signals,
//! the WebRTC UDP sockets, and a `Waker` through which pool jobs and HTTP
//! workers hand over replies and signaling.
//!
//! Native requests are parsed here and passed to [`Handler::serve`]; cheap
//! ones are answered before the next event, others become pool jobs whose
//! replies come back as [`LoopMessage`]s and are written to stdout here, so
//! stdout has exactly one writer. WebRTC peers live here too: datagrams,
//! their timers (the poll deadline is the earliest one) and signaling go to
//! [`RtcServer`]. Shutdown (a signal, or stdin's end in native
//! mode) stops the HTTP server, waits a bounded time for jobs in flight while
//! still delivering their replies, then returns.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use mio::unix::pipe;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::api::{self, Reply, RequestId, Response};
use crate::handler::Handler;
use crate::jobs::ReplySink;
use crate::stats::Transport;
use crate::transport::native::{self, FrameDecoder};
use crate::transport::rtc::{RtcMessage, RtcServer, RtcSettings};

const STDIN: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
/// The first WebRTC socket; each further one takes the next token.
const UDP: Token = Token(3);

/// How long shutdown waits for jobs in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What other threads send to the loop.
pub enum LoopMessage {
    /// A reply for the native messaging client.
    Native(Reply),
    /// Signaling, or a job's reply for a data channel.
    Rtc(RtcMessage),
    /// Stop serving (in-process servers, tests).
    Shutdown,
}

/// How other threads reach the loop.
#[derive(Clone)]
pub struct LoopHandle {
    sender: Sender<LoopMessage>,
    waker: Arc<Waker>,
}

impl LoopHandle {
    /// Queues a message and wakes the loop; false when the loop has ended.
    pub fn send(&self, message: LoopMessage) -> bool {
        self.sender.send(message).is_ok() && self.waker.wake().is_ok()
    }
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// A signal or the end of stdin: a clean shutdown.
    Clean,
    /// The native messaging stream broke (a frame over 64 MiB).
    ProtocolError,
}

/// The loop's state.
pub struct EventLoop {
    poll: Poll,
    handle: LoopHandle,
    inbox: Receiver<LoopMessage>,
    signals: Signals,
    handler: Arc<Handler>,
    stdin: Option<pipe::Receiver>,
    native_open: Arc<AtomicBool>,
    /// Whether stdin's end means shutdown (native mode).
    exit_on_eof: bool,
    rtc: Option<RtcServer>,
}

impl EventLoop {
    /// Sets up the poll, signals and, if `native`, stdin.
    pub fn new(handler: Arc<Handler>, native: bool, exit_on_eof: bool) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (sender, inbox) = mpsc::channel();
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let stdin = if native {
            // A duplicate of fd 0 (same open pipe) that mio can poll.
            let mut stdin = pipe::Receiver::from(io::stdin().as_fd().try_clone_to_owned()?);
            stdin.set_nonblocking(true)?;
            poll.registry()
                .register(&mut stdin, STDIN, Interest::READABLE)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("stdin cannot be polled (is it a pipe?): {e}"),
                    )
                })?;
            Some(stdin)
        } else {
            None
        };
        Ok(EventLoop {
            poll,
            handle: LoopHandle { sender, waker },
            inbox,
            signals,
            handler,
            native_open: Arc::new(AtomicBool::new(native)),
            stdin,
            exit_on_eof,
            rtc: None,
        })
    }

    /// Serves WebRTC: binds the UDP sockets and takes signaling from the
    /// handler. Returns the bound addresses.
    pub fn start_webrtc(&mut self, settings: RtcSettings) -> io::Result<Vec<SocketAddr>> {
        let server = RtcServer::start(
            settings,
            Arc::clone(&self.handler),
            self.handle.clone(),
            self.poll.registry(),
            UDP,
        )?;
        let addresses = server.addresses();
        self.rtc = Some(server);
        Ok(addresses)
    }

    /// A handle for other threads.
    pub fn handle(&self) -> LoopHandle {
        self.handle.clone()
    }

    /// Runs until shutdown; `on_shutdown` stops the other transports first.
    pub fn run(mut self, on_shutdown: impl FnOnce()) -> io::Result<Exit> {
        let mut events = Events::with_capacity(64);
        let mut decoder = FrameDecoder::default();
        let mut stdout = io::stdout().lock();
        let exit = 'serve: loop {
            let deadline = self.rtc.as_ref().and_then(RtcServer::poll_timeout);
            let timeout = deadline.map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    STDIN => {
                        if let Some(exit) = self.read_stdin(&mut decoder, &mut stdout)? {
                            break 'serve exit;
                        }
                    }
                    SIGNALS => {
                        if self.signals.pending().next().is_some() {
                            log::info!("signal received: shutting down");
                            break 'serve Exit::Clean;
                        }
                    }
                    WAKER => {
                        if self.deliver_pending(&mut stdout)? {
                            break 'serve Exit::Clean;
                        }
                    }
                    udp => {
                        if let Some(rtc) = &mut self.rtc {
                            rtc.handle_readable(udp);
                        }
                    }
                }
            }
            if let Some(rtc) = &mut self.rtc {
                rtc.handle_timeout(Instant::now());
            }
        };
        on_shutdown();
        self.drain(&mut stdout)?;
        if let Some(rtc) = &mut self.rtc {
            rtc.shutdown();
        }
        Ok(exit)
    }

    /// Reads what stdin has, serving each whole frame. Some(exit) ends the loop.
    fn read_stdin(
        &mut self,
        decoder: &mut FrameDecoder,
        stdout: &mut impl Write,
    ) -> io::Result<Option<Exit>> {
        let mut buffer = [0u8; 64 * 1024];
        loop {
            // Present whenever STDIN events can fire.
            let stdin = self.stdin.as_mut().expect("stdin registered");
            match stdin.read(&mut buffer) {
                Ok(0) => {
                    if decoder.has_partial() {
                        log::warn!("stdin ended inside a frame; the partial message is dropped");
                    }
                    self.close_native();
                    return Ok(self.exit_on_eof.then_some(Exit::Clean));
                }
                Ok(n) => decoder.push(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => self.serve_frame(&frame, stdout)?,
                    Ok(None) => break,
                    Err(e) => {
                        log::error!("{e}; the stream cannot be resynchronised, exiting");
                        let error = crate::error::ApiError::too_large(e.to_string());
                        write_reply(
                            stdout,
                            &Reply {
                                id: RequestId::NONE,
                                response: Response::error(error),
                            },
                        )?;
                        self.close_native();
                        return Ok(Some(Exit::ProtocolError));
                    }
                }
            }
        }
    }

    fn close_native(&mut self) {
        self.native_open.store(false, Ordering::SeqCst);
        if let Some(mut stdin) = self.stdin.take() {
            let _ = self.poll.registry().deregister(&mut stdin);
        }
    }

    fn serve_frame(&self, frame: &[u8], stdout: &mut impl Write) -> io::Result<()> {
        let started = Instant::now();
        let stats = self.handler.stats();
        stats.count_request(Transport::Native);
        let (id, response) = match api::parse_request(frame) {
            Ok((id, request)) => {
                let sink = || -> Arc<dyn ReplySink> {
                    Arc::new(NativeSink {
                        loop_handle: self.handle.clone(),
                        open: Arc::clone(&self.native_open),
                        started,
                        stats: Arc::clone(stats),
                    })
                };
                match self.handler.serve(id.clone(), request, sink, started) {
                    Some(response) => (id, response),
                    None => return Ok(()),
                }
            }
            Err((id, error)) => (id, Response::error(error)),
        };
        stats.record_reply(
            started.elapsed(),
            matches!(response, Response::Error { .. }),
        );
        write_reply(stdout, &Reply { id, response })
    }

    /// Handles what other threads sent; true when asked to shut down.
    fn deliver_pending(&mut self, stdout: &mut impl Write) -> io::Result<bool> {
        let mut shutdown = false;
        while let Ok(message) = self.inbox.try_recv() {
            match message {
                LoopMessage::Native(reply) => {
                    if self.native_open.load(Ordering::SeqCst) {
                        write_reply(stdout, &reply)?;
                    }
                }
                LoopMessage::Rtc(message) => {
                    if let Some(rtc) = &mut self.rtc {
                        rtc.handle_message(message, Instant::now());
                    }
                }
                LoopMessage::Shutdown => shutdown = true,
            }
        }
        Ok(shutdown)
    }

    /// Delivers replies of jobs still running, for at most [`DRAIN_TIMEOUT`].
    fn drain(&mut self, stdout: &mut impl Write) -> io::Result<()> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut events = Events::with_capacity(8);
        loop {
            self.deliver_pending(stdout)?;
            let now = Instant::now();
            if self.handler.jobs_in_flight() == 0 || now >= deadline {
                break;
            }
            let _ = self.poll.poll(
                &mut events,
                Some((deadline - now).min(Duration::from_millis(50))),
            );
        }
        self.deliver_pending(stdout)?;
        if self.handler.jobs_in_flight() > 0 {
            log::warn!(
                "{} jobs still running at shutdown; their replies are lost",
                self.handler.jobs_in_flight()
            );
        }
        Ok(())
    }
}

fn write_reply(stdout: &mut impl Write, reply: &Reply) -> io::Result<()> {
    match stdout
        .write_all(&native::encode_reply(reply))
        .and_then(|()| stdout.flush())
    {
        // Chrome closed the port: nothing more can be said to it.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Hands a job's native replies to the loop, which owns stdout.
struct NativeSink {
    loop_handle: LoopHandle,
    open: Arc<AtomicBool>,
    started: Instant,
    stats: Arc<crate::stats::Stats>,
}

impl ReplySink for NativeSink {
    fn deliver(&self, reply: Reply) -> bool {
        if reply.response.is_final() {
            let failed = matches!(reply.response, Response::Error { .. });
            self.stats.record_reply(self.started.elapsed(), failed);
        }
        // A closed port (stdin ended) means the client is gone: the job stops.
        self.open.load(Ordering::SeqCst) && self.loop_handle.send(LoopMessage::Native(reply))
    }
}
