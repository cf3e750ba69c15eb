//! Uploads in parts: a file announced with its size, then sent as numbered
//! chunks of one fixed size (any order, a chunk sent twice is stored twice
//! to the same place), each written at its offset in a file of its own under
//! `<data_dir>/uploads/`. Native messaging (1 MiB a frame), WebRTC (256 KiB
//! a message in Chrome) and HTTP all carry files this way.
//!
//! The table is in memory: an upload lives until it is finished (handed to
//! its consumer, which owns the file from then on), cancelled, or idle for
//! [`IDLE_TIMEOUT`]; the folder is emptied when the host starts. Writes are
//! disk I/O and run on pool threads, never on the event loop.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::api::UploadStartRequest;
use crate::error::ApiError;
use crate::jobs::lock;

/// The largest file accepted.
pub const MAX_UPLOAD_BYTES: u64 = 50 << 20;
/// Chunk size when the client names none: 512 KiB, 683 KiB as base64, so a
/// chunk with its envelope fits a native messaging frame.
pub const DEFAULT_CHUNK: u64 = 512 << 10;
/// Bounds of a client's chunk size: 4 KiB up to 1 MiB.
pub const CHUNK_RANGE: (u64, u64) = (4 << 10, 1 << 20);
/// Uploads open at once.
pub const MAX_OPEN: usize = 16;
/// An upload that receives nothing this long is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What an upload is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// A document for this collection.
    Document {
        /// The collection.
        collection: String,
    },
    /// A backup file for Restore.
    Restore,
}

/// What an upload announced.
#[derive(Debug, Clone)]
pub struct Announced {
    /// What it is for.
    pub purpose: Purpose,
    /// The file's name.
    pub filename: String,
    /// Its media type, if the client said.
    pub content_type: Option<String>,
    /// Bytes in all.
    pub size: u64,
    /// Bytes per chunk.
    pub chunk_size: u64,
    /// Expected sha256, lowercase hex.
    pub sha256: Option<String>,
}

impl Announced {
    /// Checks an UploadStart request.
    pub fn check(request: UploadStartRequest) -> Result<Announced, ApiError> {
        let purpose = match (request.purpose.as_deref(), request.collection) {
            (None | Some("document"), Some(collection)) => {
                crate::store::check_collection_name(&collection)?;
                Purpose::Document { collection }
            }
            (None | Some("document"), None) => {
                return Err(ApiError::invalid("a document upload needs a `collection`"));
            }
            (Some("restore"), None) => Purpose::Restore,
            (Some("restore"), Some(_)) => {
                return Err(ApiError::invalid("a restore upload takes no `collection`"));
            }
            (Some(other), _) => {
                return Err(ApiError::invalid(format!(
                    "purpose {other:?} is not `document` or `restore`"
                )));
            }
        };
        let filename = request.filename;
        if filename.is_empty() || filename.chars().count() > 255 {
            return Err(ApiError::invalid("filename must be 1 to 255 characters"));
        }
        if request.size == 0 || request.size > MAX_UPLOAD_BYTES {
            return Err(ApiError::out_of_range(
                "size",
                request.size,
                format!("1..={MAX_UPLOAD_BYTES} (50 MiB)"),
            ));
        }
        let chunk_size = request.chunk_size.unwrap_or(DEFAULT_CHUNK);
        if !(CHUNK_RANGE.0..=CHUNK_RANGE.1).contains(&chunk_size) {
            return Err(ApiError::out_of_range(
                "chunk_size",
                chunk_size,
                format!("{}..={}", CHUNK_RANGE.0, CHUNK_RANGE.1),
            ));
        }
        let sha256 = match request.sha256 {
            Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(hex.to_ascii_lowercase())
            }
            Some(_) => return Err(ApiError::invalid("sha256 must be 64 hex digits")),
            None => None,
        };
        Ok(Announced {
            purpose,
            filename,
            content_type: request.content_type,
            size: request.size,
            chunk_size,
            sha256,
        })
    }

    /// How many chunks make the file.
    pub fn chunks(&self) -> u64 {
        self.size.div_ceil(self.chunk_size)
    }

    /// The byte length chunk `index` must have.
    fn chunk_len(&self, index: u64) -> u64 {
        (self.size - index * self.chunk_size).min(self.chunk_size)
    }
}

struct Open {
    announced: Announced,
    path: PathBuf,
    received: Vec<bool>,
    touched: Instant,
}

/// A finished upload: the complete file, now the caller's (deleted on drop).
#[derive(Debug)]
pub struct Finished {
    /// What was announced.
    pub announced: Announced,
    /// The file on disk.
    pub path: PathBuf,
}

impl Finished {
    /// Reads the whole file.
    pub fn read(&self) -> Result<Vec<u8>, ApiError> {
        let mut bytes = Vec::with_capacity(self.announced.size as usize);
        File::open(&self.path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| ApiError::internal(format!("cannot read the upload: {e}")))?;
        Ok(bytes)
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The open uploads.
pub struct Uploads {
    dir: PathBuf,
    open: Mutex<HashMap<String, Open>>,
}

impl Uploads {
    /// The table for `<data_dir>/uploads` (emptied now: uploads do not
    /// survive a restart). No I/O until the first upload but that cleanup.
    pub fn new(data_dir: &Path) -> Uploads {
        let dir = data_dir.join("uploads");
        let _ = std::fs::remove_dir_all(&dir);
        Uploads {
            dir,
            open: Mutex::default(),
        }
    }

    /// Opens an upload: makes its (sparse) file and returns its id.
    pub fn start(&self, announced: Announced, now: Instant) -> Result<String, ApiError> {
        self.expire(now);
        if lock(&self.open).len() >= MAX_OPEN {
            return Err(ApiError::new(
                429,
                "too-many-uploads",
                "Too many uploads",
                format!("{MAX_OPEN} uploads are open; finish or cancel one first"),
            ));
        }
        let mut raw = [0u8; 12];
        getrandom::fill(&mut raw)
            .map_err(|e| ApiError::internal(format!("no randomness for an upload id: {e}")))?;
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| ApiError::internal(format!("cannot make {}: {e}", self.dir.display())))?;
        let path = self.dir.join(format!("{id}.part"));
        let file = File::create(&path)
            .map_err(|e| ApiError::internal(format!("cannot make {}: {e}", path.display())))?;
        file.set_len(announced.size).map_err(|e| {
            let _ = std::fs::remove_file(&path);
            ApiError::new(507, "storage-full", "Insufficient storage", e.to_string())
        })?;
        let chunks = announced.chunks() as usize;
        lock(&self.open).insert(
            id.clone(),
            Open {
                announced,
                path,
                received: vec![false; chunks],
                touched: now,
            },
        );
        Ok(id)
    }

    /// Writes chunk `index`; returns (chunks received, chunks in all).
    pub fn write_chunk(
        &self,
        id: &str,
        index: u64,
        data: &[u8],
        now: Instant,
    ) -> Result<(u64, u64), ApiError> {
        let (path, offset) = {
            let mut open = lock(&self.open);
            let upload = open.get_mut(id).ok_or_else(|| no_upload(id))?;
            let chunks = upload.announced.chunks();
            // 409s: the part does not fit the file the upload announced.
            if index >= chunks {
                return Err(ApiError::conflict(format!(
                    "index {index} is past the upload's last chunk ({})",
                    chunks - 1
                )));
            }
            let want = upload.announced.chunk_len(index);
            if data.len() as u64 != want {
                return Err(ApiError::conflict(format!(
                    "chunk {index} has {} bytes; it must have {want}",
                    data.len()
                )));
            }
            upload.touched = now;
            (upload.path.clone(), index * upload.announced.chunk_size)
        };
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|file| file.write_all_at(data, offset))
            .map_err(|e| ApiError::internal(format!("cannot write the upload: {e}")))?;
        let mut open = lock(&self.open);
        // Cancelled while it was being written: the file is gone with it.
        let upload = open.get_mut(id).ok_or_else(|| no_upload(id))?;
        upload.received[index as usize] = true;
        let received = upload.received.iter().filter(|r| **r).count() as u64;
        Ok((received, upload.received.len() as u64))
    }

    /// What upload `id` announced, if every chunk is in (it stays open):
    /// the cheap check before a job finishes it.
    pub fn check_complete(&self, id: &str) -> Result<Announced, ApiError> {
        let open = lock(&self.open);
        let upload = open.get(id).ok_or_else(|| no_upload(id))?;
        missing(id, &upload.received)?;
        Ok(upload.announced.clone())
    }

    /// Closes a complete upload and hands its file over, after checking
    /// every chunk came (and the sha256, when one was announced). An
    /// incomplete upload stays open; one whose hash does not match is dropped.
    pub fn finish(&self, id: &str) -> Result<Finished, ApiError> {
        let upload = {
            let mut open = lock(&self.open);
            let upload = open.get(id).ok_or_else(|| no_upload(id))?;
            missing(id, &upload.received)?;
            // Present: just looked up under the same lock.
            open.remove(id).expect("upload present")
        };
        let finished = Finished {
            announced: upload.announced,
            path: upload.path,
        };
        if let Some(expected) = &finished.announced.sha256 {
            let digest = hex(&Sha256::digest(finished.read()?));
            if &digest != expected {
                return Err(ApiError::invalid(format!(
                    "the file's sha256 is {digest}, not the {expected} announced; the upload was dropped"
                )));
            }
        }
        Ok(finished)
    }

    /// Drops an upload and its file.
    pub fn cancel(&self, id: &str) -> Result<(), ApiError> {
        let upload = lock(&self.open).remove(id).ok_or_else(|| no_upload(id))?;
        let _ = std::fs::remove_file(upload.path);
        Ok(())
    }

    /// Drops uploads idle for longer than [`IDLE_TIMEOUT`].
    fn expire(&self, now: Instant) {
        let stale: Vec<Open> = {
            let mut open = lock(&self.open);
            let ids: Vec<String> = open
                .iter()
                .filter(|(_, u)| now.saturating_duration_since(u.touched) > IDLE_TIMEOUT)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| open.remove(id)).collect()
        };
        for upload in stale {
            let _ = std::fs::remove_file(upload.path);
        }
    }
}

/// A 409 naming the first chunks not received yet.
fn missing(id: &str, received: &[bool]) -> Result<(), ApiError> {
    let missing: Vec<usize> = (0..received.len())
        .filter(|i| !received[*i])
        .take(5)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ApiError::conflict(format!(
        "upload {id} is missing chunks (first missing: {missing:?})"
    )))
}

fn no_upload(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no open upload {id:?} (finished, cancelled, expired or never started)"
    ))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announce(size: u64, chunk_size: u64, sha256: Option<String>) -> Announced {
        Announced::check(UploadStartRequest {
            purpose: None,
            collection: Some("c".into()),
            filename: "a.txt".into(),
            content_type: None,
            size,
            chunk_size: Some(chunk_size),
            sha256,
        })
        .unwrap()
    }

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tabagent-uploads-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn chunks_in_any_order_make_the_file_and_the_hash_is_checked() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let uploads = Uploads::new(&dir("order"));
        let now = Instant::now();
        let sha = hex(&Sha256::digest(&data));
        let id = uploads
            .start(announce(10_000, 4096, Some(sha)), now)
            .unwrap();
        assert_eq!(
            uploads.write_chunk(&id, 2, &data[8192..], now).unwrap(),
            (1, 3)
        );
        assert!(uploads.finish(&id).unwrap_err().detail.contains("missing"));
        uploads.write_chunk(&id, 0, &data[..4096], now).unwrap();
        // a chunk of the wrong length is refused; the same chunk twice is fine
        assert_eq!(
            uploads
                .write_chunk(&id, 1, &data[..10], now)
                .unwrap_err()
                .status,
            409
        );
        uploads.write_chunk(&id, 1, &data[4096..8192], now).unwrap();
        uploads.write_chunk(&id, 1, &data[4096..8192], now).unwrap();
        assert_eq!(
            uploads
                .write_chunk(&id, 3, &data[..1], now)
                .unwrap_err()
                .status,
            409
        );
        let finished = uploads.finish(&id).unwrap();
        assert_eq!(finished.read().unwrap(), data);
        let path = finished.path.clone();
        drop(finished);
        assert!(!path.exists(), "the file goes with its owner");
        assert_eq!(uploads.finish(&id).unwrap_err().status, 404);
    }

    #[test]
    fn a_wrong_hash_drops_the_upload_and_bad_announcements_are_refused() {
        let uploads = Uploads::new(&dir("hash"));
        let now = Instant::now();
        let id = uploads
            .start(announce(5000, 4096, Some("0".repeat(64))), now)
            .unwrap();
        uploads.write_chunk(&id, 0, &[1; 4096], now).unwrap();
        uploads.write_chunk(&id, 1, &[1; 904], now).unwrap();
        assert!(uploads.finish(&id).unwrap_err().detail.contains("sha256"));
        assert_eq!(uploads.finish(&id).unwrap_err().status, 404);

        let big = UploadStartRequest {
            purpose: None,
            collection: Some("c".into()),
            filename: "a".into(),
            content_type: None,
            size: MAX_UPLOAD_BYTES + 1,
            chunk_size: None,
            sha256: None,
        };
        assert_eq!(Announced::check(big.clone()).unwrap_err().status, 422);
        let no_collection = UploadStartRequest {
            collection: None,
            size: 1,
            ..big.clone()
        };
        assert_eq!(Announced::check(no_collection).unwrap_err().status, 422);
        let restore = UploadStartRequest {
            purpose: Some("restore".into()),
            collection: None,
            size: 1,
            ..big
        };
        assert_eq!(Announced::check(restore).unwrap().purpose, Purpose::Restore);
    }

    #[test]
    fn idle_uploads_expire_and_cancel_removes_the_file() {
        let uploads = Uploads::new(&dir("idle"));
        let now = Instant::now();
        let id = uploads.start(announce(10, 4096, None), now).unwrap();
        let later = now + IDLE_TIMEOUT + Duration::from_secs(1);
        let other = uploads.start(announce(10, 4096, None), later).unwrap();
        assert_eq!(uploads.cancel(&id).unwrap_err().status, 404);
        uploads.cancel(&other).unwrap();
        assert_eq!(uploads.cancel(&other).unwrap_err().status, 404);
    }
}
