//! The file server the pull tests download from: files by path on
//! 127.0.0.1, with Range and If-Range support and a mode that drops the
//! connection halfway through the first download.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A file server for one test.
pub struct FileServer {
    addr: SocketAddr,
    /// The `Range` header of every request, in order (None when absent).
    ranges: Arc<Mutex<Vec<Option<String>>>>,
}

impl FileServer {
    /// Serves `files` by path; with `cut_first_at`, the first full download
    /// stops after that many bytes and the connection is dropped.
    pub fn start(files: HashMap<&'static str, Vec<u8>>, cut_first_at: Option<usize>) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&ranges);
        let files = Arc::new(files);
        let cut = Arc::new(Mutex::new(cut_first_at));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (files, log, cut) = (Arc::clone(&files), Arc::clone(&log), Arc::clone(&cut));
                std::thread::spawn(move || serve_one(stream, &files, &log, &cut));
            }
        });
        FileServer { addr, ranges }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ranges(&self) -> Vec<Option<String>> {
        self.ranges.lock().unwrap().clone()
    }
}

fn serve_one(
    mut stream: TcpStream,
    files: &HashMap<&'static str, Vec<u8>>,
    log: &Mutex<Vec<Option<String>>>,
    cut: &Mutex<Option<usize>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let path = first.split(' ').nth(1).unwrap_or("/").to_string();
    let mut range = None;
    let mut if_range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or(("", ""));
        match name.to_ascii_lowercase().as_str() {
            "range" => range = Some(value.trim().to_string()),
            "if-range" => if_range = Some(value.trim().to_string()),
            _ => {}
        }
    }
    log.lock().unwrap().push(range.clone());
    let Some(body) = files.get(path.as_str()) else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let etag = "\"v1\"";
    let start = range
        .as_deref()
        .filter(|_| if_range.as_deref().is_none_or(|v| v == etag))
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok());
    let head = match start {
        Some(start) if start >= body.len() => {
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            return;
        }
        Some(start) => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\nETag: {etag}\r\nConnection: close\r\n\r\n",
            body.len() - 1,
            body.len(),
            body.len() - start
        ),
        None => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: {etag}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
            body.len()
        ),
    };
    let from = start.unwrap_or(0);
    // Only the first full download is cut short.
    let until = match start {
        None => cut.lock().unwrap().take().unwrap_or(body.len()),
        Some(_) => body.len(),
    };
    let _ = stream.write_all(head.as_bytes());
    for chunk in body[from..until].chunks(64 * 1024) {
        if stream.write_all(chunk).is_err() {
            return;
        }
    }
    let _ = stream.flush();
    // Dropping the stream closes the connection (early, when cut).
}

/// "GGUF" and then `len - 4` bytes that do not repeat soon.
pub fn fake_gguf(len: usize) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    let mut x: u32 = 12345;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push(x as u8);
    }
    out
}
