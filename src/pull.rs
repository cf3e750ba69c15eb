//! Downloading models (PullModel, `tabagent pull`): resume, sha256 check,
//! atomic placement, throttled progress.
//!
//! A pull writes `.<file>.part` beside its target (the models dir scan skips
//! dot files), with `.<file>.part.json` recording the URL and the server's
//! validator (ETag or Last-Modified). A later pull of the same URL resumes
//! with `Range` (and `If-Range`, so a changed file restarts instead of
//! splicing two versions). A finished part is fsynced, checked (sha256 when
//! given, the GGUF magic for `.gguf` targets) and renamed into place; a part
//! that fails the check is deleted. Where a file goes:
//!
//! - `model` absent: the URL's file name, which must end in `.gguf`;
//! - `model: "X"`: `X.gguf`;
//! - `model: "X/F"`: file `F` of the ONNX model folder `X` (pull `model.onnx`,
//!   `tokenizer.json`, `tabagent.json` one by one).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{PullComplete, PullModelRequest, PullProgress};
use crate::error::ApiError;
use crate::jobs::lock;

/// Bytes read per system call.
const READ_SIZE: usize = 256 * 1024;

/// Where a pull writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The URL actually fetched (`hf://` expanded).
    pub url: String,
    /// The model id the file belongs to.
    pub id: String,
    /// The final path.
    pub path: PathBuf,
}

impl Target {
    /// `.<file>.part` beside the target.
    pub fn part(&self) -> PathBuf {
        self.sibling("part")
    }

    /// `.<file>.part.json`: what the part was downloaded from.
    pub fn meta(&self) -> PathBuf {
        self.sibling("part.json")
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.path.with_file_name(format!(".{name}.{suffix}"))
    }
}

/// `hf://owner/repo[@revision]/path` as the Hugging Face download URL; other
/// `http(s)://` URLs as they are; anything else is refused.
pub fn resolve_url(url: &str) -> Result<String, ApiError> {
    if let Some(rest) = url.strip_prefix("hf://") {
        let mut parts = rest.splitn(3, '/');
        let (owner, repo, file) = (parts.next(), parts.next(), parts.next());
        let (Some(owner), Some(repo), Some(file)) = (owner, repo, file) else {
            return Err(ApiError::invalid(format!(
                "{url}: an hf:// URL names owner/repo/file"
            )));
        };
        if [owner, repo, file].iter().any(|p| p.is_empty()) {
            return Err(ApiError::invalid(format!(
                "{url}: an hf:// URL names owner/repo/file"
            )));
        }
        let (repo, revision) = repo.split_once('@').unwrap_or((repo, "main"));
        return Ok(format!(
            "https://huggingface.co/{owner}/{repo}/resolve/{revision}/{file}"
        ));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(url.to_string())
    } else {
        Err(ApiError::invalid(format!(
            "{url:?} is not an https://, http:// or hf:// URL"
        )))
    }
}

/// Where the pull of `request` goes in `models_dir`.
pub fn target(models_dir: &Path, request: &PullModelRequest) -> Result<Target, ApiError> {
    let url = resolve_url(&request.url)?;
    let (id, file) = match request.model.as_deref() {
        Some(model) => match model.split_once('/') {
            Some((id, file)) => (safe_name(id)?, safe_name(file)?),
            None => {
                let id = safe_name(model.strip_suffix(".gguf").unwrap_or(model))?;
                (id.clone(), format!("{id}.gguf"))
            }
        },
        None => {
            let path = url.split(['?', '#']).next().unwrap_or(&url);
            let name = path.rsplit('/').next().unwrap_or_default();
            let Some(stem) = name.strip_suffix(".gguf") else {
                return Err(ApiError::invalid(format!(
                    "{url} does not name a .gguf file: say where it goes with `model` \
                     (an id for a GGUF file, or ID/FILE for a file of an ONNX model folder)"
                )));
            };
            let id = safe_name(stem)?;
            (id, name.to_string())
        }
    };
    let path = if file == format!("{id}.gguf") {
        models_dir.join(&file)
    } else {
        models_dir.join(&id).join(&file)
    };
    Ok(Target { url, id, path })
}

/// A file or model name: letters, digits, `.`, `_`, `-`; not starting with a dot.
fn safe_name(name: &str) -> Result<String, ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(name.to_string())
    } else {
        Err(ApiError::invalid(format!(
            "{name:?} is not a usable model or file name (letters, digits, '.', '_', '-'; \
             not starting with '.')"
        )))
    }
}

/// Decides when progress is worth reporting: every 1% of the total, every
/// 250 ms, and at the start and the end.
#[derive(Debug)]
pub struct Throttle {
    last_bytes: Option<u64>,
    last_at: Option<Instant>,
    interval: Duration,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle {
            last_bytes: None,
            last_at: None,
            interval: Duration::from_millis(250),
        }
    }
}

impl Throttle {
    /// Whether to report `bytes` of `total` now.
    pub fn due(&mut self, bytes: u64, total: Option<u64>, now: Instant) -> bool {
        let due = match (self.last_bytes, self.last_at) {
            (Some(last), Some(at)) => {
                let step = total.map_or(u64::MAX, |t| (t / 100).max(1));
                bytes.saturating_sub(last) >= step
                    || now.saturating_duration_since(at) >= self.interval
                    || (total == Some(bytes) && last != bytes)
            }
            _ => true,
        };
        if due {
            self.last_bytes = Some(bytes);
            self.last_at = Some(now);
        }
        due
    }
}

/// What a part file was downloaded from.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PartMeta {
    url: String,
    /// ETag or Last-Modified, for `If-Range`.
    validator: Option<String>,
}

/// Targets being pulled now: a second pull of the same file is refused
/// instead of writing the same part twice.
static ACTIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

struct Active(PathBuf);

impl Active {
    fn claim(path: &Path) -> Result<Active, ApiError> {
        let mut active = lock(&ACTIVE);
        if !active.iter().any(|p| p == path) {
            active.push(path.to_path_buf());
            Ok(Active(path.to_path_buf()))
        } else {
            Err(ApiError::conflict(format!(
                "{} is already being pulled",
                path.display()
            )))
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        lock(&ACTIVE).retain(|p| p != &self.0);
    }
}

/// The 502 of a download that failed on the network or at the server.
fn failed(detail: impl Into<String>) -> ApiError {
    ApiError::new(502, "download-failed", "Download failed", detail)
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> ApiError {
    ApiError::internal(format!("cannot {what} {}: {e}", path.display()))
}

/// Downloads `request` into `models_dir`. `progress` gets throttled reports
/// and returns false to stop (the part is kept for a later resume), as does
/// setting `cancel`.
pub fn pull(
    models_dir: &Path,
    request: &PullModelRequest,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(PullProgress) -> bool,
) -> Result<PullComplete, ApiError> {
    let target = target(models_dir, request)?;
    let expected = match request.sha256.as_deref() {
        Some(hex) if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
            Some(hex.to_ascii_lowercase())
        }
        Some(hex) => {
            return Err(ApiError::invalid(format!(
                "sha256 {hex:?} is not 64 hex digits"
            )));
        }
        None => None,
    };
    let dir = target.path.parent().unwrap_or(models_dir).to_path_buf();
    fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
    let _active = Active::claim(&target.path)?;
    // Already there with the right digest: nothing to fetch.
    if let Some(want) = &expected
        && let Ok((digest, size)) = hash_file(&target.path)
        && &digest == want
    {
        return Ok(PullComplete {
            model: target.id,
            size_bytes: size,
            sha256: digest,
        });
    }
    let (size, digest) = download(&target, cancel, progress)?;
    let part = target.part();
    let discard = |detail: String| {
        let _ = fs::remove_file(&part);
        let _ = fs::remove_file(target.meta());
        ApiError::invalid(detail)
    };
    if let Some(want) = &expected
        && &digest != want
    {
        return Err(discard(format!(
            "sha256 mismatch for {}: expected {want}, got {digest}; the download was discarded",
            target.url
        )));
    }
    if target.path.extension().is_some_and(|e| e == "gguf") && !starts_with(&part, b"GGUF") {
        return Err(discard(format!(
            "{} is not a GGUF file (no GGUF magic); the download was discarded",
            target.url
        )));
    }
    fs::rename(&part, &target.path).map_err(|e| io_error("place", &target.path, e))?;
    if let Err(e) = File::open(&dir).and_then(|d| d.sync_all()) {
        log::warn!("cannot fsync {}: {e}", dir.display());
    }
    let _ = fs::remove_file(target.meta());
    log::info!(
        "pulled {} into {} ({size} bytes, sha256 {digest})",
        target.url,
        target.path.display()
    );
    Ok(PullComplete {
        model: target.id,
        size_bytes: size,
        sha256: digest,
    })
}

/// Fetches the whole file into the part (resuming it when it can); the
/// part's size and sha256 when complete.
fn download(
    target: &Target,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(PullProgress) -> bool,
) -> Result<(u64, String), ApiError> {
    let part = target.part();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("tabagent/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    // A part from another URL is not ours to continue.
    let meta: PartMeta = fs::read(target.meta())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut have = match fs::metadata(&part) {
        Ok(m) if meta.url == target.url => m.len(),
        _ => 0,
    };
    for _attempt in 0..2 {
        let mut call = agent.get(&target.url).header("Accept-Encoding", "identity");
        if have > 0 {
            call = call.header("Range", &format!("bytes={have}-"));
            if let Some(validator) = &meta.validator {
                call = call.header("If-Range", validator);
            }
        }
        let response = call
            .call()
            .map_err(|e| failed(format!("cannot download {}: {e}", target.url)))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let length = header("content-length").and_then(|v| v.parse::<u64>().ok());
        let content_range = header("content-range");
        let validator = header("etag").or_else(|| header("last-modified"));
        let (start, total) = match status {
            206 => match content_range.as_deref().and_then(parse_content_range) {
                Some((start, total)) if start == have => {
                    (start, total.or(length.map(|l| start + l)))
                }
                _ => {
                    log::warn!("{}: unexpected Content-Range; starting over", target.url);
                    have = 0;
                    continue;
                }
            },
            200 => (0, length),
            416 if have > 0 => {
                // The part may already hold the whole file.
                let total = content_range
                    .as_deref()
                    .and_then(|v| v.strip_prefix("bytes */"))
                    .and_then(|v| v.parse::<u64>().ok());
                if total == Some(have) {
                    return finish(&part, have, None);
                }
                have = 0;
                continue;
            }
            404 => {
                return Err(ApiError::not_found(format!(
                    "{} answered 404: no such file",
                    target.url
                )));
            }
            other => {
                return Err(failed(format!("{} answered HTTP {other}", target.url)));
            }
        };
        let resumed = start > 0;
        if resumed {
            log::info!("resuming {} at byte {start}", target.url);
        }
        let meta = PartMeta {
            url: target.url.clone(),
            validator,
        };
        // The part is ours from here: record where it comes from first.
        fs::write(target.meta(), serde_json::to_vec(&meta).unwrap_or_default())
            .map_err(|e| io_error("write", &target.meta(), e))?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(resumed)
            .write(true)
            .truncate(!resumed)
            .open(&part)
            .map_err(|e| io_error("write", &part, e))?;
        let mut hasher = Sha256::new();
        if resumed {
            hash_into(&part, start, &mut hasher).map_err(|e| io_error("read", &part, e))?;
        }
        let mut done = start;
        let mut throttle = Throttle::default();
        let mut report = |done: u64, force: bool, throttle: &mut Throttle| {
            if throttle.due(done, total, Instant::now()) || force {
                progress(PullProgress {
                    model: target.id.clone(),
                    downloaded_bytes: done,
                    total_bytes: total,
                })
            } else {
                true
            }
        };
        if !report(done, true, &mut throttle) {
            return Err(stopped());
        }
        let mut reader = response.into_body().into_reader();
        let mut buffer = vec![0u8; READ_SIZE];
        loop {
            if cancel.load(Ordering::Relaxed) {
                let _ = file.sync_all();
                return Err(stopped());
            }
            let n = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = file.sync_all();
                    return Err(broke_off(target, done, total, &e.to_string()));
                }
            };
            file.write_all(&buffer[..n])
                .map_err(|e| io_error("write", &part, e))?;
            hasher.update(&buffer[..n]);
            done += n as u64;
            if !report(done, false, &mut throttle) {
                let _ = file.sync_all();
                return Err(stopped());
            }
        }
        file.sync_all().map_err(|e| io_error("fsync", &part, e))?;
        if total.is_some_and(|t| t != done) {
            return Err(broke_off(
                target,
                done,
                total,
                "the connection closed early",
            ));
        }
        return finish(&part, done, Some(hasher)).map(|(size, digest)| {
            let _ = report(size, true, &mut throttle);
            (size, digest)
        });
    }
    Err(failed(format!(
        "{} does not honour byte ranges consistently; delete {} and pull again",
        target.url,
        part.display()
    )))
}

/// The size and sha256 of a finished part (hashing it now when no hasher ran).
fn finish(part: &Path, size: u64, hasher: Option<Sha256>) -> Result<(u64, String), ApiError> {
    match hasher {
        Some(hasher) => Ok((size, hex(&hasher.finalize()))),
        None => hash_file(part)
            .map(|(digest, size)| (size, digest))
            .map_err(|e| io_error("read", part, e)),
    }
}

fn stopped() -> ApiError {
    ApiError::new(
        409,
        "cancelled",
        "Cancelled",
        "the pull was stopped; pull again to resume it",
    )
}

fn broke_off(target: &Target, done: u64, total: Option<u64>, why: &str) -> ApiError {
    let of = total.map_or(String::new(), |t| format!(" of {t}"));
    failed(format!(
        "the download of {} broke off after {done}{of} bytes ({why}); pull again to resume it",
        target.url
    ))
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

fn starts_with(path: &Path, magic: &[u8]) -> bool {
    let mut head = vec![0u8; magic.len()];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head == magic
}

/// Feeds the first `len` bytes of `path` to `hasher`.
fn hash_into(path: &Path, len: u64, hasher: &mut Sha256) -> std::io::Result<()> {
    let mut file = File::open(path)?.take(len);
    let mut buffer = vec![0u8; READ_SIZE];
    loop {
        match file.read(&mut buffer)? {
            0 => return Ok(()),
            n => hasher.update(&buffer[..n]),
        }
    }
}

/// sha256 (hex) and size of a file.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let size = fs::metadata(path)?.len();
    let mut hasher = Sha256::new();
    hash_into(path, size, &mut hasher)?;
    Ok((hex(&hasher.finalize()), size))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The CLI's progress display: a bar redrawn in place on a terminal, a line
/// per 10% otherwise (logs, pipes).
#[derive(Debug)]
pub struct ProgressBar {
    terminal: bool,
    started: Option<(Instant, u64)>,
    last_tenth: Option<u64>,
}

impl ProgressBar {
    /// A bar for a terminal or for plain lines.
    pub fn new(terminal: bool) -> ProgressBar {
        ProgressBar {
            terminal,
            started: None,
            last_tenth: None,
        }
    }

    /// What to write for `progress` at `now` (empty when nothing is due).
    pub fn draw(&mut self, progress: &PullProgress, now: Instant) -> String {
        let done = progress.downloaded_bytes;
        let (t0, b0) = *self.started.get_or_insert((now, done));
        let seconds = now.saturating_duration_since(t0).as_secs_f64();
        let rate = if seconds > 0.2 {
            format!("  {:.1} MB/s", (done - b0.min(done)) as f64 / seconds / 1e6)
        } else {
            String::new()
        };
        let mb = |b: u64| b as f64 / 1e6;
        let Some(total) = progress.total_bytes.filter(|t| *t > 0) else {
            let line = format!("{}: {:.1} MB{rate}", progress.model, mb(done));
            return if self.terminal {
                format!("\r{line}\x1b[K")
            } else {
                String::new()
            };
        };
        let percent = (done.min(total) * 100 / total) as usize;
        if self.terminal {
            let filled = percent * 30 / 100;
            format!(
                "\r{} [{}{}] {percent:>3}%  {:.1}/{:.1} MB{rate}\x1b[K",
                progress.model,
                "#".repeat(filled),
                ".".repeat(30 - filled),
                mb(done),
                mb(total)
            )
        } else {
            let tenth = percent as u64 / 10;
            if self.last_tenth == Some(tenth) {
                return String::new();
            }
            self.last_tenth = Some(tenth);
            format!(
                "{}: {percent:>3}%  {:.1}/{:.1} MB{rate}\n",
                progress.model,
                mb(done),
                mb(total)
            )
        }
    }

    /// Ends the bar's line.
    pub fn finish(&self) -> &'static str {
        if self.terminal { "\n" } else { "" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(url: &str, model: Option<&str>) -> PullModelRequest {
        PullModelRequest {
            url: url.into(),
            model: model.map(String::from),
            sha256: None,
        }
    }

    #[test]
    fn hf_urls_expand() {
        assert_eq!(
            resolve_url("hf://ggml-org/models/tiny/x.gguf").unwrap(),
            "https://huggingface.co/ggml-org/models/resolve/main/tiny/x.gguf"
        );
        assert_eq!(
            resolve_url("hf://o/r@v2/f.gguf").unwrap(),
            "https://huggingface.co/o/r/resolve/v2/f.gguf"
        );
        assert!(resolve_url("hf://o/r").is_err());
        assert!(resolve_url("file:///etc/passwd").is_err());
        assert!(resolve_url("ftp://x/y").is_err());
    }

    #[test]
    fn targets_follow_the_model_field() {
        let dir = Path::new("/m");
        let t = target(dir, &request("http://h/a/b.gguf?download=1", None)).unwrap();
        assert_eq!(
            (t.id.as_str(), t.path.as_path()),
            ("b", Path::new("/m/b.gguf"))
        );
        assert_eq!(t.part(), Path::new("/m/.b.gguf.part"));
        let t = target(dir, &request("http://h/x.bin", Some("chat.gguf"))).unwrap();
        assert_eq!(t.path, Path::new("/m/chat.gguf"));
        let t = target(
            dir,
            &request("hf://o/r/onnx/model.onnx", Some("mini/model.onnx")),
        )
        .unwrap();
        assert_eq!(
            (t.id.as_str(), t.path.as_path()),
            ("mini", Path::new("/m/mini/model.onnx"))
        );
        assert_eq!(t.part(), Path::new("/m/mini/.model.onnx.part"));
        for bad in ["../x", ".hidden", "a/b/c", "a/", "x y"] {
            assert!(
                target(dir, &request("http://h/f.gguf", Some(bad))).is_err(),
                "{bad}"
            );
        }
        assert!(target(dir, &request("http://h/model.onnx", None)).is_err());
    }

    #[test]
    fn throttle_reports_each_percent_or_quarter_second() {
        let mut throttle = Throttle::default();
        let t0 = Instant::now();
        assert!(throttle.due(0, Some(1000), t0));
        assert!(!throttle.due(5, Some(1000), t0));
        assert!(throttle.due(10, Some(1000), t0));
        assert!(!throttle.due(11, Some(1000), t0 + Duration::from_millis(100)));
        assert!(throttle.due(12, Some(1000), t0 + Duration::from_millis(300)));
        assert!(throttle.due(1000, Some(1000), t0 + Duration::from_millis(300)));
        assert!(!throttle.due(1000, Some(1000), t0 + Duration::from_millis(300)));
        let mut unknown = Throttle::default();
        assert!(unknown.due(0, None, t0));
        assert!(!unknown.due(1 << 30, None, t0 + Duration::from_millis(10)));
    }

    #[test]
    fn the_bar_draws_in_place_or_by_tenths() {
        let at = |downloaded_bytes| PullProgress {
            model: "m".into(),
            downloaded_bytes,
            total_bytes: Some(1000),
        };
        let t0 = Instant::now();
        let mut bar = ProgressBar::new(true);
        let line = bar.draw(&at(500), t0);
        assert!(
            line.starts_with("\rm [###############...............]  50%"),
            "{line:?}"
        );
        let mut plain = ProgressBar::new(false);
        assert!(plain.draw(&at(0), t0).contains("  0%"));
        assert_eq!(plain.draw(&at(50), t0), "");
        let last = plain.draw(&at(1000), t0 + Duration::from_secs(1));
        assert!(last.contains("100%") && last.contains("MB/s"), "{last:?}");
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
