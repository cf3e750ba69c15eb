//! The event loop: one mio `Poll` over stdin and stdout (native messaging),
//! the signals (SIGHUP reloads the settings), the WebRTC UDP sockets, and a `Waker` through which pool
//! jobs and HTTP workers tell it there is work.
//!
//! It owns the transports that live on one thread: the native messaging
//! port ([`NativePort`]) and the WebRTC peers ([`RtcServer`]). Both hand
//! their messages to the one serve path and drain their own outboxes here,
//! so no other thread ever writes to stdout or a peer. The poll deadline is
//! the earliest of the peers' timers and the outboxes' stall bounds; `now`
//! is read once per wake-up and passed down. Shutdown (a signal, a
//! [`LoopMessage::Shutdown`], or stdin's end in native mode) stops the HTTP
//! server, waits a bounded time for jobs in flight while still delivering
//! their replies, then returns.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::handler::Handler;
use crate::mailbox::Mailbox;
use crate::outbox::OutboxLimits;
use crate::transport::native_port::{Input, NativePort};
use crate::transport::rtc::{RtcMessage, RtcServer, RtcSettings};

const STDIN: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
const STDOUT: Token = Token(3);
/// The first WebRTC socket; each further one takes the next token.
const UDP: Token = Token(4);

/// How long shutdown waits for jobs in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What SIGHUP runs: reads the settings again; returns the new key source
/// when the key's settings changed.
pub type ReloadHook = Box<dyn FnMut() -> Option<Arc<crate::auth::KeySource>> + Send>;

/// What other threads may ask of the loop itself.
pub enum LoopMessage {
    /// Stop serving (in-process servers, tests).
    Shutdown,
}

/// How other threads reach the loop.
pub type LoopHandle = Mailbox<LoopMessage>;

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
    waker: Arc<Waker>,
    handle: LoopHandle,
    inbox: Receiver<LoopMessage>,
    signals: Signals,
    handler: Arc<Handler>,
    native: Option<NativePort>,
    /// Whether stdin's end means shutdown (native mode).
    exit_on_eof: bool,
    limits: OutboxLimits,
    rtc: Option<(RtcServer, Receiver<RtcMessage>)>,
    /// What SIGHUP runs (nothing until set).
    reload: Option<ReloadHook>,
}

impl EventLoop {
    /// Sets up the poll, signals and, if `native`, stdin and stdout; each
    /// reply stream is bounded by `limits`.
    pub fn new(
        handler: Arc<Handler>,
        native: bool,
        exit_on_eof: bool,
        limits: OutboxLimits,
    ) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (handle, inbox) = Mailbox::new(Arc::clone(&waker));
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNALS, mio::Interest::READABLE)?;
        let native = if native {
            Some(NativePort::open(
                poll.registry(),
                STDIN,
                STDOUT,
                Arc::clone(&waker),
                limits,
            )?)
        } else {
            None
        };
        Ok(EventLoop {
            poll,
            waker,
            handle,
            inbox,
            signals,
            handler,
            native,
            exit_on_eof,
            limits,
            rtc: None,
            reload: None,
        })
    }

    /// Serves WebRTC: binds the UDP sockets and takes signaling from the
    /// handler. Returns the bound addresses.
    pub fn start_webrtc(&mut self, settings: RtcSettings) -> io::Result<Vec<SocketAddr>> {
        let (mailbox, inbox) = Mailbox::new(Arc::clone(&self.waker));
        let server = RtcServer::start(
            settings,
            Arc::clone(&self.handler),
            mailbox,
            self.limits,
            self.poll.registry(),
            UDP,
        )?;
        let addresses = server.addresses();
        self.rtc = Some((server, inbox));
        Ok(addresses)
    }

    /// The key the native port hands to the extension (GetApiKey).
    pub fn set_api_key(&mut self, key: Arc<crate::auth::KeySource>) {
        if let Some(native) = self.native.as_mut() {
            native.set_api_key(key);
        }
    }

    /// Runs `hook` on SIGHUP (on the loop's thread).
    pub fn on_reload(&mut self, hook: ReloadHook) {
        self.reload = Some(hook);
    }

    /// A handle for other threads.
    pub fn handle(&self) -> LoopHandle {
        self.handle.clone()
    }

    /// Runs until shutdown; `on_shutdown` stops the other transports first.
    pub fn run(mut self, on_shutdown: impl FnOnce()) -> io::Result<Exit> {
        let mut events = Events::with_capacity(64);
        let mut deadline = None;
        let exit = 'serve: loop {
            let timeout = deadline.map(|at: Instant| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    STDIN => {
                        if let Some(exit) = self.read_stdin(now)? {
                            break 'serve exit;
                        }
                    }
                    SIGNALS => {
                        let pending: Vec<i32> = self.signals.pending().collect();
                        if pending.iter().any(|s| *s != SIGHUP) {
                            log::info!("signal received: shutting down");
                            break 'serve Exit::Clean;
                        }
                        if !pending.is_empty() {
                            self.reload();
                        }
                    }
                    // Outboxes wake the loop; they are flushed below.
                    WAKER | STDOUT => {}
                    udp => {
                        if let Some((rtc, _)) = &mut self.rtc {
                            rtc.handle_readable(udp, now);
                        }
                    }
                }
            }
            if self.deliver_pending(now) {
                break 'serve Exit::Clean;
            }
            deadline = self.flush(now)?;
        };
        on_shutdown();
        self.drain()?;
        if let Some((rtc, _)) = &mut self.rtc {
            rtc.shutdown();
        }
        Ok(exit)
    }

    /// SIGHUP: reloads the settings; a new key goes to the native port.
    fn reload(&mut self) {
        log::info!("SIGHUP: reading the settings again");
        let Some(hook) = self.reload.as_mut() else {
            return;
        };
        if let Some(key) = hook() {
            self.set_api_key(key);
        }
    }

    /// Serves what stdin has. Some(exit) ends the loop.
    fn read_stdin(&mut self, now: Instant) -> io::Result<Option<Exit>> {
        let Some(native) = &mut self.native else {
            return Ok(None);
        };
        match native.handle_readable(&self.handler, self.poll.registry(), now)? {
            Input::Open => Ok(None),
            Input::Closed => Ok(self.exit_on_eof.then_some(Exit::Clean)),
            Input::Broken => {
                native.flush(self.poll.registry(), now)?;
                Ok(Some(Exit::ProtocolError))
            }
        }
    }

    /// Handles what other threads sent; true when asked to shut down.
    fn deliver_pending(&mut self, now: Instant) -> bool {
        if let Some((rtc, inbox)) = &mut self.rtc {
            while let Ok(message) = inbox.try_recv() {
                rtc.handle_message(message, now);
            }
        }
        let mut shutdown = false;
        while let Ok(LoopMessage::Shutdown) = self.inbox.try_recv() {
            shutdown = true;
        }
        shutdown
    }

    /// Writes what the outboxes hold, ends stalled streams, runs the peers'
    /// timers; returns the next deadline.
    fn flush(&mut self, now: Instant) -> io::Result<Option<Instant>> {
        let mut deadline = None;
        if let Some(native) = &mut self.native {
            native.flush(self.poll.registry(), now)?;
            deadline = native.check_stalls(now);
        }
        if let Some((rtc, _)) = &mut self.rtc {
            rtc.handle_timeout(now);
            deadline = earliest(deadline, rtc.poll_timeout());
        }
        Ok(deadline)
    }

    /// Delivers replies of jobs still running, for at most [`DRAIN_TIMEOUT`].
    fn drain(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut events = Events::with_capacity(8);
        loop {
            let now = Instant::now();
            self.deliver_pending(now);
            self.flush(now)?;
            let pending = self.native.as_ref().is_some_and(NativePort::has_pending);
            if (self.handler.jobs_in_flight() == 0 && !pending) || now >= deadline {
                break;
            }
            let _ = self.poll.poll(
                &mut events,
                Some((deadline - now).min(Duration::from_millis(50))),
            );
        }
        if self.handler.jobs_in_flight() > 0 {
            log::warn!(
                "{} jobs still running at shutdown; their replies are lost",
                self.handler.jobs_in_flight()
            );
        }
        Ok(())
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
