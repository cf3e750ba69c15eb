//! Test helpers: a fake embedder (unit tests only — the product never makes
//! up vectors) and temporary data dirs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::engine::Embedder;
use crate::error::ApiError;

/// Hashes each lowercase word into one of `dimensions` buckets: texts that
/// share words get similar vectors, which is enough to test ranking.
pub(crate) struct FakeEmbedder {
    pub dimensions: usize,
    pub model: String,
    pub calls: AtomicUsize,
}

impl FakeEmbedder {
    pub(crate) fn new(dimensions: usize) -> FakeEmbedder {
        FakeEmbedder {
            dimensions,
            model: "fake-bag-of-words".into(),
            calls: AtomicUsize::new(0),
        }
    }

    pub(crate) fn vector(&self, text: &str) -> Vec<f32> {
        let mut vector = vec![0f32; self.dimensions];
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in word.to_lowercase().bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
            vector[(hash % self.dimensions as u64) as usize] += 1.0;
        }
        super::vectors::normalise(&mut vector);
        vector
    }
}

impl Embedder for FakeEmbedder {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ApiError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn model_id(&self) -> &str {
        &self.model
    }
}

/// A directory removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tabagent-store-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
