//! Helpers shared by the integration tests: temp dirs, the binary as a
//! native messaging host or an HTTP server, and a minimal HTTP client that
//! lets a test set any header (Host, Origin) and read SSE. Every binary they
//! start has the key [`TEST_KEY`], and [`http`] sends it.

#![allow(dead_code)] // each test module uses a different subset

mod client;

pub use client::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// The API key spawned servers get (`TABAGENT_API_KEY`).
pub const TEST_KEY: &str = "tabagent-test-key";

/// Says that `test` cannot run here for want of `what`. Under CI=true
/// (`make test`, which installs everything) that is a failure, never a
/// quiet pass.
pub fn skip(test: &str, what: &str) {
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "{test} cannot run under CI: {what}"
    );
    eprintln!("\n*** SKIPPED {test}: {what} ***\n");
}

/// The header line that carries [`TEST_KEY`], for hand-written requests.
pub fn auth_line() -> String {
    format!("Authorization: Bearer {TEST_KEY}\r\n")
}

/// The binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tabagent"))
}

/// The tiny random GGUF (tests/fixtures/make_tiny_gguf.py), built once per
/// test run; copy it into a models dir.
#[cfg(feature = "llama")]
pub fn tiny_gguf() -> &'static Path {
    static TINY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TINY.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tabagent-tiny-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("tiny.gguf");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/make_tiny_gguf.py");
        let status = Command::new("python3").arg(script).arg(&out).status().unwrap();
        assert!(
            status.success(),
            "make_tiny_gguf.py failed: install its deps with python3 -m pip install 'gguf==0.19.*' numpy"
        );
        out
    })
}

/// The tiny random GGUF with the chat template of
/// `tests/fixtures/templates/<template>.jinja` instead of ChatML and a
/// 4096-token context (room for tool definitions), built once per test run
/// and template.
#[cfg(feature = "llama")]
pub fn tiny_gguf_with_template(template: &str) -> PathBuf {
    static MADE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join(format!("tabagent-tiny-{}", std::process::id()));
    let out = dir.join(format!("tiny-{template}.gguf"));
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    if !made.iter().any(|t| t == template) {
        std::fs::create_dir_all(&dir).unwrap();
        let root = env!("CARGO_MANIFEST_DIR");
        let status = Command::new("python3")
            .arg(format!("{root}/tests/fixtures/make_tiny_gguf.py"))
            .arg(&out)
            .arg("--template")
            .arg(format!("{root}/tests/fixtures/templates/{template}.jinja"))
            .args(["--context", "4096"])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "make_tiny_gguf.py --template {template} failed"
        );
        made.push(template.to_string());
    }
    out
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tabagent-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A command for the binary with a private data dir and quiet logs.
pub fn command(data_dir: &Path) -> Command {
    command_for(binary(), data_dir)
}

/// The same environment for another program that runs the binary (such as
/// `prlimit --nofile=256 -- BINARY`).
pub fn command_for(program: impl AsRef<std::ffi::OsStr>, data_dir: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("HOME", data_dir)
        .env("TABAGENT_DATA_DIR", data_dir)
        .env("TABAGENT_LOG", "info")
        .env("TABAGENT_API_KEY", TEST_KEY)
        // Tests make hundreds of requests a second from one address, and
        // several generations at once: the limits are raised here, and the
        // tests of the limits themselves set their own.
        .env("TABAGENT_RATE_LIMIT", "0")
        .env("TABAGENT_GENERATIONS_PER_CLIENT", "1000")
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    if let Some(lib) = std::env::var_os("ORT_DYLIB_PATH") {
        command.env("ORT_DYLIB_PATH", lib);
    }
    command
}

/// Builds a frame: native-endian length, then the body.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_ne_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// The binary started the way Chrome starts a native messaging host.
pub struct NativeHost {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    frames: Receiver<Value>,
    pub data: TempDir,
}

impl NativeHost {
    pub fn start() -> NativeHost {
        Self::start_with(TempDir::new("native"), |_| {})
    }

    pub fn start_with(data: TempDir, configure: impl FnOnce(&mut Command)) -> NativeHost {
        let mut command = command(data.path());
        command.arg("chrome-extension://abcdefghijklmnopabcdefghijklmnop/");
        configure(&mut command);
        Self::spawn(command, data)
    }

    /// Starts `command` (a program that serves native messaging) and reads its frames.
    pub fn spawn(mut command: Command, data: TempDir) -> NativeHost {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, frames) = mpsc::channel();
        std::thread::spawn(move || {
            loop {
                let mut header = [0u8; 4];
                if stdout.read_exact(&mut header).is_err() {
                    return;
                }
                let mut body = vec![0u8; u32::from_ne_bytes(header) as usize];
                if stdout.read_exact(&mut body).is_err() {
                    return;
                }
                let value: Value =
                    serde_json::from_slice(&body).expect("the host writes JSON frames only");
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        NativeHost {
            child,
            stdin,
            frames,
            data,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    pub fn send(&mut self, message: &Value) {
        self.send_raw(&frame(message.to_string().as_bytes()));
    }

    /// The next frame; panics after `timeout`.
    pub fn recv_within(&self, timeout: Duration) -> Value {
        self.frames
            .recv_timeout(timeout)
            .expect("a reply frame in time")
    }

    pub fn recv(&self) -> Value {
        self.recv_within(Duration::from_secs(20))
    }

    /// Frames until one with `done: true` for `id`; returns them all.
    pub fn recv_until_done(&self, id: &Value) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let frame = self.recv();
            let done = frame["id"] == *id && frame["done"] == true;
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    pub fn request(&mut self, message: Value) -> Value {
        let id = message["id"].clone();
        self.send(&message);
        self.recv_until_done(&id).pop().unwrap()
    }

    /// Closes stdin and waits (bounded) for the exit status code.
    pub fn close_and_wait(&mut self) -> Option<i32> {
        self.stdin.take();
        wait_exit(&mut self.child, Duration::from_secs(20))
    }
}

impl Drop for NativeHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a child to exit, killing it after `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    panic!("the process did not exit within {timeout:?}");
}

/// The binary serving HTTP on a free port.
pub struct HttpServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub data: TempDir,
    /// Every line the server has logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl HttpServer {
    pub fn start() -> HttpServer {
        Self::start_with(TempDir::new("http"), |_| {})
    }

    pub fn start_with(data: TempDir, configure: impl FnOnce(&mut Command)) -> HttpServer {
        let mut command = command(data.path());
        configure(&mut command);
        Self::start_command(command, data)
    }

    /// Starts a prepared command (see [`command_for`]) in HTTP mode.
    pub fn start_command(command: Command, data: TempDir) -> HttpServer {
        Self::start_in_mode(command, data, "http")
    }

    /// Starts a prepared command in `mode` (http, webrtc or all).
    pub fn start_in_mode(mut command: Command, data: TempDir, mode: &str) -> HttpServer {
        command.args(["--mode", mode, "--bind", "127.0.0.1:0"]);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in stderr.lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                let listening = line
                    .split("HTTP on http://")
                    .nth(1)
                    .or_else(|| line.split("HTTP on https://").nth(1));
                if let Some(addr) = listening
                    && let Some(tx) = tx.take()
                {
                    // Text logs end the line there; JSON logs close the string.
                    let addr = addr.split(['"', ' ']).next().unwrap_or_default();
                    let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
                }
                if std::env::var_os("TABAGENT_TEST_LOG").is_some() {
                    eprintln!("server: {line}");
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server says where it listens");
        HttpServer {
            child,
            addr,
            data,
            log,
        }
    }

    /// Whether the server has logged a line containing `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn get(&self, path: &str) -> HttpReply {
        self.answer(raw_request(self.addr, "GET", path, &[], None, true))
    }

    pub fn post(&self, path: &str, body: &Value) -> HttpReply {
        let body = body.to_string();
        self.answer(raw_request(
            self.addr,
            "POST",
            path,
            &[],
            Some(body.as_bytes()),
            true,
        ))
    }

    /// Parses a reply; when there is none (the server closed the connection
    /// or stayed silent past the read timeout), fails with the server's last
    /// log lines, which say whether it crashed.
    fn answer(&self, raw: Vec<u8>) -> HttpReply {
        if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            let log = self.log.lock().unwrap();
            let tail = log[log.len().saturating_sub(40)..].join("\n");
            panic!(
                "no response from the server ({} bytes); its last log lines:\n{tail}",
                raw.len()
            );
        }
        parse_response(&raw)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
