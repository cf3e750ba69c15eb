//! The API key every HTTP client but `/health` must send.
//!
//! The key comes from `api_key`, else from `api_key_file`, else from
//! `<data_dir>/token`, which the first start makes: 32 random bytes,
//! base64url without padding, mode 0600, created all or nothing (so a native
//! host and a server starting at once agree on one key). A key read from a
//! file is re-read when the file changes (`tabagent token --rotate`), checked
//! at most once a second, so a running server and host follow a rotation.
//! Keys are compared in constant time: both sides are hashed to 32 bytes
//! first, so neither the content nor the length of the key leaks through
//! timing.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::error::ApiError;
use crate::fsutil::{create_private, write_private};
use crate::jobs::lock;

/// How often a key file is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// The file the key lives in when no setting names one.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("token")
}

/// A key, with its SHA-256 (taken once: a request's check hashes only
/// what it sent); `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    text: String,
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<secret>)")
    }
}

impl ApiKey {
    fn new(text: String) -> ApiKey {
        let digest = Sha256::digest(text.as_bytes()).into();
        ApiKey { text, digest }
    }

    /// The key as clients send it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `given` is this key, in constant time.
    pub fn matches(&self, given: &[u8]) -> bool {
        bool::from(Sha256::digest(given).as_slice().ct_eq(&self.digest))
    }

    /// A new random key.
    pub fn generate() -> Result<ApiKey, String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| format!("no random bytes for a key: {e}"))?;
        Ok(ApiKey::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        ))
    }
}

/// Where the key comes from, and the key last read from there.
#[derive(Debug)]
pub enum KeySource {
    /// The `api_key` setting.
    Fixed(ApiKey),
    /// A file (`api_key_file` or `<data_dir>/token`), followed as it changes.
    File {
        /// The file.
        path: PathBuf,
        /// The key read last, the file's mtime then, and when it was checked.
        cached: Mutex<(ApiKey, Option<SystemTime>, Instant)>,
    },
}

impl KeySource {
    /// The configured source; makes `<data_dir>/token` when it is the one
    /// and does not exist yet.
    pub fn from_config(config: &Config) -> Result<KeySource, String> {
        if !config.api_key.0.is_empty() {
            return Ok(KeySource::Fixed(ApiKey::new(config.api_key.0.clone())));
        }
        let path = if config.api_key_file.as_os_str().is_empty() {
            let path = token_path(&config.data_dir);
            create_token(&path)?;
            path
        } else {
            config.api_key_file.clone()
        };
        let (key, mtime) = read_key(&path)?;
        Ok(KeySource::File {
            path,
            cached: Mutex::new((key, mtime, Instant::now())),
        })
    }

    /// Whether `given` is the current key, in constant time.
    pub fn matches(&self, now: Instant, given: &[u8]) -> bool {
        match self {
            KeySource::Fixed(key) => key.matches(given),
            KeySource::File { .. } => self.current(now).matches(given),
        }
    }

    /// The key now: a changed file is read again (a file that became
    /// unreadable or empty keeps the last key, with a warning).
    pub fn current(&self, now: Instant) -> ApiKey {
        match self {
            KeySource::Fixed(key) => key.clone(),
            KeySource::File { path, cached } => {
                let mut cached = lock(cached);
                if now.saturating_duration_since(cached.2) >= RECHECK {
                    cached.2 = now;
                    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                    if mtime != cached.1 {
                        match read_key(path) {
                            Ok((key, mtime)) => {
                                if key != cached.0 {
                                    log::info!("the API key in {} changed", path.display());
                                }
                                (cached.0, cached.1) = (key, mtime);
                            }
                            Err(e) => log::warn!("{e}; the previous key stays in use"),
                        }
                    }
                }
                cached.0.clone()
            }
        }
    }
}

/// Makes the token file unless it exists.
fn create_token(path: &Path) -> Result<(), String> {
    if path.exists() {
        return Ok(());
    }
    let key = ApiKey::generate()?;
    match create_private(path, key.text.as_bytes()) {
        Ok(true) => {
            log::info!("made a new API key in {}", path.display());
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(e) => Err(format!("cannot write the API key {}: {e}", path.display())),
    }
}

fn read_key(path: &Path) -> Result<(ApiKey, Option<SystemTime>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the API key {}: {e}", path.display()))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(format!(
            "the API key file {} is empty (`tabagent token --rotate` writes a new key)",
            path.display()
        ));
    }
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((ApiKey::new(key.to_string()), mtime))
}

/// Why GetApiKey is refused: it is answered over native messaging only.
///
/// Chrome authenticates a native messaging peer (only the extensions in the
/// host manifest can start it), so the native port answers GetApiKey itself
/// and never passes it on. The handler, which does not know (and must not
/// care) which transport a request came on, refuses it for every other
/// transport: failing closed, so a transport added later cannot leak the key
/// by forgetting a check.
pub fn native_only() -> ApiError {
    ApiError::new(
        403,
        "native-only",
        "Native messaging only",
        "GetApiKey is answered over native messaging only; run `tabagent token` to see the key",
    )
}

/// The key `tabagent token` prints: the configured one, made if needed.
pub fn print_key(config: &Config) -> Result<ApiKey, String> {
    Ok(KeySource::from_config(config)?.current(Instant::now()))
}

/// `tabagent token --rotate`: a new key in the token file, replacing the
/// old one all or nothing. A key given by a setting is not ours to change.
pub fn rotate(config: &Config) -> Result<ApiKey, String> {
    if !config.api_key.0.is_empty() {
        return Err("the key comes from the api_key setting: change it there".into());
    }
    let path = if config.api_key_file.as_os_str().is_empty() {
        token_path(&config.data_dir)
    } else {
        config.api_key_file.clone()
    };
    let key = ApiKey::generate()?;
    write_private(&path, key.text.as_bytes())
        .map_err(|e| format!("cannot write the API key {}: {e}", path.display()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_base64url_and_compared_whole() {
        let (a, b) = (ApiKey::generate().unwrap(), ApiKey::generate().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 43, "32 bytes, unpadded");
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert!(a.matches(a.as_str().as_bytes()));
        assert!(!a.matches(b.as_str().as_bytes()));
        assert!(!a.matches(&a.as_str().as_bytes()[..42]));
        assert!(!a.matches(b""));
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn a_file_key_follows_rotation() {
        let dir = std::env::temp_dir().join(format!("tabagent-auth-{}", std::process::id()));
        let path = token_path(&dir);
        create_token(&path).unwrap();
        let first = read_key(&path).unwrap().0;
        create_token(&path).unwrap();
        assert_eq!(read_key(&path).unwrap().0, first, "an existing key is kept");
        let (key, mtime) = read_key(&path).unwrap();
        let t0 = Instant::now();
        let source = KeySource::File {
            path: path.clone(),
            cached: Mutex::new((key, mtime, t0)),
        };
        std::thread::sleep(Duration::from_millis(20));
        let second = ApiKey::generate().unwrap();
        write_private(&path, second.as_str().as_bytes()).unwrap();
        assert_eq!(source.current(t0), first, "not looked at within a second");
        assert_eq!(source.current(t0 + RECHECK), second);
        assert!(source.matches(t0 + RECHECK, second.as_str().as_bytes()));
        assert!(!source.matches(t0 + RECHECK, first.as_str().as_bytes()));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
