//! The models dir: which files are models, and what kind.
//!
//! `X.gguf` is a GGUF chat model with id `X`. A folder `Y/` holding
//! `model.onnx` (or `onnx/model.onnx`) and `tokenizer.json` is an ONNX model
//! with id `Y`; its kind comes from `tabagent.json` beside it
//! (`{"kind": "embedding" | "rerank"}`), else embedding.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::api::{ModelEntry, ModelFormat, ModelKind};

/// A model found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFile {
    /// Its id.
    pub id: String,
    /// Its format.
    pub format: ModelFormat,
    /// What it is for.
    pub kind: ModelKind,
    /// The `.gguf` file or the ONNX model's folder.
    pub path: PathBuf,
    /// Bytes on disk (all files of an ONNX folder).
    pub size_bytes: u64,
}

impl ModelFile {
    /// The model as ListModels shows it.
    pub fn entry(&self, loaded: bool) -> ModelEntry {
        ModelEntry {
            id: self.id.clone(),
            format: self.format,
            kind: self.kind,
            size_bytes: self.size_bytes,
            loaded,
            upstream: None,
        }
    }
}

/// What `tabagent.json` beside an ONNX model may declare.
#[derive(Debug, Default, Deserialize)]
pub struct OnnxManifest {
    /// Embedding or rerank.
    pub kind: Option<ModelKind>,
}

/// Every model in `dir`, sorted by id; unreadable entries are skipped with a
/// warning, a missing dir is simply empty.
pub fn scan_models(dir: &Path) -> Vec<ModelFile> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            log::warn!("cannot read the models dir {}: {e}", dir.display());
            return Vec::new();
        }
    };
    let mut models: Vec<ModelFile> = entries
        .flatten()
        .filter_map(|entry| model_at(&entry.path()))
        .collect();
    models.sort_by(|a, b| a.id.cmp(&b.id));
    models
}

/// The model at `path`, if it is one.
pub fn model_at(path: &Path) -> Option<ModelFile> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with('.') {
        return None; // temp files of downloads in progress
    }
    let metadata = std::fs::metadata(path).ok()?;
    if metadata.is_file() {
        let id = name.strip_suffix(".gguf")?;
        return Some(ModelFile {
            id: id.to_string(),
            format: ModelFormat::Gguf,
            kind: ModelKind::Chat,
            path: path.to_path_buf(),
            size_bytes: metadata.len(),
        });
    }
    let onnx = onnx_graph(path)?;
    if !path.join("tokenizer.json").is_file() {
        return None;
    }
    let manifest: OnnxManifest = std::fs::read(path.join("tabagent.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let size_bytes = [onnx, path.join("tokenizer.json")]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    Some(ModelFile {
        id: name.to_string(),
        format: ModelFormat::Onnx,
        kind: manifest.kind.unwrap_or(ModelKind::Embedding),
        path: path.to_path_buf(),
        size_bytes,
    })
}

/// `model.onnx` or `onnx/model.onnx` inside an ONNX model's folder.
pub fn onnx_graph(folder: &Path) -> Option<PathBuf> {
    ["model.onnx", "onnx/model.onnx"]
        .iter()
        .map(|p| folder.join(p))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_gguf_files_and_onnx_folders() {
        let dir = std::env::temp_dir().join(format!("tabagent-models-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("mini/onnx")).unwrap();
        std::fs::create_dir_all(dir.join("incomplete")).unwrap();
        std::fs::write(dir.join("chat.gguf"), [0u8; 10]).unwrap();
        std::fs::write(dir.join(".pull.gguf.part"), [0u8; 3]).unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        std::fs::write(dir.join("mini/onnx/model.onnx"), [0u8; 5]).unwrap();
        std::fs::write(dir.join("mini/tokenizer.json"), [0u8; 2]).unwrap();
        std::fs::write(dir.join("mini/tabagent.json"), br#"{"kind":"rerank"}"#).unwrap();
        std::fs::write(dir.join("incomplete/model.onnx"), [0u8; 5]).unwrap();
        let models = scan_models(&dir);
        let summary: Vec<_> = models
            .iter()
            .map(|m| (m.id.as_str(), m.format, m.kind, m.size_bytes))
            .collect();
        assert_eq!(
            summary,
            [
                ("chat", ModelFormat::Gguf, ModelKind::Chat, 10),
                ("mini", ModelFormat::Onnx, ModelKind::Rerank, 7)
            ]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
