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
//!
//! A pull must name the sha256 it expects, unless the file is one the
//! catalog lists (its digest is used) or the request says `allow_unverified`.
//! Its size is capped by the declared size, `max_pull_bytes` and the free
//! disk (minus [`DISK_MARGIN`]); a stream past the cap is stopped and its
//! part deleted. The network side (https only, checked addresses, redirects,
//! deadlines) is [`crate::fetch`].

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{PullComplete, PullModelRequest, PullProgress};
use crate::error::ApiError;
use crate::fetch::{self, PullPolicy, failed};
use crate::jobs::lock;

mod progress;
mod target;
pub use progress::{ProgressBar, Throttle};
pub use target::{Target, resolve_url, target};

/// Bytes read per system call.
const READ_SIZE: usize = 256 * 1024;

/// Free disk a pull leaves untouched.
pub const DISK_MARGIN: u64 = 256 << 20;

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

fn io_error(what: &str, path: &Path, e: std::io::Error) -> ApiError {
    ApiError::internal(format!("cannot {what} {}: {e}", path.display()))
}

/// Downloads `request` into `models_dir`. `progress` gets throttled reports
/// and returns false to stop (the part is kept for a later resume), as does
/// setting `cancel`.
pub fn pull(
    models_dir: &Path,
    request: &PullModelRequest,
    policy: &PullPolicy,
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
        None => match catalog_sha256(models_dir, &target) {
            Some(hex) => Some(hex),
            None if request.allow_unverified => None,
            None => {
                return Err(ApiError::invalid(format!(
                    "{}: say which sha256 to expect (`sha256`), or pull it unchecked with \
                     `allow_unverified: true` (CLI: --allow-unverified); only catalog models \
                     (GetRegisteredModels) are checked without one",
                    target.url
                )));
            }
        },
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
    let (size, digest) = download(&target, policy, cancel, progress)?;
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
    policy: &PullPolicy,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(PullProgress) -> bool,
) -> Result<(u64, String), ApiError> {
    let started = Instant::now();
    let part = target.part();
    let dir = part.parent().unwrap_or(Path::new("."));
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
        let mut headers = vec![("Accept-Encoding", "identity".to_string())];
        if have > 0 {
            headers.push(("Range", format!("bytes={have}-")));
            if let Some(validator) = &meta.validator {
                headers.push(("If-Range", validator.clone()));
            }
        }
        let response = fetch::get(policy, &target.url, &headers, started)?;
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
        // The part's bytes are already on the disk: they count as free here.
        let cap = size_cap(policy, dir, have);
        if let Some(total) = total.filter(|t| *t > cap.0) {
            discard_part(target);
            return Err(too_large(target, total, cap));
        }
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
            if done + n as u64 > cap.0 {
                drop(file);
                discard_part(target);
                return Err(too_large(target, done + n as u64, cap));
            }
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

/// The digest the catalog lists for the file `target` places, if any.
fn catalog_sha256(models_dir: &Path, target: &Target) -> Option<String> {
    let relative = target.path.strip_prefix(models_dir).ok()?.to_str()?;
    crate::catalog::registered_models(models_dir)
        .into_iter()
        .flat_map(|m| m.files)
        .find(|f| f.path == relative)
        .map(|f| f.sha256)
}

/// The most bytes a file may have, and which bound set it: `max_pull_bytes`
/// or the free disk (plus `have` bytes already in the part) less the margin.
fn size_cap(policy: &PullPolicy, dir: &Path, have: u64) -> (u64, &'static str) {
    let disk = rustix::fs::statvfs(dir)
        .ok()
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .map(|free| (free + have).saturating_sub(DISK_MARGIN));
    match disk {
        Some(disk) if disk < policy.max_bytes => (disk, "the free disk space"),
        _ => (policy.max_bytes, "max_pull_bytes"),
    }
}

fn too_large(target: &Target, size: u64, (cap, bound): (u64, &str)) -> ApiError {
    ApiError::too_large(format!(
        "{} is larger than {bound} allows ({size} > {cap} bytes); nothing was kept",
        target.url
    ))
}

/// Deletes a pull's part and its record.
fn discard_part(target: &Target) {
    let _ = fs::remove_file(target.part());
    let _ = fs::remove_file(target.meta());
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

#[cfg(test)]
mod tests {
    use super::*;

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
